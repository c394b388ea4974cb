/*
 * warrenctl.c: warrenctl's command line, and its socket commands (status,
 * pause, resume, metrics, scale, restart): one request line to the
 * master's control socket, one JSON answer read to EOF. failed and replay
 * are replay.c's.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl/ctl.h"

#define EX_UNAVAILABLE_STATUS 69 /* sysexits.h: warrend is not running */
#define DEFAULT_SOCKET "/run/warren/warrend.sock"
#define DEFAULT_CONF SYSCONFDIR "/warren/warrend.conf"
#define ANSWER_MAX (64 << 20) /* bytes of an answer at most */
#define ANSWER_TIMEOUT_MS 10000
#define REQUEST_MAX 4096 /* the master's limit, newline included */
#define ID_WIDTH 40	 /* a message id longer than this is cut */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: warrenctl [-s SOCKET | -c FILE] status [--json]\n"
		"       warrenctl [-s SOCKET | -c FILE] pause QUEUE\n"
		"       warrenctl [-s SOCKET | -c FILE] resume QUEUE\n"
		"       warrenctl [-s SOCKET | -c FILE] metrics\n"
		"       warrenctl [-s SOCKET | -c FILE] scale QUEUE N\n"
		"       warrenctl [-s SOCKET | -c FILE] restart QUEUE\n"
		"       warrenctl [-c FILE] failed QUEUE [--limit N] [--json]\n"
		"       warrenctl [-c FILE] replay QUEUE [--limit N] "
		"[--reason TEXT]\n"
		"       warrenctl -h\n");
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Say what is wrong with the command line; the usage status. */
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "warrenctl: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage(stderr);
	return EX_USAGE_STATUS;
}

/* ------------------------------------------------------------------ */
/* the control socket */

/* ms left until deadline, at least 0 */
static int left_ms(int64_t deadline)
{
	int64_t left = deadline - now_ms();

	return left > 0 ? (int)left : 0;
}

/*
 * Connect to path. The fd, or -1 with *status the exit status (69 when
 * nothing answers there) and the reason said.
 */
static int ctl_connect(const char *path, int *status)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	*status = 1;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "warrenctl: %s: socket path too long\n", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		fprintf(stderr, "warrenctl: socket: %s\n", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	switch (errno) {
	case ENOENT:
	case ECONNREFUSED:
		fprintf(stderr,
			"warrenctl: warrend is not running (no socket at %s)\n",
			path);
		*status = EX_UNAVAILABLE_STATUS;
		break;
	case EACCES:
	case EPERM:
		fprintf(stderr,
			"warrenctl: %s: permission denied (only root and "
			"warrend's user may use it)\n",
			path);
		break;
	default:
		fprintf(stderr, "warrenctl: connect %s: %s\n", path,
			strerror(errno));
	}
	close(fd);
	return -1;
}

/* Send all of buf by deadline. 0, or -1 said. */
static int send_all(int fd, const char *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		struct pollfd p = {fd, POLLOUT, 0};
		ssize_t n;

		if (poll(&p, 1, left_ms(deadline)) == 0) {
			fprintf(stderr, "warrenctl: warrend did not take the "
					"request within 10 s\n");
			return -1;
		}
		n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		/* warrend answered and closed before taking it all (too
		 * many clients, not allowed): its answer says why */
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			return 1;
		if (n < 0) {
			fprintf(stderr, "warrenctl: send: %s\n",
				strerror(errno));
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The answer until EOF, NUL-terminated, by deadline; NULL said. */
static char *read_answer(int fd, int64_t deadline, size_t *lenp)
{
	size_t len = 0, cap = 65536;
	char *buf = xcalloc(cap, 1);

	for (;;) {
		struct pollfd p = {fd, POLLIN, 0};
		ssize_t n;

		if (poll(&p, 1, left_ms(deadline)) == 0) {
			fprintf(stderr, "warrenctl: warrend did not answer "
					"within 10 s\n");
			break;
		}
		if (len == ANSWER_MAX) {
			fprintf(stderr,
				"warrenctl: the answer is over %d MiB: "
				"refused\n",
				ANSWER_MAX >> 20);
			break;
		}
		if (len + 1 == cap) {
			cap =
			    cap * 2 > ANSWER_MAX + 1 ? ANSWER_MAX + 1 : cap * 2;
			buf = realloc(buf, cap);
			if (buf == NULL)
				fatal("realloc");
		}
		n = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		/* a reset after a whole answer: warrend closed with our
		 * request (or more of it) unread */
		if (n < 0 && errno == ECONNRESET && len > 0 &&
		    buf[len - 1] == '\n')
			n = 0;
		if (n < 0) {
			fprintf(stderr, "warrenctl: receive: %s\n",
				strerror(errno));
			break;
		}
		if (n == 0) {
			buf[len] = '\0';
			*lenp = len;
			return buf;
		}
		len += (size_t)n;
	}
	free(buf);
	return NULL;
}

/*
 * Send request (one line, without its newline) to the master at path;
 * return the parsed answer, whose text is in *text (caller frees both),
 * or NULL with *status the exit status, the reason said. An answer with
 * "ok": false is said and refused (status 1).
 */
static struct json *ask(const char *path, const char *request, char **text,
			int *status)
{
	int64_t deadline = now_ms() + ANSWER_TIMEOUT_MS;
	char line[REQUEST_MAX + 1];
	struct json *j;
	size_t len = 0;
	int fd;

	*text = NULL;
	fd = ctl_connect(path, status);
	if (fd == -1)
		return NULL;
	*status = 1;
	snprintf(line, sizeof(line), "%s\n", request);
	if (send_all(fd, line, strlen(line), deadline) < 0) {
		close(fd);
		return NULL;
	}
	*text = read_answer(fd, deadline, &len);
	close(fd);
	if (*text == NULL)
		return NULL;
	j = memchr(*text, '\0', len) == NULL ? json_parse(*text) : NULL;
	if (j == NULL || json_get(j, "ok") == NULL) {
		fprintf(stderr,
			"warrenctl: %s: the answer is not warrend's "
			"JSON\n",
			path);
	} else if (!json_true(json_get(j, "ok"))) {
		const char *e = json_str(json_get(j, "error"));

		fprintf(stderr, "warrenctl: %s\n", e ? e : "failed");
	} else {
		*status = 0;
		return j;
	}
	json_free(j);
	free(*text);
	*text = NULL;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* status */

/* A string field for the table: sanitized, "-" when absent. */
static char *cell(const struct json *v, size_t max)
{
	const char *s = json_str(v);

	return ctl_printable(s != NULL ? s : "-", s != NULL ? strlen(s) : 1,
			     max);
}

struct row {
	char *c[10];
};

static const char *const columns[10] = {
    "QUEUE", "WORKER",	"PID",	   "STATE",  "MESSAGE",
    "BUSY",  "HANDLED", "RETRIED", "FAILED", "NODE",
};

static void worker_row(const struct json *w, struct row *r)
{
	const struct json *busy = json_get(w, "busy_ms");
	char buf[64];

	r->c[0] = cell(json_get(w, "queue"), 64);
	snprintf(buf, sizeof(buf), "%lld",
		 (long long)json_num(json_get(w, "number")));
	r->c[1] = xstrdup(buf);
	if (json_num(json_get(w, "pid")) > 0)
		snprintf(buf, sizeof(buf), "%lld",
			 (long long)json_num(json_get(w, "pid")));
	else
		snprintf(buf, sizeof(buf), "-");
	r->c[2] = xstrdup(buf);
	{
		char *st = cell(json_get(w, "state"), 16);

		snprintf(buf, sizeof(buf), "%s%s", st,
			 json_true(json_get(w, "retiring")) ? ",retiring" : "");
		free(st);
		r->c[3] = xstrdup(buf);
	}
	r->c[4] = cell(json_get(w, "message_id"), ID_WIDTH);
	if (json_is_null(busy))
		snprintf(buf, sizeof(buf), "-");
	else
		snprintf(buf, sizeof(buf), "%.1fs",
			 (double)json_num(busy) / 1000.0);
	r->c[5] = xstrdup(buf);
	snprintf(buf, sizeof(buf), "%lld",
		 (long long)json_num(json_get(w, "acked")));
	r->c[6] = xstrdup(buf);
	snprintf(buf, sizeof(buf), "%lld",
		 (long long)json_num(json_get(w, "retried")));
	r->c[7] = xstrdup(buf);
	snprintf(buf, sizeof(buf), "%lld",
		 (long long)json_num(json_get(w, "failed")));
	r->c[8] = xstrdup(buf);
	r->c[9] = cell(json_get(w, "node"), 64);
}

static void print_row(const char *const *c, const int *width)
{
	for (int i = 0; i < 10; i++) {
		if (i == 9)
			printf("%s\n", c[i]);
		else
			printf("%-*s  ", width[i], c[i]);
	}
}

static long long num_of(const struct json *o, const char *key)
{
	return (long long)json_num(json_get(o, key));
}

/* ", breaker open (12 s left)": a queue with a breaker, unless closed */
static void breaker_words(const struct json *q)
{
	const char *state = json_str(json_get(q, "breaker"));
	const struct json *left = json_get(q, "breaker_seconds_left");

	if (state == NULL || strcmp(state, "closed") == 0)
		return;
	printf(", breaker %.16s", state);
	if (left != NULL && !json_is_null(left))
		printf(" (%lld s left)", (long long)json_num(left));
}

/* The pool's target and why: "  target 4: scaling up: 14 ready, ..." */
static void scaling_line(const struct json *q, const char *name)
{
	const struct json *why = json_get(q, "scaling");
	char *w;

	if (json_is_null(why))
		return;
	w = cell(why, 200);
	printf("queue %s: target %lld of %lld to %lld workers: %s", name,
	       num_of(q, "target"), num_of(q, "workers"),
	       num_of(q, "max_workers"), w);
	if (!json_is_null(json_get(q, "ready")))
		printf(" (%lld ready)", num_of(q, "ready"));
	if (json_true(json_get(q, "restarting")))
		printf("; rolling restart under way");
	printf("\n");
	free(w);
}

static void queue_line(const struct json *q)
{
	char *name = cell(json_get(q, "name"), 128);
	const struct json *le = json_get(q, "last_error");

	printf("queue %s: %s, %lld worker%s (starting %lld, idle %lld, "
	       "busy %lld, paused %lld, down %lld), handled %lld, "
	       "retried %lld, failed %lld, requeued %lld, restarts %lld",
	       name, json_true(json_get(q, "paused")) ? "paused" : "running",
	       num_of(q, "workers"), num_of(q, "workers") == 1 ? "" : "s",
	       num_of(q, "starting"), num_of(q, "idle"), num_of(q, "busy"),
	       num_of(q, "paused_workers"), num_of(q, "down"),
	       num_of(q, "acked"), num_of(q, "retried"), num_of(q, "failed"),
	       num_of(q, "requeued"), num_of(q, "restarts"));
	breaker_words(q);
	if (!json_is_null(le)) {
		char *e = cell(le, 200);

		printf(", last error: %s", e);
		free(e);
	}
	printf("\n");
	scaling_line(q, name);
	free(name);
}

static void print_status(const struct json *j)
{
	const struct json *ws = json_get(j, "workers");
	const struct json *qs = json_get(j, "queues");
	int n = json_len(ws), width[10];
	struct row *rows = xcalloc((size_t)n + 1, sizeof(*rows));
	char *conf = cell(json_get(j, "config"), 200);

	printf("warrend %lld (%s): %s\n", num_of(j, "pid"), conf,
	       json_true(json_get(j, "stopping")) ? "stopping"
	       : json_true(json_get(j, "ready"))  ? "ready"
						  : "starting");
	free(conf);
	for (int i = 0; i < 10; i++)
		width[i] = (int)strlen(columns[i]);
	for (int i = 0; i < n; i++) {
		worker_row(json_at(ws, i), &rows[i]);
		for (int k = 0; k < 10; k++)
			if ((int)strlen(rows[i].c[k]) > width[k])
				width[k] = (int)strlen(rows[i].c[k]);
	}
	print_row(columns, width);
	for (int i = 0; i < n; i++) {
		print_row((const char *const *)rows[i].c, width);
		for (int k = 0; k < 10; k++)
			free(rows[i].c[k]);
	}
	free(rows);
	printf("\n");
	for (int i = 0; i < json_len(qs); i++)
		queue_line(json_at(qs, i));
}

/* ------------------------------------------------------------------ */
/* the commands */

struct cmd {
	const char *name;
	bool json;	    /* --json */
	const char *queue;  /* pause, resume, failed, replay */
	long limit;	    /* --limit, 0: none */
	const char *reason; /* --reason */
	long n;		    /* scale: N */
};

static int socket_command(const char *path, const struct cmd *c)
{
	char request[REQUEST_MAX], *text;
	struct json *j;
	int status;

	if (strcmp(c->name, "scale") == 0) /* N first: names hold spaces */
		snprintf(request, sizeof(request), "scale %ld %s", c->n,
			 c->queue);
	else if (c->queue != NULL)
		snprintf(request, sizeof(request), "%s %s", c->name, c->queue);
	else
		snprintf(request, sizeof(request), "%s", c->name);
	j = ask(path, request, &text, &status);
	if (j == NULL)
		return status;
	if (strcmp(c->name, "status") == 0 && c->json) {
		fputs(text, stdout);
	} else if (strcmp(c->name, "status") == 0) {
		print_status(j);
	} else if (strcmp(c->name, "metrics") == 0) {
		const char *t = json_str(json_get(j, "text"));

		if (t == NULL) {
			fprintf(stderr, "warrenctl: the answer has no "
					"metrics text\n");
			status = 1;
		} else {
			fputs(t, stdout);
		}
	} else {
		char *q = ctl_printable(c->queue, strlen(c->queue), 256);

		if (strcmp(c->name, "scale") == 0)
			printf("queue %s scaled to %ld worker%s\n", q, c->n,
			       c->n == 1 ? "" : "s");
		else if (strcmp(c->name, "restart") == 0)
			printf("queue %s restarting, one worker at a time\n",
			       q);
		else
			printf("queue %s %s\n", q,
			       json_true(json_get(j, "paused")) ? "paused"
								: "resumed");
		free(q);
	}
	json_free(j);
	free(text);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "warrenctl: stdout: %s\n", strerror(errno));
		return 1;
	}
	return status;
}

/* A queue name the one-line protocol can carry. */
static int check_queue(const char *q)
{
	if (q[0] == '\0' || strlen(q) > 255)
		return usage_error("bad queue name '%s' (1 to 255 bytes)", q);
	for (const char *p = q; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return usage_error("queue name '%s' holds a control "
					   "character",
					   q);
	return 0;
}

static int parse_limit(const char *s, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1)
		return usage_error("--limit '%s': expected a whole number "
				   "of at least 1",
				   s);
	*out = v;
	return 0;
}

/* scale's N: 1 to 1024 workers, the configuration's own range. */
static int parse_workers(const char *s, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 1024)
		return usage_error("scale: N '%s': expected 1 to 1024 workers "
				   "(pause QUEUE stops one)",
				   s);
	*out = v;
	return 0;
}

/*
 * The command and its arguments after the global options: argv[0] is the
 * command. 0, or the usage status said.
 */
static int parse_command(int argc, char **argv, struct cmd *c)
{
	static const char *const names[] = {"status",  "pause",	 "resume",
					    "metrics", "failed", "replay",
					    "scale",   "restart"};
	bool known = false, takes_queue, takes_limit, takes_json, takes_reason;

	memset(c, 0, sizeof(*c));
	if (argc < 1)
		return usage_error("%s", "no command given");
	c->name = argv[0];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		known |= strcmp(c->name, names[i]) == 0;
	if (!known)
		return usage_error("unknown command '%s'", c->name);
	takes_queue =
	    strcmp(c->name, "status") != 0 && strcmp(c->name, "metrics") != 0;
	takes_limit =
	    strcmp(c->name, "failed") == 0 || strcmp(c->name, "replay") == 0;
	takes_json =
	    strcmp(c->name, "status") == 0 || strcmp(c->name, "failed") == 0;
	takes_reason = strcmp(c->name, "replay") == 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = NULL;

		if (takes_json && strcmp(a, "--json") == 0) {
			c->json = true;
		} else if (takes_limit && (strcmp(a, "--limit") == 0 ||
					   strncmp(a, "--limit=", 8) == 0)) {
			v = a[7] == '=' ? a + 8
					: (i + 1 < argc ? argv[++i] : NULL);
			if (v == NULL)
				return usage_error("%s", "--limit needs N");
			if (parse_limit(v, &c->limit))
				return EX_USAGE_STATUS;
		} else if (takes_reason && (strcmp(a, "--reason") == 0 ||
					    strncmp(a, "--reason=", 9) == 0)) {
			v = a[8] == '=' ? a + 9
					: (i + 1 < argc ? argv[++i] : NULL);
			if (v == NULL)
				return usage_error("%s", "--reason needs TEXT");
			c->reason = v;
		} else if (strcmp(a, "--") == 0 && takes_queue &&
			   c->queue == NULL && i + 1 < argc) {
			/* "--": a QUEUE that begins with '-' follows */
			c->queue = argv[++i];
			if (check_queue(c->queue))
				return EX_USAGE_STATUS;
		} else if (a[0] == '-' && a[1] != '\0') {
			return usage_error("unknown option '%s' of %s", a,
					   c->name);
		} else if (takes_queue && c->queue == NULL) {
			c->queue = a;
			if (check_queue(a))
				return EX_USAGE_STATUS;
		} else if (strcmp(c->name, "scale") == 0 && c->n == 0) {
			if (parse_workers(a, &c->n))
				return EX_USAGE_STATUS;
		} else {
			return usage_error("unexpected argument '%s'", a);
		}
	}
	if (takes_queue && c->queue == NULL)
		return usage_error("%s needs a QUEUE", c->name);
	if (strcmp(c->name, "scale") == 0 && c->n == 0)
		return usage_error("%s", "scale needs QUEUE and N");
	return 0;
}

/* The socket of -c FILE's configuration; NULL said. */
static char *socket_of(const char *conf)
{
	char err[1024];
	struct config *cf = config_load(conf, err, sizeof(err));
	char *s;

	if (cf == NULL) {
		fprintf(stderr, "%s\n", err);
		return NULL;
	}
	if (cf->control_socket[0] == '\0') {
		fprintf(stderr,
			"warrenctl: %s sets control_socket = \"\": warrend "
			"does not answer on a socket\n",
			conf);
		config_free(cf);
		return NULL;
	}
	s = xstrdup(cf->control_socket);
	config_free(cf);
	return s;
}

int main(int argc, char **argv)
{
	const char *sock = NULL, *conf = NULL;
	struct cmd c;
	int ch, rc;

	log_init("warrenctl", false);
	/* '+': options end at the command, whose own follow it */
	while ((ch = getopt(argc, argv, "+s:c:h")) != -1) {
		switch (ch) {
		case 's':
			sock = optarg;
			break;
		case 'c':
			conf = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EX_USAGE_STATUS;
		}
	}
	rc = parse_command(argc - optind, argv + optind, &c);
	if (rc != 0)
		return rc;
	if (strcmp(c.name, "failed") == 0 || strcmp(c.name, "replay") == 0) {
		struct replay_opts o = {conf ? conf : DEFAULT_CONF, c.queue,
					c.limit, c.json, c.reason};

		if (sock != NULL)
			return usage_error("-s is for status, pause, resume, "
					   "metrics, scale and restart, not %s",
					   c.name);
		return c.name[0] == 'f' ? replay_list(&o) : replay_run(&o);
	}
	if (sock == NULL && conf != NULL) {
		char *s = socket_of(conf);

		if (s == NULL)
			return 1;
		rc = socket_command(s, &c);
		free(s);
		return rc;
	}
	return socket_command(sock ? sock : DEFAULT_SOCKET, &c);
}
