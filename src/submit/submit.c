/*
 * submit.c: warren-submit, the tutorial's new_task.py made safe: declare
 * the queue as warrend would, publish persistent messages with publisher
 * confirms, and succeed only when the broker confirmed every one.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "amqp/mq.h"

#define CONFIRM_TIMEOUT_MS 30000
#define WAIT_DEFAULT_S 60

#define BATCH 1000 /* messages between confirm waits with -l */

static void usage(FILE *f)
{
	fprintf(f, "usage: warren-submit [-c FILE | -u URL] -q QUEUE "
		   "[-H 'Name: value'] [-i MESSAGE_ID] [-l] "
		   "[--wait [--timeout S]] [BODY ...]\n");
}

struct opts {
	const char *conf, *url, *queue, *id;
	struct header *headers;
	int nheaders;
	bool lines;
	bool wait;    /* --wait: a reply is asked for and printed */
	long timeout; /* --timeout: seconds for it */
};

static int add_header(struct opts *o, const char *arg)
{
	const char *colon = strchr(arg, ':');
	struct header *h;

	if (colon == NULL || colon == arg) {
		fprintf(stderr,
			"warren-submit: -H '%s': expected 'Name: value'\n",
			arg);
		return -1;
	}
	o->headers = realloc(o->headers,
			     (size_t)(o->nheaders + 1) * sizeof(*o->headers));
	if (o->headers == NULL)
		fatal("realloc");
	h = &o->headers[o->nheaders++];
	memset(h, 0, sizeof(*h));
	h->name = strndup(arg, (size_t)(colon - arg));
	colon++;
	while (*colon == ' ' || *colon == '\t')
		colon++;
	h->value = xstrdup(colon);
	h->len = strlen(colon);
	return 0;
}

/*
 * Overwrite the password of a URL given on the command line, so that it
 * does not stay readable in /proc/PID/cmdline (ps) while we run. Safer
 * still: -c with broker.password_file.
 */
static void hide_password(char *url)
{
	char *p = strstr(url, "://"), *at, *colon;

	if (p == NULL)
		return;
	p += 3;
	at = strchr(p, '@');
	if (at == NULL)
		return;
	colon = memchr(p, ':', (size_t)(at - p));
	if (colon != NULL)
		memset(colon + 1, 'x', (size_t)(at - colon - 1));
}

/* A random id, for messages that were given none. */
static void random_id(char *buf, size_t len)
{
	unsigned char r[12];

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		memset(r, 0, sizeof(r));
	for (size_t i = 0; i < sizeof(r) && 2 * i + 2 < len; i++)
		snprintf(buf + 2 * i, 3, "%02x", r[i]);
}

static int publish_one(struct mq *mq, const struct opts *o, const void *body,
		       size_t len, const char *id)
{
	struct publish p = {0};

	p.routing_key = o->queue;
	p.body = body;
	p.body_len = len;
	p.message_id = id;
	p.headers = o->headers;
	p.nheaders = o->nheaders;
	if (o->wait) {
		p.reply_to = MQ_REPLY_TO;
		p.correlation_id = id;
	}
	/* every message: warrend measures its wait in the queue from it */
	p.timestamp = (uint64_t)time(NULL);
	if (mq_publish(mq, &p) != 0) {
		fprintf(stderr, "warren-submit: %s\n", mq_error(mq));
		return -1;
	}
	return 0;
}

static int wait_confirms(struct mq *mq)
{
	if (mq_wait_confirms(mq, CONFIRM_TIMEOUT_MS) != 0) {
		fprintf(stderr, "warren-submit: %s\n", mq_error(mq));
		return -1;
	}
	return 0;
}

static int submit_lines(struct mq *mq, const struct opts *o)
{
	char *line = NULL, id[300];
	size_t cap = 0;
	ssize_t n;
	long count = 0;
	int rc = 0;

	while (rc == 0 && (n = getline(&line, &cap, stdin)) >= 0) {
		if (n > 0 && line[n - 1] == '\n')
			n--;
		count++;
		if (o->id != NULL)
			snprintf(id, sizeof(id), "%s-%ld", o->id, count);
		else
			random_id(id, sizeof(id));
		rc = publish_one(mq, o, line, (size_t)n, id);
		if (rc == 0 && count % BATCH == 0)
			rc = wait_confirms(mq);
	}
	free(line);
	return rc == 0 ? wait_confirms(mq) : rc;
}

/* Print the reply's body; its x-warren-outcome is the exit status. */
static int print_reply(const struct delivery *d)
{
	const struct header *h = delivery_header(d, "x-warren-outcome");
	const struct header *why = delivery_header(d, "x-warren-reason");

	if (d->body_len > 0 &&
	    fwrite(d->body, 1, d->body_len, stdout) != d->body_len) {
		fprintf(stderr, "warren-submit: writing the reply: %s\n",
			strerror(errno));
		return 1;
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "warren-submit: writing the reply: %s\n",
			strerror(errno));
		return 1;
	}
	if (h != NULL && strcmp(h->value, "failed") == 0) {
		fprintf(stderr, "warren-submit: failed: %s\n",
			why != NULL ? why->value : "no reason given");
		return 1;
	}
	return 0;
}

/*
 * --wait: the reply whose correlation_id is id, within the timeout. 0 for
 * x-warren-outcome ok (or none: a reply from another kind of server), 1
 * for failed, 75 for none in time.
 */
static int wait_reply(struct mq *mq, const struct opts *o, const char *id)
{
	int64_t deadline = now_ms() + o->timeout * 1000;
	struct delivery *d;

	for (;;) {
		int64_t left = deadline - now_ms();
		int r = mq_wait_delivery(mq, left > 0 ? (int)left : 0, &d);

		if (r < 0) {
			fprintf(stderr, "warren-submit: %s\n", mq_error(mq));
			return 1;
		}
		if (r == 0) {
			fprintf(stderr,
				"warren-submit: no reply within %ld s\n",
				o->timeout);
			return EX_TEMPFAIL_STATUS;
		}
		if (d->correlation_id != NULL &&
		    strcmp(d->correlation_id, id) == 0) {
			r = print_reply(d);
			delivery_free(d);
			return r;
		}
		delivery_free(d); /* a late reply to someone else */
	}
}

static int submit_one(struct mq *mq, const struct opts *o, int argc,
		      char **argv)
{
	char id[300], *body;
	size_t len = 0;
	int rc;

	if (argc > 0) {
		for (int i = 0; i < argc; i++)
			len += strlen(argv[i]) + 1;
		body = xcalloc(len + 1, 1);
		for (int i = 0; i < argc; i++) {
			if (i > 0)
				strcat(body, " ");
			strcat(body, argv[i]);
		}
		len = strlen(body);
	} else {
		body = read_all(stdin, &len);
	}
	if (o->id != NULL)
		snprintf(id, sizeof(id), "%s", o->id);
	else
		random_id(id, sizeof(id));
	rc = publish_one(mq, o, body, len, id);
	free(body);
	rc = rc == 0 ? wait_confirms(mq) : rc;
	if (rc != 0)
		return 1;
	return o->wait ? wait_reply(mq, o, id) : 0;
}

static int parse_timeout(struct opts *o, const char *arg)
{
	char *end;

	o->timeout = strtol(arg, &end, 10);
	if (*arg == '\0' || *end != '\0' || o->timeout < 1 ||
	    o->timeout > 86400) {
		fprintf(stderr,
			"warren-submit: --timeout %s: expected seconds, 1 to "
			"86400\n",
			arg);
		return -1;
	}
	return 0;
}

/* One option c with its argument into o: 0, or the exit status. */
static int parse_opt(struct opts *o, int c, bool *timeout_given)
{
	switch (c) {
	case 'W':
		o->wait = true;
		return 0;
	case 'T':
		*timeout_given = true;
		return parse_timeout(o, optarg) == 0 ? 0 : EX_USAGE_STATUS;
	case 'c':
		o->conf = optarg;
		return 0;
	case 'u':
		o->url = xstrdup(optarg);
		hide_password(optarg);
		return 0;
	case 'q':
		o->queue = optarg;
		return 0;
	case 'H':
		return add_header(o, optarg) ? EX_USAGE_STATUS : 0;
	case 'i':
		o->id = optarg;
		return 0;
	case 'l':
		o->lines = true;
		return 0;
	default:
		usage(stderr);
		return EX_USAGE_STATUS;
	}
}

/* The command line into o: -1 to go on, or the exit status. */
static int parse_args(struct opts *o, int argc, char **argv)
{
	static const struct option longs[] = {
	    {"wait", no_argument, NULL, 'W'},
	    {"timeout", required_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0}};
	bool timeout_given = false;
	int c, rc;

	o->timeout = WAIT_DEFAULT_S;
	while ((c = getopt_long(argc, argv, "c:u:q:H:i:lh", longs, NULL)) !=
	       -1) {
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
		if ((rc = parse_opt(o, c, &timeout_given)) != 0)
			return rc;
	}
	if (o->queue == NULL || (o->conf == NULL) == (o->url == NULL) ||
	    (o->lines && optind < argc) || (o->wait && o->lines) ||
	    (timeout_given && !o->wait)) {
		usage(stderr);
		return EX_USAGE_STATUS;
	}
	return -1;
}

/* Where to publish: the broker and queue of -c's file, or of -u with a
 * durable classic queue as warrend.conf's defaults make it. */
struct target {
	struct config *cf;
	struct broker_conf adhoc;
	struct queue_conf dflt;
	const struct broker_conf *b;
	const struct queue_conf *q;
};

static int target_of(const struct opts *o, struct target *t)
{
	char err[1024];

	t->dflt.name = (char *)o->queue;
	t->dflt.durable = true;
	t->dflt.declare = true;
	t->dflt.type = QUEUE_CLASSIC;
	t->q = &t->dflt;
	if (o->conf != NULL) {
		t->cf = config_load(o->conf, err, sizeof(err));
		if (t->cf == NULL) {
			fprintf(stderr, "%s\n", err);
			return EX_CONFIG_STATUS;
		}
		t->b = &t->cf->broker;
		if (config_queue(t->cf, o->queue) != NULL)
			t->q = config_queue(t->cf, o->queue);
		return 0;
	}
	if (mq_url_check(o->url, err, sizeof(err)) != 0) {
		fprintf(stderr, "warren-submit: -u: %s\n", err);
		return EX_USAGE_STATUS;
	}
	t->adhoc.urls = (char **)&o->url;
	t->adhoc.nurls = 1;
	t->adhoc.tls.verify_peer = t->adhoc.tls.verify_hostname = true;
	t->adhoc.connect_timeout = 10; /* warrend.conf's defaults */
	t->adhoc.consumer_timeout = 1800;
	t->b = &t->adhoc;
	return 0;
}

/* Connect, declare, publish what the command line says. */
static int submit(const struct opts *o, const struct target *t, int argc,
		  char **argv)
{
	char err[1024];
	int status, rc;
	struct mq *mq = mq_connect(t->b, "warren-submit", 0, 0, NULL, &status,
				   err, sizeof(err));

	if (mq == NULL) {
		fprintf(stderr, "warren-submit: %s\n", err);
		return 1;
	}
	if (mq_declare(mq, t->q) != 0 || mq_confirm_select(mq) != 0 ||
	    (o->wait && mq_reply_consume(mq) != 0)) {
		fprintf(stderr, "warren-submit: %s\n", mq_error(mq));
		rc = 1;
	} else if (o->lines) {
		rc = submit_lines(mq, o) == 0 ? 0 : 1;
	} else {
		rc = submit_one(mq, o, argc, argv);
	}
	mq_close(mq);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	struct target t = {0};
	int rc;

	log_init("warren-submit", false);
	rc = parse_args(&o, argc, argv);
	if (rc == -1) {
		rc = target_of(&o, &t);
		if (rc == 0)
			rc = submit(&o, &t, argc - optind, argv + optind);
	}
	for (int i = 0; i < o.nheaders; i++) {
		free(o.headers[i].name);
		free(o.headers[i].value);
	}
	free(o.headers);
	free((char *)o.url);
	config_free(t.cf);
	return rc;
}
