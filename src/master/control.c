/*
 * control.c: the master's unix socket for warrenctl. One request line in,
 * one JSON answer out, then the connection closes. Never waits on a
 * client: sockets are non-blocking, requests and clients are bounded, and
 * an idle or slow client is dropped at its deadline.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "master/master.h"

#define CLIENTS_MAX 64
#define REQUEST_MAX 4096
#define CLIENT_MS 5000 /* to send the request, and to read the answer */

struct client {
	int fd; /* -1: free */
	struct ev *ev;
	char in[REQUEST_MAX + 1];
	size_t nin;
	char *out; /* the answer, once there is one */
	size_t nout, sent;
	int64_t deadline;
	char *refused; /* why this peer may not ask: the answer to any line */
};

static struct {
	int fd;
	struct ev *ev;
	char *path; /* bound by us: unlinked at close */
	struct client c[CLIENTS_MAX];
	int nclients;
	int64_t accept_at; /* out of fds: accepting again then, 0: accepting */
	const struct control_ops *ops;
} ctl = {.fd = -1};

static void client_close(struct client *c)
{
	ev_del(c->ev);
	c->ev = NULL;
	close(c->fd);
	c->fd = -1;
	free(c->out);
	c->out = NULL;
	free(c->refused);
	c->refused = NULL;
	ctl.nclients--;
}

/* {"ok":false,"error":why} */
static char *error_answer(const char *why)
{
	struct json *o = json_new_object();
	char *t;

	json_set(o, "ok", json_new_bool(false));
	json_set(o, "error", json_string(why));
	t = json_text(o);
	json_free(o);
	return t;
}

static char *pause_answer(const char *queue, bool pause)
{
	struct json *o;
	char why[300], *t;

	if (ctl.ops->pause(queue, pause) != 0) {
		snprintf(why, sizeof(why), "no such queue: %s", queue);
		return error_answer(why);
	}
	o = json_new_object();
	json_set(o, "ok", json_new_bool(true));
	json_set(o, "queue", json_string(queue));
	json_set(o, "paused", json_new_bool(pause));
	t = json_text(o);
	json_free(o);
	return t;
}

/* "scale N QUEUE" (N first: a queue name may hold spaces), "restart Q" */
static char *scale_answer(const char *args, bool restart)
{
	struct json *o;
	char why[300], *end, *t;
	long n = 0;
	const char *queue = args;

	if (!restart) {
		n = strtol(args, &end, 10);
		if (end == args || *end != ' ' || n < 1 || n > 1024)
			return error_answer("scale: expected N (1 to 1024) "
					    "and a queue");
		queue = end + 1;
	}
	if ((restart ? ctl.ops->restart(queue)
		     : ctl.ops->scale(queue, (int)n)) != 0) {
		snprintf(why, sizeof(why), "no such queue: %s", queue);
		return error_answer(why);
	}
	o = json_new_object();
	json_set(o, "ok", json_new_bool(true));
	json_set(o, "queue", json_string(queue));
	if (!restart)
		json_set(o, "workers", json_int(n));
	else
		json_set(o, "restarting", json_new_bool(true));
	t = json_text(o);
	json_free(o);
	return t;
}

static char *metrics_answer(void)
{
	struct json *o = json_new_object();
	char *text = ctl.ops->metrics(), *t;

	json_set(o, "ok", json_new_bool(true));
	json_set(o, "text", json_string(text));
	t = json_text(o);
	json_free(o);
	free(text);
	return t;
}

/* The answer to one request line (without its newline). */
static char *answer(char *line)
{
	char why[200];
	size_t n = strlen(line);

	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	if (strcmp(line, "status") == 0)
		return ctl.ops->status();
	if (strcmp(line, "metrics") == 0)
		return metrics_answer();
	if (strncmp(line, "pause ", 6) == 0)
		return pause_answer(line + 6, true);
	if (strncmp(line, "resume ", 7) == 0)
		return pause_answer(line + 7, false);
	if (strncmp(line, "scale ", 6) == 0)
		return scale_answer(line + 6, false);
	if (strncmp(line, "restart ", 8) == 0)
		return scale_answer(line + 8, true);
	snprintf(why, sizeof(why), "unknown request: %.60s%s", line,
		 n > 60 ? "..." : "");
	return error_answer(why);
}

/* Queue text (which we own) with its newline and start sending it. */
static void reply(struct client *c, char *text)
{
	size_t n = strlen(text);

	c->out = realloc(text, n + 2);
	if (c->out == NULL)
		fatal("realloc");
	c->out[n] = '\n';
	c->out[n + 1] = '\0';
	c->nout = n + 1;
	c->sent = 0;
	c->deadline = now_ms() + CLIENT_MS;
	/* what it sends from now on is left unread (no SHUT_RD: the
	 * client's own send would fail before it reads the answer) */
	ev_mod(c->ev, EPOLLOUT);
}

static void client_write(struct client *c)
{
	while (c->sent < c->nout) {
		ssize_t n = send(c->fd, c->out + c->sent, c->nout - c->sent,
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n == -1 && errno == EAGAIN)
			return;
		if (n <= 0)
			break;
		c->sent += (size_t)n;
	}
	client_close(c);
}

static void client_read(struct client *c)
{
	char *nl;
	ssize_t n;

	for (;;) {
		n = recv(c->fd, c->in + c->nin, REQUEST_MAX - c->nin,
			 MSG_DONTWAIT);
		if (n == -1 && errno == EAGAIN)
			return;
		if (n <= 0) { /* gone before a whole line */
			client_close(c);
			return;
		}
		c->nin += (size_t)n;
		c->in[c->nin] = '\0';
		if ((nl = memchr(c->in, '\n', c->nin)) != NULL) {
			*nl = '\0';
			reply(c, c->refused != NULL ? error_answer(c->refused)
						    : answer(c->in));
			return;
		}
		if (c->nin == REQUEST_MAX) {
			reply(c, error_answer("request too long"));
			return;
		}
	}
}

static void on_client(void *arg, uint32_t events)
{
	struct client *c = arg;

	if (c->out != NULL)
		client_write(c);
	else if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		client_read(c);
}

/* Root and the user warrend runs as may ask; nobody else. */
static bool peer_allowed(int fd, char *why, size_t len)
{
	struct ucred cr;
	socklen_t n = sizeof(cr);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &n) == -1) {
		snprintf(why, len, "permission denied: %s", strerror(errno));
		return false;
	}
	if (cr.uid == 0 || cr.uid == geteuid())
		return true;
	snprintf(why, len,
		 "permission denied: uid %u is neither root nor warrend's "
		 "user (uid %u)",
		 (unsigned)cr.uid, (unsigned)geteuid());
	return false;
}

static void on_accept(void *arg, uint32_t events)
{
	char why[200];
	int fd;

	(void)arg;
	(void)events;
	while ((fd = accept4(ctl.fd, NULL, NULL,
			     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		struct client *c = NULL;

		for (int i = 0; i < CLIENTS_MAX && c == NULL; i++)
			if (ctl.c[i].fd == -1)
				c = &ctl.c[i];
		if (c == NULL) { /* full: the others must finish first */
			static const char full[] =
			    "{\"ok\":false,\"error\":\"too many clients\"}\n";

			(void)send(fd, full, sizeof(full) - 1,
				   MSG_DONTWAIT | MSG_NOSIGNAL);
			close(fd);
			continue;
		}
		memset(c, 0, sizeof(*c));
		c->fd = fd;
		c->deadline = now_ms() + CLIENT_MS;
		c->ev = ev_add(fd, EPOLLIN, on_client, c);
		ctl.nclients++;
		if (c->ev == NULL)
			client_close(c);
		else if (!peer_allowed(fd, why, sizeof(why)))
			c->refused = xstrdup(why);
	}
	if (errno == EMFILE || errno == ENFILE) {
		/* the backlog stays readable: stop watching it for a while
		 * rather than spin on it */
		log_warn("control socket: accept");
		ev_mod(ctl.ev, 0);
		ctl.accept_at = now_ms() + CLIENT_MS;
	}
}

/*
 * Whether a live process answers at path (a stale file refuses). Never
 * waits: a listener with a full backlog (EAGAIN) is alive too.
 */
static bool someone_listens(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	bool live;

	if (fd == -1)
		return false;
	live = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0 ||
	       errno == EAGAIN;
	close(fd);
	return live;
}

/* Bind path, replacing a stale socket file; false with words in why. */
static bool bind_socket(int fd, const char *path, char *why, size_t len)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct stat st;
	mode_t old;
	int r;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	old = umask(0117); /* 0660 from the start */
	r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	if (r == -1 && errno == EADDRINUSE) {
		if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			umask(old);
			snprintf(why, len, "%s exists and is not a socket",
				 path);
			return false;
		}
		if (someone_listens(&sun)) {
			umask(old);
			snprintf(why, len,
				 "a live warrend already answers at %s", path);
			return false;
		}
		unlink(path); /* left by a warrend that died */
		r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	}
	umask(old);
	if (r == -1) {
		snprintf(why, len, "%s: %s%s", path, strerror(errno),
			 errno == ENOENT ? " (RuntimeDirectory=warren makes "
					   "/run/warren under systemd)"
					 : "");
		return false;
	}
	if (chmod(path, 0660) == -1) {
		snprintf(why, len, "chmod %s: %s", path, strerror(errno));
		unlink(path);
		return false;
	}
	return true;
}

void control_open(const char *path, const struct control_ops *ops)
{
	char why[400];
	int fd;

	control_close();
	ctl.ops = ops;
	if (path == NULL || path[0] == '\0')
		return;
	for (int i = 0; i < CLIENTS_MAX; i++)
		ctl.c[i].fd = -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("control socket");
		return;
	}
	if (!bind_socket(fd, path, why, sizeof(why))) {
		/* the default's directory comes with the unit: started by
		 * hand, a warrend without it is no surprise */
		(errno == ENOENT && strcmp(path, CONTROL_SOCKET_DEFAULT) == 0
		     ? log_info
		     : log_warnx)("control socket: %s; running without it "
				  "(warrenctl cannot reach this warrend)",
				  why);
		close(fd);
		return;
	}
	if (listen(fd, 16) == -1 ||
	    (ctl.ev = ev_add(fd, EPOLLIN, on_accept, NULL)) == NULL) {
		log_warn("control socket %s: listen", path);
		unlink(path);
		close(fd);
		return;
	}
	ctl.fd = fd;
	ctl.path = xstrdup(path);
	log_debug("control socket at %s", path);
}

bool control_is_open(void)
{
	return ctl.fd >= 0;
}

void control_close(void)
{
	for (int i = 0; i < CLIENTS_MAX; i++)
		if (ctl.fd >= 0 && ctl.c[i].fd >= 0)
			client_close(&ctl.c[i]);
	if (ctl.fd < 0)
		return;
	ev_del(ctl.ev);
	ctl.ev = NULL;
	close(ctl.fd);
	ctl.fd = -1;
	ctl.accept_at = 0;
	unlink(ctl.path);
	free(ctl.path);
	ctl.path = NULL;
}

int64_t control_next_timer(void)
{
	int64_t next = ctl.accept_at;

	if (ctl.nclients == 0)
		return next;
	for (int i = 0; i < CLIENTS_MAX; i++)
		if (ctl.c[i].fd >= 0 && (next == 0 || ctl.c[i].deadline < next))
			next = ctl.c[i].deadline;
	return next;
}

void control_timers(void)
{
	int64_t now = now_ms();

	if (ctl.accept_at != 0 && now >= ctl.accept_at && ctl.fd >= 0) {
		ctl.accept_at = 0;
		ev_mod(ctl.ev, EPOLLIN);
	}
	if (ctl.nclients == 0)
		return;
	for (int i = 0; i < CLIENTS_MAX; i++)
		if (ctl.c[i].fd >= 0 && ctl.c[i].deadline <= now)
			client_close(&ctl.c[i]);
}
