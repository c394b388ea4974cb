/*
 * worker.c: one worker process, the consume loop alone. Holds its own AMQP
 * connection, consumes one queue with manual acks, runs one handler at a
 * time (a new process per message, or in persistent mode the one that
 * persistent.c keeps), and hands each outcome to settle.c. One poll loop
 * serves the
 * socket (heartbeats, confirms, connection.blocked), the handler's pipes
 * and deadlines, signals and the master's control socket, so nothing in
 * the message path waits on a timer.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "warren.h"

#define DRAIN_MS 5000 /* a retiring worker waits for its cancel-ok */

struct worker {
	const struct config *cf;
	const struct queue_conf *q;
	int number;
	int ctl; /* control socket to the master */
	int sigfd;
	struct mq *mq;
	struct delivery *d;   /* the message in hand */
	struct handler *h;    /* its handler, while it runs */
	struct persistent *p; /* persistent mode: the handler it keeps */
	pid_t told_group;     /* p's process group as the master knows it */
	struct handler_result r;
	bool settling;	    /* the handler is done, its outcome being applied */
	bool replaying;	    /* that outcome came from the master's mark */
	bool told_prefetch; /* a message given back from the prefetch */
	struct settler set;
	struct ledger marks; /* the master's notes on messages */
	int ct_ms;	     /* consumer_timeout in force */
	bool blocked;	     /* told the master the broker blocks us */
	int home, node;	     /* the broker node it belongs on, and is on */
	int64_t next_probe;  /* when to see whether home is back */
	int home_moves;	     /* earlier moves home that fell back again */
	int attempt;
	int64_t started;
	int64_t ran_ms;	    /* how long its handler ran, -1 if it did not */
	int64_t wait_ms;    /* from its timestamp to its start, -1: unknown */
	int64_t slow_at;    /* queue.slow: when to say it is slow, 0: not */
	int64_t service_at; /* busy: read the socket by then (heartbeats) */
	bool paused;	    /* warrenctl paused the queue: not consuming */
	bool probing;	    /* the breaker's probe: one message, then pause */
	bool tempfail;	 /* the message in hand goes back unspent (breaker) */
	bool resume_due; /* resumed while busy: consume once it is settled */
	bool retiring;	 /* finish the current message, then exit */
	bool stopping;	 /* shutdown: shutdown_timeout applies */
	int64_t stop_deadline;
	int64_t drain_until; /* retiring: waits this long for cancel-ok */
	int watch_ms;	     /* the master's watcher: ready count this often */
	int64_t next_watch;
	int exit_status;
	bool stop_killed; /* the handler was stopped by the shutdown */
};

/* A report to the master: code byte, then optional text. */
static void report(struct worker *w, char code, const char *text)
{
	char buf[1100];
	size_t n = 1;

	buf[0] = code;
	if (text != NULL) {
		n += strlen(text) > sizeof(buf) - 1 ? sizeof(buf) - 1
						    : strlen(text);
		memcpy(buf + 1, text, n - 1);
	}
	/* SEQPACKET: one record per send; a full buffer never blocks us */
	(void)send(w->ctl, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Report why this worker cannot work and exit with that status. */
static void __attribute__((noreturn))
give_up(struct worker *w, int status, const char *why)
{
	char buf[600];

	snprintf(buf, sizeof(buf), "%s", why);
	report(w, REPORT_DOWN, buf);
	log_debug("exiting: %s", buf);
	if (w->h != NULL)
		handler_free(w->h);
	persistent_free(w->p);
	mq_close(w->mq);
	exit(status);
}

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

/*
 * The connection went while an outcome was being applied: the broker
 * gives the message back. The master marks it with the outcome, so that
 * its redelivery is settled by it, not run again.
 */
static void report_pending(struct worker *w)
{
	char buf[1100];

	if (!w->settling || w->set.o.kind == OUTCOME_REQUEUED)
		return;
	/* an ack whose reply may not be out: run again, to answer again
	 * (a reply at most duplicated, never lost) */
	if (w->set.reply && w->set.o.kind == OUTCOME_ACK)
		return;
	snprintf(buf, sizeof(buf), "%d\t%d\t%d\t%s\t%s", (int)w->set.o.kind,
		 w->set.attempt, w->set.o.delay, w->set.o.reason, w->d->key);
	report(w, REPORT_PENDING, buf);
}

/* Consuming (C) or paused (Z), on which node, for the master. */
static void report_consuming(struct worker *w);

/*
 * basic.consume again after a pause. Never while a message is in hand:
 * basic.qos counts per consumer, and a new one beside the old one's
 * unacked message would be sent a second.
 */
static void resume(struct worker *w)
{
	w->resume_due = false;
	if (w->retiring)
		return;
	if (mq_consume(w->mq, w->q->name, w->q->prefetch) != 0)
		give_up(w, WORKER_EXIT_DECLARE, mq_error(w->mq));
	log_debug("resumed");
	report_consuming(w);
}

static void report_consuming(struct worker *w)
{
	char text[32];

	snprintf(text, sizeof(text), "%s\t%d",
		 w->node == w->home ? "home" : "away", w->node);
	report(w, w->paused ? REPORT_PAUSED : REPORT_CONSUMING, text);
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
static void continue_settling(struct worker *w)
{
	char ms[48];

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
		report(w, REPORT_REQUEUED, NULL);
		give_up(w, WORKER_EXIT_CONNECT, mq_error(w->mq));
	case SETTLE_DONE:
		break;
	}
	log_hold(); /* its lines in one write */
	if (w->p != NULL)
		after_answer(w); /* the ack is out: now */
	settle_log(&w->set, &w->r, w->started);
	log_release();
	/* "MS", "\tCPU_MS" (-1: unknown), "\tWAIT_MS" when it had one */
	snprintf(ms, sizeof(ms), "%lld\t%ld", (long long)w->ran_ms,
		 w->r.has_cpu ? w->r.cpu_ms : -1L);
	if (w->wait_ms >= 0)
		snprintf(ms + strlen(ms), sizeof(ms) - strlen(ms), "\t%lld",
			 (long long)w->wait_ms);
	report(w, w->tempfail ? REPORT_TEMPFAIL : report_of(w->set.o.kind),
	       w->ran_ms >= 0 ? ms : NULL);
	w->tempfail = false;
	delivery_free(w->d);
	w->d = NULL;
	log_set_trace(NULL);
	w->settling = w->replaying = false;
	if (w->resume_due)
		resume(w);
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

/* Stop the handler before the consumer_timeout in force. */
static void limit_handler(struct worker *w)
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
static bool running(const struct worker *w)
{
	return w->h != NULL || (w->p != NULL && w->d != NULL && !w->settling);
}

/* Tell the master the persistent handler's group whenever it changes,
 * so that our death takes it along. */
static void report_group(struct worker *w)
{
	char buf[32];
	pid_t g = persistent_pid(w->p);

	if (g == w->told_group)
		return;
	snprintf(buf, sizeof(buf), "%ld", (long)g);
	report(w, REPORT_GROUP, buf);
	w->told_group = g;
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
		give_up(w, WORKER_EXIT_HANDLER, err);
	}
	log_fields(LOG_ERR, NULL,
		   "%s: configuration problem: %s; message requeued",
		   w->d->message_id ? w->d->message_id : "-", err);
	mq_cancel(w->mq);
	mq_nack(w->mq, w->d->tag, true);
	report(w, REPORT_REQUEUED, NULL);
	delivery_free(w->d);
	w->d = NULL;
	log_set_trace(NULL);
	give_up(w, WORKER_EXIT_HANDLER, err);
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
	report(w, REPORT_REQUEUED, NULL);
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
	plain = w->attempt <= w->q->retry.attempts &&
		ledger_find(&w->marks, w->d->key) == NULL;
	if (!plain)
		report(w, REPORT_HOLDING, w->d->key);
	w->started = now_ms();
	w->ran_ms = w->wait_ms = -1;
	w->slow_at = 0;
	if (marked_by_master(w, lost))
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
		report(w, REPORT_HOLDING, w->d->key);
	w->wait_ms = delivery_wait_ms(w->d, real_ms());
	w->slow_at = slow_deadline(w->started, w->q->slow);
	limit_handler(w);
	/* the master kills this group should we die (a kept handler's
	 * group it knows already, from REPORT_GROUP) */
	if (w->p == NULL) {
		snprintf(err, sizeof(err), "%ld", (long)handler_pid(w->h));
		report(w, REPORT_BUSY, err);
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
	} else if (w->q->breaker.on && breaker_tempfail(&w->r)) {
		tempfail(w, &o);
	}
	/* a copy to publish carries the cost and stderr: read them first
	 * (an ack waits for nothing, continue_settling() reads them after) */
	if (w->p != NULL && o.kind != OUTCOME_ACK)
		after_answer(w);
	begin_settling(w, &o,
		       w->h != NULL ? handler_stderr_tail(w->h)
				    : persistent_stderr_tail(w->p));
	settle_result(&w->set, &res);
	w->set.unspent = w->tempfail;
	handler_free(w->h);
	w->h = NULL;
	continue_settling(w);
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
	char buf[400];

	report_pending(w);
	if (ct < 0)
		give_up(w, WORKER_EXIT_CONNECT, mq_error(w->mq));
	/* ct 0: the broker did not say its value; the mark alone then */
	snprintf(buf, sizeof(buf), "%d\t%s", ct,
		 w->d && !w->settling ? w->d->key : "");
	report(w, REPORT_TAKEN_BACK, buf);
	if (w->d != NULL)
		log_warnx("%s: the broker took it back (consumer_timeout); "
			  "the attempt counts as failed",
			  w->d->message_id ? w->d->message_id : "-");
	give_up(w, WORKER_EXIT_TAKEN_BACK, "the broker's consumer_timeout");
}

/* Stop taking messages; the current one is finished first. */
static void begin_stop(struct worker *w, bool shutdown)
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

static void on_signals(struct worker *w)
{
	struct signalfd_siginfo si;

	while (read(w->sigfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			begin_stop(w, true);
			break;
		case SIGCHLD: /* exec handlers are reaped every turn */
			if (w->p != NULL)
				persistent_sigchld(w->p);
			break;
		default:
			break; /* SIGHUP: the master's */
		}
	}
}

/*
 * warrenctl pause: basic.cancel now (a running handler goes on), stay
 * connected; resume: basic.consume again.
 */
static void set_paused(struct worker *w, bool pause)
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
			resume(w);
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
static void probe(struct worker *w)
{
	if (!w->paused || w->retiring || w->d != NULL)
		return;
	w->paused = false;
	w->probing = true;
	if (mq_consume(w->mq, w->q->name, 1) != 0)
		give_up(w, WORKER_EXIT_DECLARE, mq_error(w->mq));
	log_debug("breaker probe: taking one message");
	report_consuming(w);
}

/* The master's word: finish and go, stop, a consumer_timeout, a mark. */
static void on_command(struct worker *w, const char *buf, ssize_t n)
{
	switch (buf[0]) {
	case COMMAND_RETIRE:
		begin_stop(w, false);
		break;
	case COMMAND_STOP:
		begin_stop(w, true);
		break;
	case COMMAND_CONSUMER_TIMEOUT: {
		int ct = atoi(buf + 1);

		if (ct > 0 && ct < w->ct_ms) {
			w->ct_ms = ct;
			if (running(w))
				limit_handler(w);
		}
		break;
	}
	case COMMAND_MARK:
		if (n > 1 && ledger_apply(&w->marks, buf + 1) != 0)
			log_debug("bad mark from the master");
		break;
	case COMMAND_PAUSE:
	case COMMAND_RESUME:
		w->probing = false;
		set_paused(w, buf[0] == COMMAND_PAUSE);
		break;
	case COMMAND_PROBE:
		probe(w);
		break;
	case COMMAND_WATCH:
		w->watch_ms = atoi(buf + 1);
		w->next_watch = now_ms();
		break;
	}
}

static void on_control(struct worker *w)
{
	char buf[1200];

	for (;;) {
		ssize_t n = recv(w->ctl, buf, sizeof(buf) - 1, MSG_DONTWAIT);

		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			/* the master is gone: nothing may outlive it */
			if (w->h != NULL)
				handler_free(w->h);
			w->h = NULL;
			persistent_free(w->p);
			w->p = NULL;
			log_warnx("master went away; exiting");
			mq_close(w->mq);
			exit(WORKER_EXIT_MASTER);
		}
		buf[n] = '\0';
		on_command(w, buf, n);
	}
}

/* The wait t (ms, -1: none) shortened to end by monotonic ms at. */
static int until(int64_t at, int t)
{
	int64_t left = at - now_ms();

	if (left < 0)
		left = 0;
	return t < 0 || left < t ? (int)(left > INT_MAX ? INT_MAX : left) : t;
}

static int poll_timeout(struct worker *w)
{
	int t = -1, ht;

	if (w->cf->broker.heartbeat > 0)
		t = w->cf->broker.heartbeat * 1000 / 4;
	if (w->h != NULL && (ht = handler_next_timer(w->h)) >= 0 &&
	    (t < 0 || ht < t))
		t = ht;
	if (w->p != NULL && (ht = persistent_next_timer(w->p)) >= 0 &&
	    (t < 0 || ht < t))
		t = ht;
	if (w->settling && (ht = settle_next_timer(&w->set)) >= 0 &&
	    (t < 0 || ht < t))
		t = ht;
	if (w->slow_at != 0 && running(w)) {
		int64_t left = w->slow_at - now_ms();

		left = left < 0 ? 0 : left > INT_MAX ? INT_MAX : left;
		if (t < 0 || left < t)
			t = (int)left;
	}
	if (w->stopping && w->d != NULL && !w->stop_killed) {
		int64_t left = w->stop_deadline - now_ms();

		if (left < 0)
			left = 0;
		if (left > INT_MAX)
			left = INT_MAX;
		if (t < 0 || left < t)
			t = (int)left;
	}
	if (w->retiring && w->d == NULL)
		t = until(w->drain_until, t);
	if (w->watch_ms > 0 && !w->retiring && !w->settling)
		t = until(w->next_watch, t);
	if (w->node != w->home && w->d == NULL && !w->retiring) {
		int64_t left = w->next_probe - now_ms();

		if (left < 0)
			left = 0;
		if (t < 0 || left < t)
			t = (int)left;
	}
	if (mq_buffered(w->mq) || (w->d == NULL && mq_has_news(w->mq)))
		t = 0;
	return t;
}

static void cancelled(struct worker *w)
{
	log_warnx("%s", mq_error(w->mq));
	report(w, REPORT_DOWN, mq_error(w->mq)); /* the master's words */
	begin_stop(w, false);
	w->exit_status = WORKER_EXIT_DECLARE;
}

/* Read the broker's side: deliveries are taken one at a time. */
static void on_broker(struct worker *w)
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
				continue_settling(w);
			/* busy, and nothing read yet: the socket waits for
			 * poll, not for a read that would find nothing */
			if (w->d != NULL && !mq_buffered(w->mq))
				return;
			continue;
		}
	}
}

/*
 * A worker that fell back to another node goes home once its node takes
 * connections again: between messages, by exiting to be respawned at once
 * (the new one tries home first).
 */
static int64_t probe_interval(const struct worker *w)
{
	/* a node that takes TCP but not us: look less and less often */
	return (int64_t)HOME_PROBE_MS
	       << (w->home_moves < 6 ? w->home_moves : 6);
}

static void maybe_go_home(struct worker *w)
{
	if (w->node == w->home || w->d != NULL || w->retiring ||
	    now_ms() < w->next_probe)
		return;
	w->next_probe = now_ms() + probe_interval(w);
	if (mq_probe_home(w->mq, 1000) != 0)
		return;
	if (w->home_moves == 0)
		log_info("node %d of broker.url is back: moving to it",
			 w->home + 1);
	else
		log_debug("node %d of broker.url takes connections again: "
			  "moving to it",
			  w->home + 1);
	w->exit_status = WORKER_EXIT_HOME;
	begin_stop(w, false);
}

/* Tell the master when the broker blocks or unblocks our publishing. */
static void watch_blocked(struct worker *w)
{
	const char *why = mq_blocked(w->mq);

	if ((why != NULL) == w->blocked)
		return;
	w->blocked = why != NULL;
	if (w->blocked)
		log_debug("broker blocked publishing: %s", why);
	report(w, w->blocked ? REPORT_BLOCKED : REPORT_UNBLOCKED, why);
}

/* Past shutdown_timeout, the handler's message is given up. */
static void stop_deadline(struct worker *w)
{
	if (!w->stopping || w->stop_killed || now_ms() < w->stop_deadline ||
	    !running(w))
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
static void check_slow(struct worker *w)
{
	struct log_fields lf = LOG_FIELDS_INIT;
	char wchan[128], line[400];
	pid_t pid;

	if (w->slow_at == 0 || now_ms() < w->slow_at || !running(w))
		return;
	w->slow_at = 0;
	pid = w->h != NULL ? handler_pid(w->h) : persistent_pid(w->p);
	slow_wchan(pid, wchan, sizeof(wchan));
	slow_words(line, sizeof(line), w->d->message_id, pid,
		   now_ms() - w->started, w->q->slow, wchan);
	lf.message_id = w->d->message_id;
	log_fields(LOG_WARNING, &lf, "%s", line);
	report(w, REPORT_SLOW, NULL);
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
	if (running(w) && persistent_result(w->p, &w->r, lf))
		handler_done(w);
}

/* The handler's side of a turn: output, timers, the shutdown deadline. */
static void serve_handler(struct worker *w, struct pollfd *pfd, int nh)
{
	struct log_fields lf = LOG_FIELDS_INIT;

	lf.message_id = running(w) ? w->d->message_id : NULL;
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

/* The worker's end: a kept handler gets EOF and its time to go. */
static void __attribute__((noreturn)) finish(struct worker *w)
{
	struct log_fields lf = LOG_FIELDS_INIT;

	mq_close(w->mq);
	if (w->p != NULL) {
		persistent_close(w->p, &lf);
		persistent_free(w->p);
	}
	exit(w->exit_status);
}

/*
 * Whether this turn reads the broker's side: when the socket has news,
 * or rabbitmq-c holds some (between messages also deliveries read while
 * busy, a cancel, a close), and on the heartbeat's schedule (it sends
 * ours and notices the broker's silence only inside its calls). A turn
 * for the handler's pipes alone, or just after an ack, then costs no
 * read that would find nothing.
 */
static bool broker_due(struct worker *w, bool readable)
{
	int64_t now = now_ms();
	int hb = w->cf->broker.heartbeat;

	if (readable ||
	    (w->d == NULL ? mq_has_news(w->mq) : mq_buffered(w->mq)) ||
	    (hb > 0 && now >= w->service_at)) {
		w->service_at = now + (int64_t)hb * 1000 / 4;
		return true;
	}
	return false;
}

/*
 * A retiring worker goes once the broker has answered its cancel (no
 * delivery can follow, so closing gives none back), at a shutdown at
 * once, and after DRAIN_MS in any case.
 */
static bool drained(struct worker *w)
{
	return w->stopping || !mq_cancelling(w->mq) ||
	       now_ms() >= w->drain_until;
}

/* The master's watcher: the queue's ready count, every watch_ms. */
static void watch_queue(struct worker *w)
{
	char buf[32];
	long n;

	if (w->watch_ms <= 0 || w->retiring || w->settling ||
	    now_ms() < w->next_watch)
		return;
	w->next_watch = now_ms() + w->watch_ms;
	if (mq_queue_ready(w->mq, w->q->name, &n) != 0) {
		log_debug("%s", mq_error(w->mq));
		return;
	}
	snprintf(buf, sizeof(buf), "%ld", n);
	report(w, REPORT_READY, buf);
}

static void loop(struct worker *w)
{
	struct pollfd pfd[6];
	int n, nh, t;

	for (;;) {
		if (w->retiring && w->d == NULL) {
			/* drain what was sent before the cancel, then go */
			on_broker(w);
			if (w->d == NULL && drained(w))
				finish(w);
		}
		pfd[0].fd = mq_fd(w->mq);
		pfd[0].events = POLLIN;
		pfd[1].fd = w->sigfd;
		pfd[1].events = POLLIN;
		pfd[2].fd = w->ctl;
		pfd[2].events = POLLIN;
		n = 3;
		nh = w->h != NULL   ? handler_pollfds(w->h, pfd + n)
		     : w->p != NULL ? persistent_pollfds(w->p, pfd + n)
				    : 0;
		t = poll_timeout(w);
		if (poll(pfd, (nfds_t)(n + nh), t) == -1 && errno != EINTR)
			fatal("poll");
		if (pfd[1].revents)
			on_signals(w);
		if (pfd[2].revents)
			on_control(w);
		if (w->h != NULL || w->p != NULL)
			serve_handler(w, pfd + n, nh);
		check_slow(w);
		if (broker_due(w, pfd[0].revents != 0))
			on_broker(w);
		watch_blocked(w);
		watch_queue(w);
		maybe_go_home(w);
		if (w->settling) {
			if (w->stopping && now_ms() >= w->stop_deadline) {
				if (settle_abandon(&w->set))
					w->r.started = false;
			}
			continue_settling(w);
		}
	}
}

/*
 * Before it connects, a new worker waits for the master's go: a master
 * starting a thousand workers forks them all first, instead of sharing
 * the CPU with the early ones while it forks the rest. What the master
 * says meanwhile is kept (marks, a consumer_timeout, a pause) or ends it
 * (retire, stop: nothing to finish yet).
 */
static void wait_for_go(struct worker *w)
{
	char buf[1200];

	for (;;) {
		ssize_t n = recv(w->ctl, buf, sizeof(buf) - 1, 0);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			exit(WORKER_EXIT_MASTER);
		buf[n] = '\0';
		switch (buf[0]) {
		case COMMAND_GO:
			return;
		case COMMAND_RETIRE:
		case COMMAND_STOP:
			exit(WORKER_EXIT_OK);
		case COMMAND_PAUSE:
		case COMMAND_RESUME:
			w->paused = buf[0] == COMMAND_PAUSE;
			break;
		default:
			on_command(w, buf, n); /* marks, consumer_timeout */
			break;
		}
	}
}

void worker_main(const struct worker_start *ws)
{
	struct worker w = {0};
	char name[600], err[512], host[256];
	int status;

	/* inherited from the master; said again: the password is here */
	prctl(PR_SET_DUMPABLE, 0);
	w.cf = ws->cf;
	w.q = ws->q;
	w.number = ws->number;
	w.ctl = ws->ctl;
	w.ct_ms = w.cf->broker.consumer_timeout * 1000;
	if (ws->consumer_timeout_ms > 0 && ws->consumer_timeout_ms < w.ct_ms)
		w.ct_ms = ws->consumer_timeout_ms;
	ledger_copy(&w.marks, ws->marks);
	log_set_worker(w.q->name, w.number);
	unsetenv("NOTIFY_SOCKET");
	signal(SIGPIPE, SIG_IGN);
	w.sigfd = signal_fd();
	w.paused = ws->paused;
	wait_for_go(&w);
	/* worker N starts at node (N - 1) mod nodes: pools spread */
	w.home = (w.number - 1) % w.cf->broker.nurls;
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "?");
	host[sizeof(host) - 1] = '\0';
	snprintf(name, sizeof(name), "warrend %s/%d on %s", w.q->name, w.number,
		 host);
	/* the workers of one node fall back to different nodes */
	w.mq = mq_connect(&w.cf->broker, name, w.home,
			  (w.number - 1) / w.cf->broker.nurls, &w.node, &status,
			  err, sizeof(err));
	if (w.mq == NULL)
		give_up(&w, status, err);
	settle_init(&w.set, w.mq, w.q);
	if (mq_declare(w.mq, w.q) != 0)
		give_up(&w, WORKER_EXIT_DECLARE, mq_error(w.mq));
	/* take no message while the handler cannot run */
	if (handler_check(w.q, err, sizeof(err)) != 0)
		give_up(&w, WORKER_EXIT_HANDLER, err);
	if (w.q->mode == MODE_PERSISTENT) {
		/* started before the first message: its start-up is paid
		 * while none waits */
		w.p = persistent_new(w.q, w.number);
		if (persistent_start(w.p, err, sizeof(err)) != 0)
			give_up(&w, WORKER_EXIT_HANDLER, err);
		report_group(&w);
	}
	if (mq_confirm_select(w.mq) != 0 ||
	    (!w.paused && mq_consume(w.mq, w.q->name, w.q->prefetch) != 0))
		give_up(&w, WORKER_EXIT_DECLARE, mq_error(w.mq));
	/* from here the loop sees the master go (control socket EOF) and
	 * stops the handler's whole group first */
	prctl(PR_SET_PDEATHSIG, 0);
	report_consuming(&w);
	w.home_moves = ws->home_moves;
	w.next_probe = now_ms() + probe_interval(&w);
	if (w.node != w.home)
		/* a mute home node: said at the first fall back only */
		(w.home_moves == 0 ? log_info : log_debug)(
		    "consuming %s from node %d of broker.url (its own, "
		    "%d, is down)",
		    w.q->name, w.node + 1, w.home + 1);
	else
		log_info("%s %s",
			 w.paused ? "paused, not consuming" : "consuming",
			 w.q->name);
	loop(&w);
	exit(0);
}

const char *worker_exit_reason(int status)
{
	switch (status) {
	case WORKER_EXIT_CONNECT:
		return "cannot reach the broker";
	case WORKER_EXIT_LOGIN:
		return "the broker refused the login";
	case WORKER_EXIT_DECLARE:
		return "cannot declare or consume the queue";
	case WORKER_EXIT_HANDLER:
		return "configuration problem: the handler cannot be started";
	case WORKER_EXIT_MASTER:
		return "the master went away";
	case WORKER_EXIT_HOME:
		return "moving back to its own broker node";
	case WORKER_EXIT_TAKEN_BACK:
		return "the broker took a message back (consumer_timeout)";
	default:
		return "unexpected exit";
	}
}
