/*
 * replay.c: warrenctl's failed and replay. Both talk to the broker
 * themselves, from the configuration's broker section, and read
 * QUEUE.failed one message at a time with basic.get:
 *
 * - failed takes every message without acking it, shows it, and gives
 *   them all back at the end with one requeueing nack (the broker puts
 *   them back where they were: the queue's order is kept);
 * - replay publishes a copy of each to QUEUE with publisher confirms,
 *   attempts starting afresh, and acks the original only once the broker
 *   confirmed the copy: a crash at any point duplicates at most the one
 *   message in hand and loses none. Messages its --reason does not pick
 *   stay unacked and are given back, in order, at the end.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl/ctl.h"

#define CONFIRM_TIMEOUT_MS 30000
#define PROGRESS_MS 100 /* at most ten progress lines a second */
#define ID_WIDTH 36
#define REASON_WIDTH 16
#define STDERR_WIDTH 60

/* Headers of a parked message's former life, left out of its replay. */
static const char *const parking_headers[] = {
    "x-warren-attempts",
    "x-warren-reason",
    "x-warren-stderr",
    "x-warren-failed-at",
    "x-warren-cpu-ms",
    "x-warren-max-rss-kb",
    "x-warren-attempt",
    "x-warren-replayed-from",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-delivery-count",
    NULL,
};

char *ctl_printable(const char *s, size_t len, size_t max)
{
	size_t n = len;
	char *out;

	if (max < 4)
		max = 4;
	if (n > max) {
		n = max - 3;
		/* not inside a UTF-8 sequence */
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	out = xcalloc(n + 4, 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	if (n < len)
		memcpy(out + n, "...", 4);
	return out;
}

/* One connection to the broker of o's configuration. */
struct session {
	struct config *cf;
	struct mq *mq;
	char parked[300]; /* QUEUE.failed */
	uint32_t count;	  /* its ready messages when we started */
};

/* The next parked message, unacked: 1, 0 when none is left, -1 said. */
static int next_parked(struct session *s, struct delivery **d)
{
	int r = mq_get(s->mq, s->parked, d);

	if (r < 0)
		fprintf(stderr, "warrenctl: %s: %s\n", s->parked,
			mq_error(s->mq));
	return r;
}

static void session_close(struct session *s)
{
	mq_close(s->mq);
	config_free(s->cf);
}

/* Connect and find QUEUE.failed. 0, or -1 said. */
static int session_open(struct session *s, const struct replay_opts *o)
{
	char err[1024];
	int status, r;

	memset(s, 0, sizeof(*s));
	snprintf(s->parked, sizeof(s->parked), "%s.failed", o->queue);
	s->cf = config_load(o->conf, err, sizeof(err));
	if (s->cf == NULL) {
		fprintf(stderr, "warrenctl: %s\n", err);
		return -1;
	}
	/* the error never holds the password: src/amqp/ redacts its URLs */
	s->mq = mq_connect(&s->cf->broker, "warrenctl", 0, 0, NULL, &status,
			   err, sizeof(err));
	if (s->mq == NULL) {
		fprintf(stderr, "warrenctl: %s\n", err);
		config_free(s->cf);
		return -1;
	}
	r = mq_declare_passive(s->mq, s->parked, &s->count);
	if (r == 0)
		return 0;
	if (r == 1)
		fprintf(stderr,
			"warrenctl: there is no queue %s (no message of %s "
			"was ever parked, or the name is wrong)\n",
			s->parked, o->queue);
	else
		fprintf(stderr, "warrenctl: %s\n", mq_error(s->mq));
	session_close(s);
	return -1;
}

static const struct header *header_of(const struct delivery *d,
				      const char *name)
{
	return delivery_header(d, name);
}

/* An integer header's value, or -1. */
static long long int_header(const struct delivery *d, const char *name)
{
	const struct header *h = header_of(d, name);
	char *end;
	long long v;

	if (h == NULL)
		return -1;
	errno = 0;
	v = strtoll(h->value, &end, 10);
	return errno == 0 && end != h->value && *end == '\0' ? v : -1;
}

/* Unix seconds as UTC ISO 8601, "-" for -1. */
static void iso_time(long long t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t < 0 || gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "-");
}

/* The last line of text that is not empty, shortened for the table. */
static char *last_line(const char *s, size_t len)
{
	size_t end = len, start;

	while (end > 0 && (s[end - 1] == '\n' || s[end - 1] == '\r'))
		end--;
	start = end;
	while (start > 0 && s[start - 1] != '\n')
		start--;
	return ctl_printable(s + start, end - start, STDERR_WIDTH);
}

static char *header_cell(const struct delivery *d, const char *name, size_t max)
{
	const struct header *h = header_of(d, name);

	return h != NULL ? ctl_printable(h->value, h->len, max) : xstrdup("-");
}

static void table_head(void)
{
	printf("%-*s  %8s  %-20s  %-*s  %-*s  %s\n", ID_WIDTH, "MESSAGE",
	       "ATTEMPTS", "FAILED-AT", REASON_WIDTH, "REASON", REASON_WIDTH,
	       "REPLAYED-FROM", "STDERR");
}

/*
 * Why d is parked and since when: warrend's x-warren-reason and
 * x-warren-failed-at, or for a message the broker dead-lettered there
 * (a quorum queue's delivery limit, a policy) the reason and time of its
 * latest x-death entry. *reason is NULL when neither says.
 */
static void parked_why(const struct delivery *d, const struct header **reason,
		       struct death *x, long long *at)
{
	*reason = header_of(d, "x-warren-reason");
	*at = int_header(d, "x-warren-failed-at");
	memset(x, 0, sizeof(*x));
	if (*reason == NULL && death_of(d, x) == 0 && *at < 0)
		*at = x->time;
}

static void table_row(const struct delivery *d)
{
	const struct header *err = header_of(d, "x-warren-stderr");
	char *id =
	    d->message_id
		? ctl_printable(d->message_id, strlen(d->message_id), ID_WIDTH)
		: xstrdup("-");
	char *from = header_cell(d, "x-warren-replayed-from", REASON_WIDTH);
	char *tail =
	    err != NULL ? last_line(err->value, err->len) : xstrdup("-");
	long long attempts = int_header(d, "x-warren-attempts"), at;
	char when[32], att[24], *reason;
	const struct header *r;
	struct death x;

	parked_why(d, &r, &x, &at);
	if (r != NULL)
		reason = ctl_printable(r->value, r->len, REASON_WIDTH);
	else if (x.reason != NULL)
		reason =
		    ctl_printable(x.reason, strlen(x.reason), REASON_WIDTH);
	else
		reason = xstrdup("-");
	death_free(&x);
	iso_time(at, when, sizeof(when));
	if (attempts >= 0)
		snprintf(att, sizeof(att), "%lld", attempts);
	else
		snprintf(att, sizeof(att), "-");
	printf("%-*s  %8s  %-20s  %-*s  %-*s  %s\n", ID_WIDTH, id, att, when,
	       REASON_WIDTH, reason, REASON_WIDTH, from, tail);
	free(id);
	free(reason);
	free(from);
	free(tail);
}

static struct json *header_json(const struct delivery *d, const char *name)
{
	const struct header *h = header_of(d, name);

	return h != NULL ? json_string_len(h->value, h->len) : NULL;
}

/* One parked message as a JSON object, on one line. */
static void json_row(const struct delivery *d, bool first)
{
	struct json *o = json_new_object();
	long long attempts = int_header(d, "x-warren-attempts"), at;
	char when[32], *text;
	const struct header *r;
	struct death x;

	parked_why(d, &r, &x, &at);
	iso_time(at, when, sizeof(when));
	json_set(o, "message_id", json_string(d->message_id));
	json_set(o, "reason",
		 r != NULL	    ? json_string_len(r->value, r->len)
		 : x.reason != NULL ? json_string(x.reason)
				    : NULL);
	/* set only for a message the broker dead-lettered */
	json_set(o, "dead_lettered_from",
		 x.queue != NULL ? json_string(x.queue) : NULL);
	death_free(&x);
	json_set(o, "attempts", attempts >= 0 ? json_int(attempts) : NULL);
	json_set(o, "failed_at", at >= 0 ? json_int(at) : NULL);
	json_set(o, "failed_at_utc", at >= 0 ? json_string(when) : NULL);
	json_set(o, "stderr", header_json(d, "x-warren-stderr"));
	json_set(o, "replayed_from", header_json(d, "x-warren-replayed-from"));
	json_set(o, "body_bytes", json_uint(d->body_len));
	text = json_text(o);
	printf("%s%s", first ? "\n" : ",\n", text);
	free(text);
	json_free(o);
}

int replay_list(const struct replay_opts *o)
{
	struct session s;
	uint64_t last = 0;
	long n = 0, want;
	int rc = 0;

	if (session_open(&s, o) != 0)
		return 1;
	/* what was there when we started: new arrivals wait for next time */
	want = (long)s.count;
	if (o->limit > 0 && o->limit < want)
		want = o->limit;
	if (o->json)
		printf("[");
	else if (s.count > 0)
		table_head();
	while (n < want) {
		struct delivery *d;
		int r = next_parked(&s, &d);

		if (r < 0)
			rc = 1;
		if (r <= 0)
			break;
		last = d->tag;
		if (o->json)
			json_row(d, n == 0);
		else
			table_row(d);
		delivery_free(d);
		n++;
	}
	if (o->json)
		printf("%s]\n", n > 0 ? "\n" : "");
	else if (n == 0 && rc == 0)
		printf("no parked messages in %s\n", s.parked);
	else if (rc == 0)
		printf("%ld parked message%s in %s%s\n", n, n == 1 ? "" : "s",
		       s.parked,
		       n < (long)s.count ? " shown (--limit), more follow"
					 : "");
	/* all back where they were, in one go */
	if (rc == 0 && mq_requeue_upto(s.mq, last) != 0) {
		fprintf(stderr, "warrenctl: %s: %s\n", s.parked,
			mq_error(s.mq));
		rc = 1;
	}
	session_close(&s);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "warrenctl: stdout: %s\n", strerror(errno));
		rc = 1;
	}
	return rc;
}

/*
 * d's reason: warrend's x-warren-reason, else the broker's from x-death;
 * NULL when neither says. Caller frees.
 */
static char *reason_of(const struct delivery *d, size_t *len)
{
	const struct header *h = header_of(d, "x-warren-reason");
	struct death x;
	char *r;

	if (h != NULL) {
		r = xcalloc(h->len + 1, 1);
		memcpy(r, h->value, h->len);
		*len = h->len;
		return r;
	}
	if (death_of(d, &x) != 0)
		return NULL;
	r = x.reason;
	x.reason = NULL;
	death_free(&x);
	*len = strlen(r);
	return r;
}

/* Publish d's copy to queue, wait for its confirm. 0, or -1. */
static int republish(struct mq *m, const char *queue, const struct delivery *d)
{
	size_t len = 0;
	char *reason = reason_of(d, &len);
	struct header from = {0};
	struct publish p = {0};
	int r;

	p.routing_key = queue;
	p.body = d->body;
	p.body_len = d->body_len;
	p.like = d;
	p.drop_headers = parking_headers;
	if (reason != NULL) {
		from.name = (char *)"x-warren-replayed-from";
		from.value = reason;
		from.len = len;
		p.headers = &from;
		p.nheaders = 1;
	}
	r = mq_publish(m, &p);
	free(reason);
	return r != 0 ? -1 : mq_wait_confirms(m, CONFIRM_TIMEOUT_MS);
}

/* Whether --reason picks d. */
static bool picked(const struct replay_opts *o, const struct delivery *d)
{
	size_t len = 0;
	char *h;
	bool yes;

	if (o->reason == NULL)
		return true;
	h = reason_of(d, &len);
	yes = h != NULL && memmem(h, len, o->reason, strlen(o->reason)) != NULL;
	free(h);
	return yes;
}

struct progress {
	bool on; /* stderr is a terminal */
	bool shown;
	int64_t last;
	long total;
};

static void progress(struct progress *pr, long done, bool final)
{
	int64_t now = now_ms();

	if (!pr->on || (!final && now - pr->last < PROGRESS_MS))
		return;
	pr->last = now;
	fprintf(stderr, "\rreplayed %ld/%ld", done, pr->total);
	pr->shown = true;
	if (final)
		fputc('\n', stderr);
}

/* The queue to replay to exists, and publishing is confirmed: 0, or 1
 * said on stderr. */
static int replay_ready(struct session *s, const struct replay_opts *o)
{
	int r = mq_declare_passive(s->mq, o->queue, NULL);

	if (r == 1) {
		fprintf(stderr,
			"warrenctl: there is no queue %s to replay to "
			"(warrend declares it when it starts)\n",
			o->queue);
		return 1;
	}
	if (r != 0 || mq_confirm_select(s->mq) != 0) {
		fprintf(stderr, "warrenctl: %s\n", mq_error(s->mq));
		return 1;
	}
	return 0;
}

/* A replay's progress through the parked queue. */
struct run {
	struct progress pr;
	uint64_t unsettled; /* the last tag held back, not acked */
	long replayed, kept, seen;
};

/* Replay d (or keep it, when --reason does not pick it): 0, or 1 said
 * on stderr (the replay stops). d is freed. */
static int replay_one(struct session *s, const struct replay_opts *o,
		      struct run *run, struct delivery *d)
{
	const char *fail = NULL, *where = NULL;

	if (!picked(o, d)) {
		run->unsettled = d->tag;
		run->kept++;
	} else if (republish(s->mq, o->queue, d) != 0) {
		run->unsettled = d->tag;
		fail = o->queue;
		where = s->parked;
	} else if (mq_ack(s->mq, d->tag) != 0) {
		fail = s->parked; /* the copy is out: the original comes back
				   * once */
	} else {
		run->replayed++;
		progress(&run->pr, run->replayed, false);
	}
	delivery_free(d);
	if (fail == NULL)
		return 0;
	if (run->pr.shown)
		fputc('\n', stderr);
	fprintf(stderr, "warrenctl: %s: %s", fail, mq_error(s->mq));
	if (where != NULL)
		fprintf(stderr, " (the message stays in %s)", where);
	fputc('\n', stderr);
	return 1;
}

static void replay_said(const struct session *s, const struct replay_opts *o,
			const struct run *run)
{
	printf("replayed %ld message%s from %s to %s", run->replayed,
	       run->replayed == 1 ? "" : "s", s->parked, o->queue);
	if (o->reason != NULL) {
		char *t = ctl_printable(o->reason, strlen(o->reason), 80);

		printf("; kept %ld whose reason does not contain \"%s\"",
		       run->kept, t);
		free(t);
	}
	printf("\n");
}

int replay_run(const struct replay_opts *o)
{
	struct session s;
	struct run run = {0};
	int rc = 0, r;

	if (session_open(&s, o) != 0)
		return 1;
	if (replay_ready(&s, o) != 0) {
		session_close(&s);
		return 1;
	}
	run.pr.on = isatty(2);
	run.pr.total = (long)s.count;
	if (o->limit > 0 && o->reason == NULL && o->limit < run.pr.total)
		run.pr.total = o->limit;
	/* at most what was there when we started: never our own copies */
	while (rc == 0 && run.seen < (long)s.count &&
	       (o->limit == 0 || run.replayed < o->limit)) {
		struct delivery *d;

		r = next_parked(&s, &d);
		if (r <= 0) {
			rc = r < 0;
			break;
		}
		run.seen++;
		rc = replay_one(&s, o, &run, d);
	}
	if (rc == 0)
		progress(&run.pr, run.replayed, true);
	if (!mq_lost(s.mq) && mq_requeue_upto(s.mq, run.unsettled) != 0) {
		fprintf(stderr, "warrenctl: %s: %s\n", s.parked,
			mq_error(s.mq));
		rc = 1;
	}
	replay_said(&s, o, &run);
	session_close(&s);
	return rc;
}
