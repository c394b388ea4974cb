/*
 * consume.c: whether a worker consumes: basic.consume again after a pause,
 * basic.cancel for warrenctl pause, the breaker's probe, and retiring or
 * shutting down (stop taking messages, finish the one in hand).
 */
#include "config.h"

#include "worker/worker_int.h"

#define DRAIN_MS 5000 /* a retiring worker waits for its cancel-ok */

/*
 * basic.consume again after a pause. Never while a message is in hand:
 * basic.qos counts per consumer, and a new one beside the old one's
 * unacked message would be sent a second.
 */
void consume_resume(struct worker *w)
{
	w->resume_due = false;
	if (w->retiring)
		return;
	if (mq_consume(w->mq, w->q->name, w->q->prefetch) != 0)
		report_and_exit(w, WORKER_EXIT_DECLARE, mq_error(w->mq));
	log_debug("resumed");
	report_consuming(w);
}

/* Stop taking messages; the current one is finished first. */
void consume_stop(struct worker *w, bool shutdown)
{
	if (shutdown && !w->stopping) {
		w->stopping = true;
		w->stop_deadline =
		    now_ms() + (int64_t)w->cf->shutdown_timeout * 1000;
	}
	if (w->retiring)
		return;
	w->retiring = true;
	w->drain_until = now_ms() + DRAIN_MS;
	log_debug("stopping: %s", shutdown ? "shutdown" : "retired");
	if (mq_cancel(w->mq) != 0)
		log_debug("basic.cancel: %s", mq_error(w->mq));
}

/*
 * warrenctl pause: basic.cancel now (a running handler goes on), stay
 * connected; resume: basic.consume again.
 */
void consume_pause(struct worker *w, bool pause)
{
	if (pause && w->resume_due) { /* resumed and paused again, busy */
		w->resume_due = false;
		w->paused = true;
		return;
	}
	if (w->paused == pause)
		return;
	w->paused = pause;
	if (w->retiring)
		return;
	if (!pause) {
		/* busy: once the message is settled */
		if (w->d != NULL)
			w->resume_due = true;
		else
			consume_resume(w);
		return;
	}
	if (mq_cancel(w->mq) != 0)
		log_debug("basic.cancel: %s", mq_error(w->mq));
	log_debug("paused");
	/* busy: said once the message is settled */
	if (w->d == NULL)
		report_consuming(w);
}

/*
 * The breaker is half-open: consume one message (prefetch 1), then stop
 * again; its outcome tells the master whether the dependency is back.
 */
void consume_probe(struct worker *w)
{
	if (!w->paused || w->retiring || w->d != NULL)
		return;
	w->paused = false;
	w->probing = true;
	if (mq_consume(w->mq, w->q->name, 1) != 0)
		report_and_exit(w, WORKER_EXIT_DECLARE, mq_error(w->mq));
	log_debug("breaker probe: taking one message");
	report_consuming(w);
}
