/*
 * report.c: what a worker tells the master, one record.c record per
 * event (consuming, holding, outcomes, its handler's group, why it gives
 * up), sent without ever waiting on the master.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "worker/worker_int.h"

/* A report to the master, encoded by record.c; never waits. One that
 * does not encode (a bug) is said once at warning, then at debug. */
void report_record(struct worker *w, const struct record *r)
{
	static bool said;
	char buf[RECORD_MAX], err[200];
	int n = record_encode(r, buf, sizeof(buf), err, sizeof(err));

	if (n < 0) {
		(said ? log_debug : log_warnx)("not reported to the master: %s",
					       err);
		said = true;
		return;
	}
	/* SEQPACKET: one record per send; a full buffer never blocks us */
	(void)send(w->ctl, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* A report of a kind with no fields. */
void report_kind(struct worker *w, char kind)
{
	struct record r;

	record_init(&r, RECORD_REPORT, kind);
	report_record(w, &r);
}

/* An outcome report: the handler's run time, CPU time and the message's
 * wait in ms, each -1 when unknown (all of them when it did not run). */
void report_outcome(struct worker *w, char kind, int64_t ran_ms, int64_t cpu_ms,
		    int64_t wait_ms)
{
	struct record r;

	record_init(&r, RECORD_REPORT, kind);
	r.u.outcome.ran_ms = ran_ms;
	r.u.outcome.cpu_ms = ran_ms >= 0 ? cpu_ms : -1;
	r.u.outcome.wait_ms = ran_ms >= 0 ? wait_ms : -1;
	report_record(w, &r);
}

/* A report of kind with one text field (DOWN, BLOCKED). */
void report_text(struct worker *w, char kind, const char *text)
{
	struct record r;

	record_init(&r, RECORD_REPORT, kind);
	snprintf(r.u.text, sizeof(r.u.text), "%s", text ? text : "");
	report_record(w, &r);
}

/* Report why this worker cannot work and exit with that status. */
void __attribute__((noreturn))
report_and_exit(struct worker *w, int status, const char *why)
{
	report_text(w, REPORT_DOWN, why);
	log_debug("exiting: %s", why);
	if (w->h != NULL)
		handler_free(w->h);
	persistent_free(w->p);
	mq_close(w->mq);
	exit(status);
}

/*
 * The connection went while an outcome was being applied: the broker
 * gives the message back. The master marks it with the outcome, so that
 * its redelivery is settled by it, not run again.
 */
void report_pending(struct worker *w)
{
	struct record r;

	if (!w->settling || w->set.o.kind == OUTCOME_REQUEUED)
		return;
	/* an ack whose reply may not be out: run again, to answer again
	 * (a reply at most duplicated, never lost) */
	if (w->set.reply && w->set.o.kind == OUTCOME_ACK)
		return;
	record_init(&r, RECORD_REPORT, REPORT_PENDING);
	r.u.pending.outcome = (int)w->set.o.kind;
	r.u.pending.attempt = w->set.attempt;
	r.u.pending.delay = w->set.o.delay;
	snprintf(r.u.pending.reason, sizeof(r.u.pending.reason), "%s",
		 w->set.o.reason);
	snprintf(r.u.pending.key, sizeof(r.u.pending.key), "%s", w->d->key);
	report_record(w, &r);
}

void report_consuming(struct worker *w)
{
	struct record r;

	record_init(&r, RECORD_REPORT,
		    w->paused ? REPORT_PAUSED : REPORT_CONSUMING);
	r.u.consuming.home = w->node == w->home;
	r.u.consuming.node = w->node;
	report_record(w, &r);
}

/* Tell the master the persistent handler's group whenever it changes,
 * so that our death takes it along. */
void report_group(struct worker *w)
{
	struct record r;
	pid_t g = persistent_pid(w->p);

	if (g == w->told_group)
		return;
	record_init(&r, RECORD_REPORT, REPORT_GROUP);
	r.u.pid = g;
	report_record(w, &r);
	w->told_group = g;
}

/* The master learns which message this worker holds (its key). */
void report_holding(struct worker *w)
{
	struct record r;

	record_init(&r, RECORD_REPORT, REPORT_HOLDING);
	snprintf(r.u.key, sizeof(r.u.key), "%s", w->d->key);
	report_record(w, &r);
}
