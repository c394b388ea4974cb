/*
 * message.c: a worker's message from delivery to settled: its attempt,
 * the master's marks on it, the handler started and limited, its outcome
 * handed to settle.c, and what the broker's side does meanwhile (a closed
 * channel, a cancel).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "worker/worker_int.h"

/*
 * The attempt this delivery is: x-warren-attempt (1 when absent), plus, on
 * a quorum queue, the deliveries of this copy that ended without an
 * outcome (x-delivery-count), so a message that kills its worker every
 * time still runs out of attempts.
 */
static int attempt_of(const struct worker *w, int *lost)
{
	const struct header *h = delivery_header(w->d, "x-warren-attempt");
	long n = 1, c;

	if (h != NULL) {
		n = strtol(h->value, NULL, 10);
		if (n < 1 || n > 1000000)
			n = 1;
	}
	*lost = 0;
	h = delivery_header(w->d, "x-delivery-count");
	if (w->q->type == QUEUE_QUORUM && h != NULL) {
		c = strtol(h->value, NULL, 10);
		if (c > 0 && c < 1000000)
			*lost = (int)c;
	}
	return (int)n + *lost;
}

static char report_of(enum outcome_kind k)
{
	switch (k) {
	case OUTCOME_ACK:
		return REPORT_ACK;
	case OUTCOME_RETRY:
		return REPORT_RETRY;
	case OUTCOME_FAILED:
		return REPORT_FAILED;
	default:
		return REPORT_REQUEUED;
	}
}

/* Apply o to the message in hand; the loop carries it to its end. */
static void begin_settling(struct worker *w, const struct outcome *o,
			   const char *tail)
{
	w->settling = true;
	settle_start(&w->set, w->d, w->attempt, o, tail, &w->r);
}

/* A persistent handler's answer is taken: what it wrote on stderr and
 * what it cost, read only now (after the ack, where there is one). */
static void after_answer(struct worker *w)
{
	struct log_fields lf = LOG_FIELDS_INIT;

	lf.message_id = w->d->message_id;
	persistent_stderr(w->p, &lf);
	persistent_cost(w->p, &w->r);
}

/* A step of the settling; once done, tell the master and let go. */
void message_settle(struct worker *w)
{
	switch (settle_run(&w->set)) {
	case SETTLE_WAIT:
		return;
	case SETTLE_LOST:
		/* said once per message: a replayed outcome lost again (a
		 * long alarm) is the same story */
		(w->replaying ? log_debug : log_warnx)(
		    "%s: lost the broker while settling it (%s); the "
		    "broker gives it back, to be settled %s without "
		    "running again",
		    w->d->message_id ? w->d->message_id : "-", mq_error(w->mq),
		    outcome_name(w->set.o.kind));
		report_pending(w);
		report_outcome(w, REPORT_REQUEUED, -1, -1, -1);
		report_and_exit(w, WORKER_EXIT_CONNECT, mq_error(w->mq));
	case SETTLE_DONE:
		break;
	}
	log_hold(); /* its lines in one write */
	if (w->p != NULL)
		after_answer(w); /* the ack is out: now */
	settle_log(&w->set, &w->r, w->started);
	log_release();
	report_outcome(w,
		       w->tempfail ? REPORT_TEMPFAIL : report_of(w->set.o.kind),
		       w->ran_ms, w->r.has_cpu ? w->r.cpu_ms : -1, w->wait_ms);
	w->tempfail = false;
	delivery_free(w->d);
	w->d = NULL;
	log_set_trace(NULL);
	w->settling = w->replaying = false;
	if (w->resume_due)
		consume_resume(w);
	else if (w->paused && !w->retiring)
		report_consuming(w);
}

/* Settle without running the handler: o says why. */
static void settle_without_running(struct worker *w, enum outcome_kind k,
				   const char *reason)
{
	struct outcome o = {k, "", 0};

	snprintf(o.reason, sizeof(o.reason), "%s", reason);
	memset(&w->r, 0, sizeof(w->r));
	begin_settling(w, &o, "");
}

/*
 * The master's notes may say that this message killed workers, or that
 * the broker took attempts of it back: then it is settled unrun. true if
 * so.
 */
static bool marked_by_master(struct worker *w, int lost)
{
	const struct mark *k = ledger_find(&w->marks, w->d->key);
	struct handler_result r = {0};
	struct outcome o;

	if (k == NULL)
		return false;
	if (k->pending > 0 && k->pending <= OUTCOME_REQUEUED) {
		/* its handler ran; only the outcome was not applied */
		o.kind = (enum outcome_kind)(k->pending - 1);
		snprintf(o.reason, sizeof(o.reason), "%s", k->reason);
		o.delay = k->delay;
		w->attempt = k->attempt;
		memset(&w->r, 0, sizeof(w->r));
		begin_settling(w, &o, "");
		w->replaying = true;
		return true;
	}
	if (k->deaths >= LEDGER_DEATHS_MAX) {
		log_warnx("%s: %d workers died holding it; parking it without "
			  "running the handler",
			  w->d->message_id ? w->d->message_id : "-", k->deaths);
		settle_without_running(w, OUTCOME_FAILED, "worker died");
		return true;
	}
	if (k->lost <= 0)
		return false;
	/* attempts the broker took back count as failed timeouts (a quorum
	 * queue's x-delivery-count has counted them already) */
	w->attempt += (k->lost > lost ? k->lost - lost : 0) - 1;
	r.started = r.timed_out = r.consumer_timeout = true;
	r.timeout = w->ct_ms / 1000;
	o = outcome_of(&r, w->attempt, &w->q->retry);
	w->r = r;
	begin_settling(w, &o, "");
	return true;
}

/*
 * A body over max_body is never run (amqp/oversize.c spooled it, or could
 * not): failed for good, parked or rejected by settle.c. true if so.
 */
static bool oversize(struct worker *w)
{
	struct outcome o;

	if (w->d->body_over == 0)
		return false;
	o = outcome_oversize(w->d, w->q->max_body);
	if (w->d->unkept != NULL)
		log_warnx("%s: its body could not be kept: %s",
			  w->d->message_id ? w->d->message_id : "-",
			  w->d->unkept);
	w->attempt--; /* this delivery never ran */
	settle_without_running(w, o.kind, o.reason);
	return true;
}

/* Stop the handler before the consumer_timeout in force. */
void message_limit(struct worker *w)
{
	int grace, ct = w->ct_ms;
	int64_t at =
	    consumer_deadline(w->d->received, ct, w->q->kill_grace, &grace);

	if (w->p != NULL)
		persistent_limit(w->p, at, grace, (ct + 500) / 1000);
	else
		handler_limit(w->h, at, grace, (ct + 500) / 1000);
}

/* The journal records of this message carry its TRACE_ID. */
static void trace_journal(const struct delivery *d)
{
	struct trace t;

	trace_of(d, &t);
	log_set_trace(t.trace_id);
}

/* A handler works on the message in hand. */
bool message_running(const struct worker *w)
{
	return w->h != NULL || (w->p != NULL && w->d != NULL && !w->settling);
}

/*
 * A configuration problem, not the message's fault. Stop consuming
 * first, so the message is not handed straight back to us: on a quorum
 * queue every return counts as a delivery.
 */
static void __attribute__((noreturn))
cannot_start(struct worker *w, const char *err)
{
	if (w->d == NULL) {
		log_fields(LOG_ERR, NULL, "configuration problem: %s", err);
		report_and_exit(w, WORKER_EXIT_HANDLER, err);
	}
	log_fields(LOG_ERR, NULL,
		   "%s: configuration problem: %s; message requeued",
		   w->d->message_id ? w->d->message_id : "-", err);
	mq_cancel(w->mq);
	mq_nack(w->mq, w->d->tag, true);
	report_outcome(w, REPORT_REQUEUED, -1, -1, -1);
	delivery_free(w->d);
	w->d = NULL;
	log_set_trace(NULL);
	report_and_exit(w, WORKER_EXIT_HANDLER, err);
}

/* Give the message to a new handler, or to the one kept. */
static int hand_over(struct worker *w, char **env, char *err, size_t len)
{
	if (w->p != NULL)
		return persistent_send(w->p, env, w->d->body, w->d->body_len,
				       err, len);
	w->h = handler_start(w->q, env, w->d->body, w->d->body_len, err, len);
	return w->h != NULL ? 0 : -1;
}

/*
 * A message that waited in the prefetch (prefetch > 1) has spent part of
 * its consumer_timeout there: past half of the handler's budget, it goes
 * back to the queue unrun, not to be stopped soon and counted failed.
 */
static bool waited_too_long(struct worker *w)
{
	int grace;
	/* the handler's whole budget, had the message not waited */
	int64_t budget =
	    consumer_deadline(0, w->ct_ms, w->q->kill_grace, &grace);

	if (w->q->prefetch <= 1 || now_ms() - w->d->received < budget / 2)
		return false;
	/* explained once per worker; each message after at debug */
	(w->told_prefetch ? log_debug : log_warnx)(
	    "%s: waited %lld ms in the prefetch, too near the "
	    "consumer_timeout (%d ms): back to the queue unrun",
	    w->d->message_id ? w->d->message_id : "-",
	    (long long)(now_ms() - w->d->received), w->ct_ms);
	w->told_prefetch = true;
	mq_nack(w->mq, w->d->tag, true);
	report_outcome(w, REPORT_REQUEUED, -1, -1, -1);
	delivery_free(w->d);
	w->d = NULL;
	log_set_trace(NULL);
	return true;
}

/* CLOCK_REALTIME in ms: what a message's timestamp is measured by. */
static int64_t real_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start_handler(struct worker *w)
{
	char **env, err[512];
	int lost, started;
	bool plain;

	w->attempt = attempt_of(w, &lost);
	/* the master learns which message we hold: at once for one it has
	 * marked or that is out of attempts (settled unrun), else once the
	 * handler has it, the frame's way not held up by the report */
	plain = w->attempt <= w->q->retry.attempts && w->d->body_over == 0 &&
		ledger_find(&w->marks, w->d->key) == NULL;
	if (!plain)
		report_holding(w);
	w->started = now_ms();
	w->ran_ms = w->wait_ms = -1;
	w->slow_at = 0;
	if (marked_by_master(w, lost))
		return;
	if (oversize(w))
		return;
	if (waited_too_long(w))
		return;
	if (w->attempt > w->q->retry.attempts) {
		char why[64];

		if (lost > 0)
			snprintf(why, sizeof(why), "redelivered %d times",
				 lost);
		else
			snprintf(why, sizeof(why), "out of attempts");
		w->attempt--; /* this delivery never ran */
		settle_without_running(w, OUTCOME_FAILED, why);
		return;
	}
	if ((lost = env_too_large(w->d)) > 0)
		log_warnx("%s: %d header%s too large for the handler's "
			  "environment (%d bytes a variable at most): left out",
			  w->d->message_id ? w->d->message_id : "-", lost,
			  lost == 1 ? "" : "s", ENV_ENTRY_MAX);
	env = handler_env(w->q, w->number, w->attempt, w->d);
	started = hand_over(w, env, err, sizeof(err));
	env_free(env);
	if (started != 0)
		cannot_start(w, err);
	if (w->h != NULL && reply_due(w->q, w->d))
		handler_capture(w->h); /* its stdout is the reply */
	if (plain)
		report_holding(w);
	w->wait_ms = delivery_wait_ms(w->d, real_ms());
	w->slow_at = slow_deadline(w->started, w->q->slow);
	message_limit(w);
	/* the master kills this group should we die (a kept handler's
	 * group it knows already, from REPORT_GROUP) */
	if (w->p == NULL) {
		struct record r;

		record_init(&r, RECORD_REPORT, REPORT_BUSY);
		r.u.pid = handler_pid(w->h);
		report_record(w, &r);
	}
}

/*
 * A dependency is down (exit 75, "tempfail") and the queue has a breaker:
 * the message goes back unspent, and this worker stops consuming at once
 * (the cancel goes before the nack) while the master opens the breaker.
 */
static void tempfail(struct worker *w, struct outcome *o)
{
	o->kind = OUTCOME_REQUEUED;
	o->delay = 0;
	w->tempfail = true;
	w->probing = false;
	if (!w->paused && !w->retiring) {
		w->paused = true;
		w->resume_due = false;
		if (mq_cancel(w->mq) != 0)
			log_debug("basic.cancel: %s", mq_error(w->mq));
	}
}

/* The handler has exited: settle its message. */
static void handler_done(struct worker *w)
{
	struct log_fields lf = LOG_FIELDS_INIT;
	struct result res;
	struct outcome o;

	lf.message_id = w->d->message_id;
	if (w->h != NULL) {
		memset(&w->r, 0, sizeof(w->r));
		handler_finish(w->h, &w->r, &lf);
		handler_take_result(w->h, &res);
	} else { /* persistent: persistent_result() filled w->r */
		persistent_take_result(w->p, &res);
	}
	w->ran_ms = now_ms() - w->started;
	w->slow_at = 0;
	o = outcome_of(&w->r, w->attempt, &w->q->retry);
	reply_check_result(&o, res.too_large);
	if (w->stop_killed && o.kind != OUTCOME_ACK) {
		/* stopped by the shutdown, not failed: another worker will
		 * run it again from the start */
		o.kind = OUTCOME_REQUEUED;
		snprintf(o.reason, sizeof(o.reason), "stopped at shutdown");
	} else if (w->q->breaker.on && outcome_tempfail(&w->r)) {
		tempfail(w, &o);
	}
	/* a copy to publish carries the cost and stderr: read them first
	 * (an ack waits for nothing, message_settle() reads them after) */
	if (w->p != NULL && o.kind != OUTCOME_ACK)
		after_answer(w);
	begin_settling(w, &o,
		       w->h != NULL ? handler_stderr_tail(w->h)
				    : persistent_stderr_tail(w->p));
	settle_result(&w->set, &res);
	w->set.unspent = w->tempfail;
	handler_free(w->h);
	w->h = NULL;
	message_settle(w);
}

/*
 * The broker closed the consuming channel. After its consumer_timeout it
 * has taken the message in hand back: the master learns the broker's
 * value (every worker uses it from now on) and marks the message, so that
 * the attempt counts when it comes again.
 */
static void __attribute__((noreturn)) lost_channel(struct worker *w)
{
	int ct = mq_consumer_timeout_ms(w->mq);
	struct record r;

	report_pending(w);
	if (ct < 0)
		report_and_exit(w, WORKER_EXIT_CONNECT, mq_error(w->mq));
	/* ct 0: the broker did not say its value; the mark alone then */
	record_init(&r, RECORD_REPORT, REPORT_TAKEN_BACK);
	r.u.taken_back.ms = ct;
	snprintf(r.u.taken_back.key, sizeof(r.u.taken_back.key), "%s",
		 w->d && !w->settling ? w->d->key : "");
	report_record(w, &r);
	if (w->d != NULL)
		log_warnx("%s: the broker took it back (consumer_timeout); "
			  "the attempt counts as failed",
			  w->d->message_id ? w->d->message_id : "-");
	report_and_exit(w, WORKER_EXIT_TAKEN_BACK,
			"the broker's consumer_timeout");
}

static void cancelled(struct worker *w)
{
	log_warnx("%s", mq_error(w->mq));
	report_text(w, REPORT_DOWN, mq_error(w->mq)); /* the master's words */
	consume_stop(w, false);
	w->exit_status = WORKER_EXIT_DECLARE;
}

/* Read the broker's side: deliveries are taken one at a time. */
void message_read(struct worker *w)
{
	struct delivery *d;

	for (;;) {
		if (w->d != NULL) {
			/* busy: frames are still read, for heartbeats,
			 * confirms and closes, but deliveries wait in mq's
			 * queue */
			enum mq_event e = mq_service(w->mq);

			if (e == MQ_CLOSED)
				lost_channel(w);
			if (e == MQ_CANCELLED)
				cancelled(w);
			return;
		}
		switch (mq_poll(w->mq, &d)) {
		case MQ_NONE:
			return;
		case MQ_CLOSED:
			lost_channel(w);
		case MQ_CANCELLED:
			cancelled(w);
			continue;
		case MQ_DELIVERY:
			if (w->stopping || w->paused) {
				/* prefetched before the cancel: give back (a
				 * retiring worker runs it: no redelivery) */
				mq_nack(w->mq, d->tag, true);
				delivery_free(d);
				continue;
			}
			if (w->probing) {
				/* the one message of the probe */
				w->probing = false;
				w->paused = true;
				if (mq_cancel(w->mq) != 0)
					log_debug("basic.cancel: %s",
						  mq_error(w->mq));
			}
			w->d = d;
			trace_journal(d);
			start_handler(w);
			if (w->settling)
				message_settle(w);
			/* busy, and nothing read yet: the socket waits for
			 * poll, not for a read that would find nothing */
			if (w->d != NULL && !mq_buffered(w->mq))
				return;
			continue;
		}
	}
}

/* Past shutdown_timeout, the handler's message is given up. */
static void stop_deadline(struct worker *w)
{
	if (!w->stopping || w->stop_killed || now_ms() < w->stop_deadline ||
	    !message_running(w))
		return;
	log_warnx("shutdown_timeout reached; stopping the handler");
	if (w->p != NULL)
		persistent_stop(w->p, w->q->kill_grace);
	else
		handler_stop(w->h, w->q->kill_grace);
	w->stop_killed = true;
}

/* queue.slow: the handler in hand is still running past it; said once
 * per message with its pid and wait channel, and counted. */
void message_check_slow(struct worker *w)
{
	struct log_fields lf = LOG_FIELDS_INIT;
	char wchan[128], line[400];
	pid_t pid;

	if (w->slow_at == 0 || now_ms() < w->slow_at || !message_running(w))
		return;
	w->slow_at = 0;
	pid = w->h != NULL ? handler_pid(w->h) : persistent_pid(w->p);
	slow_wchan(pid, wchan, sizeof(wchan));
	slow_words(line, sizeof(line), w->d->message_id, pid,
		   now_ms() - w->started, w->q->slow, wchan);
	lf.message_id = w->d->message_id;
	log_fields(LOG_WARNING, &lf, "%s", line);
	report_kind(w, REPORT_SLOW);
}

/* The kept handler's side of a turn, busy or not. */
static void serve_persistent(struct worker *w, struct pollfd *pfd, int nh,
			     const struct log_fields *lf)
{
	char err[512];

	/* a handler that cannot be restarted: once the message in hand
	 * is settled, if it is already being settled */
	if (persistent_serve(w->p, pfd, nh, lf, err, sizeof(err)) != 0 &&
	    !w->settling)
		cannot_start(w, err);
	report_group(w);
	stop_deadline(w);
	if (message_running(w) && persistent_result(w->p, &w->r, lf))
		handler_done(w);
}

/* The handler's side of a turn: output, timers, the shutdown deadline. */
void message_serve(struct worker *w, struct pollfd *pfd, int nh)
{
	struct log_fields lf = LOG_FIELDS_INIT;

	lf.message_id = message_running(w) ? w->d->message_id : NULL;
	if (w->p != NULL) {
		serve_persistent(w, pfd, nh, &lf);
		return;
	}
	handler_io(w->h, pfd, nh, &lf);
	handler_timers(w->h);
	stop_deadline(w);
	if (handler_reap(w->h))
		handler_done(w);
}
