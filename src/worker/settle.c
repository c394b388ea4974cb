/*
 * settle.c: what becomes of a message once its outcome is known. An ack;
 * a reject; or a copy (retry or parking) published on the publishing
 * channel and confirmed before the original is acked. Steps never block:
 * the worker's loop calls settle_run() each turn, so heartbeats, signals
 * and the master are served while a copy waits out a blocked broker.
 * Transient failures (connection lost, confirm timeout) give the original
 * back to the broker; permanent ones (a nack, a refused declare or
 * publish) escalate: a retry becomes parking, parking becomes a reject.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>

#include "worker/worker_int.h"

#define CONFIRM_TIMEOUT_MS 30000
/* Past shutdown_timeout, a published copy's confirm is waited for this
 * much longer before the original goes back (settle_abandon). */
#define ABANDON_GRACE_MS 2000
#define RETRY_HEADERS_MAX                                                      \
	120000 /* of a 131072-byte frame: room for x-death                     \
		*/

static const char *id_of(const struct settler *s)
{
	return s->d->message_id ? s->d->message_id : "-";
}

void settle_init(struct settler *s, struct mq *m, const struct queue_conf *q)
{
	memset(s, 0, sizeof(*s));
	s->mq = m;
	s->q = q;
}

/* A cause explained once per worker; later messages get a debug line. */
static void tell_once(struct settler *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void tell_once(struct settler *s, const char *fmt, ...)
{
	char line[800];
	va_list ap;
	int i;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	for (i = 0; i < s->nsaid; i++)
		if (strncmp(s->said[i], mq_error(s->mq),
			    sizeof(s->said[0]) - 1) == 0)
			break;
	if (i < s->nsaid) {
		log_debug("%s", line);
		return;
	}
	if (s->nsaid < SETTLE_SAID_MAX)
		snprintf(s->said[s->nsaid++], sizeof(s->said[0]), "%s",
			 mq_error(s->mq));
	log_warnx("%s", line);
}

/* The side queues are declared again: one was deleted meanwhile. */
static void forget_declared(struct settler *s)
{
	for (int i = 0; i < s->ndeclared; i++)
		free(s->declared[i]);
	s->ndeclared = 0;
}

void settle_free(struct settler *s)
{
	forget_declared(s);
	result_clear(&s->result);
}

void settle_result(struct settler *s, struct result *r)
{
	result_clear(&s->result);
	s->result = *r;
	memset(r, 0, sizeof(*r));
}

/* Declare a side queue once per worker life; refusals are not kept. */
static int declare_once(struct settler *s, const char *name, int ttl)
{
	for (int i = 0; i < s->ndeclared; i++)
		if (strcmp(s->declared[i], name) == 0)
			return 0;
	if (ttl > 0 ? mq_declare_delay(s->mq, name, s->q->name, ttl)
		    : mq_declare_named(s->mq, name, true, QUEUE_CLASSIC))
		return -1;
	if (s->ndeclared < SETTLE_DECLARED_MAX)
		s->declared[s->ndeclared++] = xstrdup(name);
	return 0;
}

static void str_header(struct header *h, const char *name, const char *v)
{
	h->name = (char *)name;
	h->value = (char *)v;
	h->len = strlen(v);
	h->integer = false;
}

/* An integer header; its text lives in buf. */
static void num_header(struct header *h, const char *name, long long v,
		       char *buf, size_t len)
{
	snprintf(buf, len, "%lld", v);
	str_header(h, name, buf);
	h->integer = true;
}

/* Text of the integer headers a parking copy adds. */
struct park_text {
	char attempts[32], at[32], cpu[32], rss[32];
};

/*
 * A parking copy's headers: attempts, reason and time always; stderr and
 * cost too unless the original's headers are near the frame size.
 */
static int park_headers(const struct settler *s, struct header *h,
			struct park_text *t)
{
	int n = 0;

	num_header(&h[n++], "x-warren-attempts", s->attempt, t->attempts,
		   sizeof(t->attempts));
	str_header(&h[n++], "x-warren-reason", s->o.reason);
	num_header(&h[n++], "x-warren-failed-at", (long long)time(NULL), t->at,
		   sizeof(t->at));
	if (mq_headers_size(s->d) >= RETRY_HEADERS_MAX)
		return n;
	str_header(&h[n++], "x-warren-stderr", s->tail);
	if (s->cpu_ms >= 0)
		num_header(&h[n++], "x-warren-cpu-ms", s->cpu_ms, t->cpu,
			   sizeof(t->cpu));
	if (s->max_rss_kb >= 0)
		num_header(&h[n++], "x-warren-max-rss-kb", s->max_rss_kb,
			   t->rss, sizeof(t->rss));
	return n;
}

/* Publish the copy the outcome calls for; 0 once it is on its way. */
static int publish_copy(struct settler *s)
{
	struct publish p = {0};
	struct park_text t;
	char name[300];
	struct header h[6];
	int ttl = 0;

	if (s->o.kind == OUTCOME_REQUEUED) {
		/* back to its own queue, the attempt it was (unspent) */
		snprintf(name, sizeof(name), "%s", s->q->name);
		num_header(&h[0], "x-warren-attempt", s->attempt, t.attempts,
			   sizeof(t.attempts));
		p.nheaders = 1;
		ttl = -1; /* its own queue: declared by the worker */
	} else if (s->o.kind == OUTCOME_RETRY) {
		snprintf(name, sizeof(name), "%s.retry.%ds", s->q->name,
			 s->o.delay);
		ttl = s->o.delay;
		num_header(&h[0], "x-warren-attempt", s->attempt + 1,
			   t.attempts, sizeof(t.attempts));
		p.nheaders = 1;
	} else {
		snprintf(name, sizeof(name), "%s.failed", s->q->name);
		p.nheaders = park_headers(s, h, &t);
		/* a replayed message starts counting its attempts afresh */
		p.drop_header = "x-warren-attempt";
	}
	if (ttl >= 0 && declare_once(s, name, ttl) != 0)
		return -1;
	p.routing_key = name;
	p.body = s->d->body;
	p.body_len = s->d->body_len;
	p.like = s->d;
	p.headers = h;
	return mq_publish(s->mq, &p);
}

void settle_start(struct settler *s, struct delivery *d, int attempt,
		  const struct outcome *o, const char *tail,
		  const struct handler_result *r)
{
	s->d = d;
	s->cpu_ms = r != NULL && r->has_cpu ? r->cpu_ms : -1;
	s->max_rss_kb = r != NULL && r->has_rss ? r->max_rss_kb : -1;
	s->attempt = attempt;
	s->o = *o;
	snprintf(s->tail, sizeof(s->tail), "%s", tail ? tail : "");
	s->phase = SETTLE_BEGIN;
	s->abandon_at = 0;
	/* a body over max_body that no spool file took: no copy can
	 * carry it, the broker's dead-letter target may */
	s->rejected = d->body_over > 0 && d->body == NULL;
	s->redeclared = false;
	s->reply = reply_due(s->q, d);
	s->replied = false;
	s->unspent = false;
	result_clear(&s->result);
}

/* Whether the outcome calls for a retry or parking copy. */
static bool copy_due(const struct settler *s)
{
	return s->o.kind == OUTCOME_RETRY || s->o.kind == OUTCOME_REQUEUED ||
	       (s->o.kind == OUTCOME_FAILED && !s->rejected);
}

/* The reply, once: ok with the result, or failed with the reason. A
 * reply the broker refuses outright is said, and the message settled
 * without it. 0, or -1 when the connection is lost. */
static int send_reply(struct settler *s)
{
	if (!s->reply || s->replied ||
	    (s->o.kind != OUTCOME_ACK && s->o.kind != OUTCOME_FAILED))
		return 0; /* a retried or requeued message runs again */
	if (reply_publish(s->mq, s->d, s->o.kind == OUTCOME_ACK, s->o.reason,
			  s->result.buf, s->result.len) != 0) {
		if (mq_lost(s->mq))
			return -1;
		tell_once(s, "%s: cannot send its reply to %s: %s", id_of(s),
			  s->d->reply_to, mq_error(s->mq));
	}
	s->replied = true;
	return 0;
}

/* The original's end once every publish is confirmed. */
static int settle_original(struct settler *s)
{
	return s->rejected ? mq_nack(s->mq, s->d->tag, false)
			   : mq_ack(s->mq, s->d->tag);
}

/*
 * A retry comes back through a dead-letter exchange, which adds x-death:
 * headers near the frame size would then make a content header no client
 * can read (rabbitmq-c refuses frames over frame_max). Such a message is
 * parked at once instead.
 */
static bool no_room_to_retry(struct settler *s)
{
	size_t n = mq_headers_size(s->d);

	if (n < RETRY_HEADERS_MAX)
		return false;
	log_warnx("%s: its headers take %zu bytes, too near the frame size "
		  "for a retry (the broker adds x-death): %s it instead",
		  id_of(s), n, s->q->park ? "parking" : "rejecting");
	return true;
}

/* The last step: the original acked, nacked or rejected. */
static enum settle_state finish(struct settler *s, int rc)
{
	s->phase = SETTLE_FINISHED;
	return rc == 0 ? SETTLE_DONE : SETTLE_LOST;
}

/* The copy cannot ever be made: a retry is parked, parking rejects. */
static enum settle_state refused(struct settler *s)
{
	if (s->o.kind == OUTCOME_REQUEUED) {
		tell_once(s,
			  "%s: cannot put a copy back in %s: %s; requeued "
			  "it instead",
			  id_of(s), s->q->name, mq_error(s->mq));
		return finish(s, mq_nack(s->mq, s->d->tag, true));
	}
	if (s->o.kind == OUTCOME_RETRY) {
		tell_once(s, "%s: cannot schedule a retry: %s; %s it instead",
			  id_of(s), mq_error(s->mq),
			  s->q->park ? "parking" : "rejecting");
		s->o.kind = OUTCOME_FAILED;
		if (!s->q->park) {
			s->rejected = true;
			return finish(s, mq_nack(s->mq, s->d->tag, false));
		}
		s->phase = SETTLE_COPY;
		return settle_run(s); /* once: a parking copy cannot retry */
	}
	tell_once(s,
		  "%s: cannot park it in %s.failed: %s; rejected it instead "
		  "(a dead-letter policy on %s keeps it, else the broker drops "
		  "it)",
		  id_of(s), s->q->name, mq_error(s->mq), s->q->name);
	s->rejected = true;
	s->phase = SETTLE_FINISHED;
	return mq_nack(s->mq, s->d->tag, false) == 0 ? SETTLE_DONE
						     : SETTLE_LOST;
}

enum settle_state settle_run(struct settler *s)
{
	switch (s->phase) {
	case SETTLE_BEGIN:
		if (s->o.kind == OUTCOME_RETRY && no_room_to_retry(s))
			s->o.kind = OUTCOME_FAILED;
		if (s->o.kind == OUTCOME_ACK && !s->reply)
			return finish(s, mq_ack(s->mq, s->d->tag));
		/* a quorum queue counts a requeue as a delivery: a message
		 * put back unspent goes back as a copy instead */
		if (s->o.kind == OUTCOME_REQUEUED &&
		    !(s->unspent && s->q->type == QUEUE_QUORUM))
			return finish(s, mq_nack(s->mq, s->d->tag, true));
		if (s->o.kind == OUTCOME_FAILED && !s->q->park) {
			/* the broker dead-letters it by policy, or drops it */
			s->rejected = true;
			if (!s->reply)
				return finish(s,
					      mq_nack(s->mq, s->d->tag, false));
		}
		s->phase = SETTLE_COPY;
		/* fall through */
	case SETTLE_COPY:
		if (mq_blocked(s->mq) != NULL)
			return SETTLE_WAIT; /* until connection.unblocked */
		if (copy_due(s) && publish_copy(s) != 0)
			return mq_lost(s->mq) ? SETTLE_LOST : refused(s);
		/* the reply after the copy, both confirmed before the ack */
		if (send_reply(s) != 0)
			return SETTLE_LOST;
		s->phase = SETTLE_CONFIRM;
		s->deadline = now_ms() + CONFIRM_TIMEOUT_MS;
		/* fall through */
	case SETTLE_CONFIRM:
		switch (mq_confirm_state(s->mq)) {
		case MQ_CONFIRM_OK:
			return finish(s, settle_original(s));
		case MQ_CONFIRM_REFUSED:
			if (!copy_due(s)) {
				/* the reply alone was refused */
				tell_once(
				    s, "%s: the broker refused its reply: %s",
				    id_of(s), mq_error(s->mq));
				return finish(s, settle_original(s));
			}
			return refused(s);
		case MQ_CONFIRM_UNROUTED:
			/* its queue was deleted since we declared it: once
			 * more, declared anew */
			if (s->redeclared)
				return refused(s);
			s->redeclared = true;
			log_info(
			    "%s: the broker could not route its copy (a "
			    "queue deleted meanwhile?); declaring it again",
			    id_of(s));
			forget_declared(s);
			s->phase = SETTLE_COPY;
			return settle_run(s);
		case MQ_CONFIRM_LOST:
			return SETTLE_LOST;
		case MQ_CONFIRM_PENDING:
			break;
		}
		if (mq_blocked(s->mq) != NULL) {
			/* a blocked broker answers when it unblocks */
			s->deadline = now_ms() + CONFIRM_TIMEOUT_MS;
			return SETTLE_WAIT;
		}
		if (now_ms() < s->deadline)
			return SETTLE_WAIT;
		log_warnx("%s: no publisher confirm within %d s; it goes back "
			  "to the queue",
			  id_of(s), CONFIRM_TIMEOUT_MS / 1000);
		(void)mq_nack(s->mq, s->d->tag, true);
		return SETTLE_LOST; /* the channel is suspect: start afresh */
	case SETTLE_FINISHED:
		return SETTLE_DONE;
	}
	return SETTLE_DONE;
}

int settle_next_timer(const struct settler *s)
{
	int64_t left;

	if (s->phase == SETTLE_COPY)
		return mq_blocked(s->mq) != NULL ? -1 : 0;
	if (s->phase != SETTLE_CONFIRM)
		return -1;
	left = s->deadline - now_ms();
	if (s->abandon_at != 0 && s->abandon_at - now_ms() < left)
		left = s->abandon_at - now_ms();
	return left < 0 ? 0 : left > 60000 ? 60000 : (int)left;
}

/* What the original waits for: its copy, or the reply. */
static const char *copy_name(const struct settler *s)
{
	return s->o.kind == OUTCOME_RETRY      ? "retry copy"
	       : s->o.kind == OUTCOME_ACK      ? "reply"
	       : s->o.kind == OUTCOME_REQUEUED ? "copy"
					       : "parking copy";
}

/*
 * A published copy not yet confirmed at shutdown gets ABANDON_GRACE_MS
 * more: given back before the broker answered, the original may run
 * again with its copy parked (or retried) as well.
 */
static bool confirm_may_come(struct settler *s)
{
	if (s->phase != SETTLE_CONFIRM ||
	    mq_confirm_state(s->mq) != MQ_CONFIRM_PENDING)
		return false;
	if (s->abandon_at == 0)
		s->abandon_at = now_ms() + ABANDON_GRACE_MS;
	return now_ms() < s->abandon_at;
}

bool settle_abandon(struct settler *s)
{
	/* settled already, or the copy is confirmed: settle_run() acks the
	 * original as planned; giving it back would run it again */
	if (s->phase == SETTLE_FINISHED ||
	    (s->phase == SETTLE_CONFIRM &&
	     mq_confirm_state(s->mq) == MQ_CONFIRM_OK))
		return false;
	if (confirm_may_come(s))
		return false;
	if (s->phase == SETTLE_CONFIRM)
		log_warnx("%s: stopping with its %s published but not "
			  "confirmed after %d s more; it goes back to the "
			  "queue and may run again",
			  id_of(s), copy_name(s), ABANDON_GRACE_MS / 1000);
	else
		log_warnx("%s: stopping before its %s could be published; "
			  "it goes back to the queue",
			  id_of(s), copy_name(s));
	(void)mq_nack(s->mq, s->d->tag, true);
	s->o.kind = OUTCOME_REQUEUED;
	snprintf(s->o.reason, sizeof(s->o.reason), "stopped at shutdown");
	s->phase = SETTLE_FINISHED;
	return true;
}

void settle_log(const struct settler *s, const struct handler_result *r,
		int64_t started)
{
	struct log_fields lf = LOG_FIELDS_INIT;
	char more[64] = "";

	lf.message_id = s->d->message_id;
	lf.outcome = outcome_name(s->o.kind);
	lf.duration_ms = (long)(now_ms() - started);
	if (r->has_cpu)
		lf.cpu_ms = r->cpu_ms;
	if (r->has_rss)
		lf.max_rss_kb = r->max_rss_kb;
	if (r->started && !r->answered && WIFEXITED(r->wait_status))
		lf.exit_status = WEXITSTATUS(r->wait_status);
	if (s->o.kind == OUTCOME_RETRY)
		snprintf(more, sizeof(more), ", attempt %d, again in %d s",
			 s->attempt, s->o.delay);
	else if (s->o.kind == OUTCOME_FAILED)
		snprintf(more, sizeof(more), ", attempt %d, %s", s->attempt,
			 s->rejected ? "rejected" : "parked");
	log_fields(s->o.kind == OUTCOME_ACK ? LOG_INFO : LOG_WARNING, &lf,
		   "%s %s, %s, %ld ms%s", id_of(s), lf.outcome, s->o.reason,
		   lf.duration_ms, more);
}
