/*
 * worker.c: one worker process. Holds its own AMQP connection, consumes
 * one queue with manual acks, runs one handler at a time, and settles each
 * message by the handler's outcome. One poll loop serves the socket
 * (heartbeats included), the handler's pipes, signals and the master's
 * control socket, so nothing in the message path waits on a timer.
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

#define CONFIRM_TIMEOUT_MS 30000
#define MAX_DECLARED 64

struct worker {
	const struct config *cf;
	const struct queue_conf *q;
	int number;
	int ctl; /* control socket to the master */
	int sigfd;
	struct mq *mq;
	struct delivery *d; /* the message being handled */
	struct handler *h;
	int attempt;
	int64_t started;
	bool retiring; /* finish the current message, then exit */
	bool stopping; /* shutdown: shutdown_timeout applies */
	int64_t stop_deadline;
	int exit_status;
	bool broken;	  /* the connection failed us: reconnect */
	bool stop_killed; /* the handler was stopped by the shutdown */
	char *declared[MAX_DECLARED]; /* retry and parking queues */
	int ndeclared;
};

static void conclude(struct worker *w, struct outcome *o,
		     const struct handler_result *r, const char *tail);

/* A report to the master: code byte, then optional text. */
static void report(struct worker *w, char code, const char *text)
{
	char buf[600];
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

/* The budget went on deliveries that died with their worker: park it. */
static void spent(struct worker *w, int lost)
{
	struct handler_result r = {0};
	struct outcome o = {OUTCOME_FAILED, "", 0};

	if (lost > 0)
		snprintf(o.reason, sizeof(o.reason), "redelivered %d times",
			 lost);
	else
		snprintf(o.reason, sizeof(o.reason), "out of attempts");
	w->attempt--; /* this delivery never ran */
	conclude(w, &o, &r, "");
}

static void start_handler(struct worker *w)
{
	char **env, err[512];
	int lost;

	w->attempt = attempt_of(w, &lost);
	w->started = now_ms();
	if (w->attempt > w->q->retry.attempts) {
		spent(w, lost);
		return;
	}
	env = handler_env(w->q, w->number, w->attempt, w->d);
	w->h = handler_start(w->q, env, w->d->body, w->d->body_len, err,
			     sizeof(err));
	env_free(env);
	if (w->h != NULL) {
		/* the master kills this group should we die */
		snprintf(err, sizeof(err), "%ld", (long)handler_pid(w->h));
		report(w, REPORT_BUSY, err);
		return;
	}
	/*
	 * A configuration problem, not the message's fault. Stop consuming
	 * first, so the message is not handed straight back to us: on a
	 * quorum queue every return counts as a delivery.
	 */
	log_fields(LOG_ERR, NULL,
		   "%s: configuration problem: %s; message requeued",
		   w->d->message_id ? w->d->message_id : "-", err);
	mq_cancel(w->mq);
	mq_nack(w->mq, w->d->tag, true);
	report(w, REPORT_REQUEUED, NULL);
	delivery_free(w->d);
	w->d = NULL;
	give_up(w, WORKER_EXIT_HANDLER, err);
}

/* Publish a copy of the current message to queue, confirmed. */
static int publish_copy(struct worker *w, const char *queue, struct header *hs,
			int nh, const char *drop)
{
	struct publish p = {0};

	p.drop_header = drop;
	p.routing_key = queue;
	p.body = w->d->body;
	p.body_len = w->d->body_len;
	p.like = w->d;
	p.headers = hs;
	p.nheaders = nh;
	if (mq_publish(w->mq, &p) != 0 ||
	    mq_wait_confirms(w->mq, CONFIRM_TIMEOUT_MS) != 0)
		return -1;
	return 0;
}

/* Declare a queue once per worker life. */
static int declare_once(struct worker *w, const char *name, int ttl)
{
	for (int i = 0; i < w->ndeclared; i++)
		if (strcmp(w->declared[i], name) == 0)
			return 0;
	if (ttl > 0 ? mq_declare_delay(w->mq, name, w->q->name, ttl)
		    : mq_declare_named(w->mq, name, true, QUEUE_CLASSIC))
		return -1;
	if (w->ndeclared < MAX_DECLARED)
		w->declared[w->ndeclared++] = xstrdup(name);
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

/* OUTCOME_RETRY: into NAME.retry.<delay>s, back to NAME after the TTL. */
static int retry_later(struct worker *w, const struct outcome *o)
{
	char name[300], num[32];
	struct header h;

	snprintf(name, sizeof(name), "%s.retry.%ds", w->q->name, o->delay);
	if (declare_once(w, name, o->delay) != 0)
		return -1;
	num_header(&h, "x-warren-attempt", w->attempt + 1, num, sizeof(num));
	return publish_copy(w, name, &h, 1, NULL);
}

/* OUTCOME_FAILED with park: into NAME.failed with the reason. */
static int park(struct worker *w, const struct outcome *o, const char *tail)
{
	char name[300], n1[32], n2[32];
	struct header h[4];

	snprintf(name, sizeof(name), "%s.failed", w->q->name);
	if (declare_once(w, name, 0) != 0)
		return -1;
	num_header(&h[0], "x-warren-attempts", w->attempt, n1, sizeof(n1));
	str_header(&h[1], "x-warren-reason", o->reason);
	str_header(&h[2], "x-warren-stderr", tail);
	num_header(&h[3], "x-warren-failed-at", (long long)time(NULL), n2,
		   sizeof(n2));
	/* a replayed message starts counting its attempts afresh */
	return publish_copy(w, name, h, 4, "x-warren-attempt");
}

/*
 * Apply an outcome to the current message. The original is acked only
 * after its retry or parking copy is confirmed; if the copy cannot be
 * made, the original goes back to the queue.
 */
static void apply(struct worker *w, struct outcome *o, const char *tail)
{
	int rc = 0;

	switch (o->kind) {
	case OUTCOME_ACK:
		rc = mq_ack(w->mq, w->d->tag);
		break;
	case OUTCOME_RETRY:
	case OUTCOME_FAILED:
		if (o->kind == OUTCOME_FAILED && !w->q->park) {
			/* the broker dead-letters it by policy, or drops it */
			rc = mq_nack(w->mq, w->d->tag, false);
			break;
		}
		if ((o->kind == OUTCOME_RETRY ? retry_later(w, o)
					      : park(w, o, tail)) == 0) {
			rc = mq_ack(w->mq, w->d->tag);
			break;
		}
		log_warnx("%s: cannot %s it: %s; requeued",
			  w->d->message_id ? w->d->message_id : "-",
			  o->kind == OUTCOME_RETRY ? "schedule a retry of"
						   : "park",
			  mq_error(w->mq));
		o->kind = OUTCOME_REQUEUED;
		mq_nack(w->mq, w->d->tag, true);
		rc = -1; /* the channel is suspect: start afresh */
		break;
	case OUTCOME_REQUEUED:
		rc = mq_nack(w->mq, w->d->tag, true);
		break;
	}
	if (rc != 0)
		w->broken = true;
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

static void log_outcome(struct worker *w, const struct outcome *o,
			const struct handler_result *r)
{
	struct log_fields lf = LOG_FIELDS_INIT;
	char delay[48] = "";

	lf.message_id = w->d->message_id;
	lf.outcome = outcome_name(o->kind);
	lf.duration_ms = (long)(now_ms() - w->started);
	if (r->started && WIFEXITED(r->wait_status))
		lf.exit_status = WEXITSTATUS(r->wait_status);
	if (o->kind == OUTCOME_RETRY)
		snprintf(delay, sizeof(delay), ", attempt %d, again in %d s",
			 w->attempt, o->delay);
	else if (o->kind == OUTCOME_FAILED)
		snprintf(delay, sizeof(delay), ", attempt %d, %s", w->attempt,
			 w->q->park ? "parked" : "rejected");
	log_fields(o->kind == OUTCOME_ACK ? LOG_INFO : LOG_WARNING, &lf,
		   "%s %s, %s, %ld ms%s", lf.message_id ? lf.message_id : "-",
		   lf.outcome, o->reason, lf.duration_ms, delay);
}

/*
 * Settle the current message by o, log it, tell the master (which also
 * takes it as "idle again"), and let go of it; a connection that failed
 * on the way is given up.
 */
static void conclude(struct worker *w, struct outcome *o,
		     const struct handler_result *r, const char *tail)
{
	apply(w, o, tail);
	log_outcome(w, o, r);
	report(w, report_of(o->kind), NULL);
	delivery_free(w->d);
	w->d = NULL;
	if (w->broken)
		give_up(w, WORKER_EXIT_CONNECT, mq_error(w->mq));
}

/* The handler has exited: settle its message. */
static void settle(struct worker *w)
{
	struct log_fields lf = LOG_FIELDS_INIT;
	struct handler_result r = {0};
	struct outcome o;

	lf.message_id = w->d->message_id;
	handler_finish(w->h, &r, &lf);
	o = outcome_of(&r, w->attempt, &w->q->retry);
	if (w->stop_killed && o.kind != OUTCOME_ACK) {
		/* stopped by the shutdown, not failed: another worker will
		 * run it again from the start */
		o.kind = OUTCOME_REQUEUED;
		snprintf(o.reason, sizeof(o.reason), "stopped at shutdown");
	}
	conclude(w, &o, &r, handler_stderr_tail(w->h));
	handler_free(w->h);
	w->h = NULL;
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
		default:
			break; /* SIGCHLD: the loop reaps; SIGHUP: master's */
		}
	}
}

static void on_control(struct worker *w)
{
	char buf[64];
	ssize_t n = recv(w->ctl, buf, sizeof(buf), MSG_DONTWAIT);

	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* the master is gone: nothing may outlive it */
		if (w->h != NULL)
			handler_free(w->h);
		w->h = NULL;
		log_warnx("master went away; exiting");
		mq_close(w->mq);
		exit(WORKER_EXIT_MASTER);
	}
	if (buf[0] == COMMAND_RETIRE)
		begin_stop(w, false);
	else if (buf[0] == COMMAND_STOP)
		begin_stop(w, true);
}

static int poll_timeout(struct worker *w)
{
	int t = -1, ht;

	if (w->cf->broker.heartbeat > 0)
		t = w->cf->broker.heartbeat * 1000 / 4;
	if (w->h != NULL && (ht = handler_next_timer(w->h)) >= 0 &&
	    (t < 0 || ht < t))
		t = ht;
	if (w->stopping && w->h != NULL && !w->stop_killed) {
		int64_t left = w->stop_deadline - now_ms();

		if (left < 0)
			left = 0;
		if (left > INT_MAX)
			left = INT_MAX;
		if (t < 0 || left < t)
			t = (int)left;
	}
	if (mq_buffered(w->mq))
		t = 0;
	return t;
}

/* Read the broker's side: deliveries are taken one at a time. */
static void on_broker(struct worker *w)
{
	struct delivery *d;

	for (;;) {
		if (w->d != NULL) {
			/* busy: frames are still read, for heartbeats and
			 * closes, but deliveries wait in mq's queue */
			enum mq_event e = mq_service(w->mq);

			if (e == MQ_CLOSED)
				give_up(w, WORKER_EXIT_CONNECT,
					mq_error(w->mq));
			if (e == MQ_CANCELLED) {
				log_warnx("%s", mq_error(w->mq));
				begin_stop(w, false);
				w->exit_status = WORKER_EXIT_DECLARE;
			}
			return;
		}
		switch (mq_poll(w->mq, &d)) {
		case MQ_NONE:
			return;
		case MQ_CLOSED:
			give_up(w, WORKER_EXIT_CONNECT, mq_error(w->mq));
		case MQ_CANCELLED:
			log_warnx("%s", mq_error(w->mq));
			begin_stop(w, false);
			w->exit_status = WORKER_EXIT_DECLARE;
			continue;
		case MQ_DELIVERY:
			if (w->retiring) {
				/* prefetched before the cancel: give back */
				mq_nack(w->mq, d->tag, true);
				delivery_free(d);
				continue;
			}
			w->d = d;
			start_handler(w);
			continue;
		}
	}
}

static void loop(struct worker *w)
{
	struct pollfd pfd[6];
	int n, nh, t;

	for (;;) {
		if (w->retiring && w->h == NULL && w->d == NULL) {
			/* drain what was prefetched, then go */
			on_broker(w);
			mq_close(w->mq);
			exit(w->exit_status);
		}
		pfd[0].fd = mq_fd(w->mq);
		pfd[0].events = POLLIN;
		pfd[1].fd = w->sigfd;
		pfd[1].events = POLLIN;
		pfd[2].fd = w->ctl;
		pfd[2].events = POLLIN;
		n = 3;
		nh = w->h != NULL ? handler_pollfds(w->h, pfd + n) : 0;
		t = poll_timeout(w);
		if (poll(pfd, (nfds_t)(n + nh), t) == -1 && errno != EINTR)
			fatal("poll");
		if (pfd[1].revents)
			on_signals(w);
		if (pfd[2].revents)
			on_control(w);
		if (w->h != NULL) {
			struct log_fields lf = LOG_FIELDS_INIT;

			lf.message_id = w->d->message_id;
			handler_io(w->h, pfd + n, nh, &lf);
			handler_timers(w->h);
			if (w->stopping && !w->stop_killed &&
			    now_ms() >= w->stop_deadline) {
				log_warnx("shutdown_timeout reached; stopping "
					  "the handler");
				handler_stop(w->h, w->q->kill_grace);
				w->stop_killed = true;
			}
			if (handler_reap(w->h))
				settle(w);
		}
		/* every turn: keeps heartbeats going during long handlers */
		on_broker(w);
	}
}

void worker_main(const struct config *cf, const struct queue_conf *q,
		 int number, int ctl)
{
	struct worker w = {0};
	char name[300], err[512];
	int status;

	w.cf = cf;
	w.q = q;
	w.number = number;
	w.ctl = ctl;
	log_set_worker(q->name, number);
	unsetenv("NOTIFY_SOCKET");
	signal(SIGPIPE, SIG_IGN);
	w.sigfd = signal_fd();
	snprintf(name, sizeof(name), "warrend %s/%d", q->name, number);
	w.mq = mq_connect(&cf->broker, name, &status, err, sizeof(err));
	if (w.mq == NULL)
		give_up(&w, status, err);
	if (mq_declare(w.mq, q) != 0)
		give_up(&w, WORKER_EXIT_DECLARE, mq_error(w.mq));
	/* take no message while the handler cannot run */
	if (handler_check(q, err, sizeof(err)) != 0)
		give_up(&w, WORKER_EXIT_HANDLER, err);
	if (mq_confirm_select(w.mq) != 0 ||
	    mq_consume(w.mq, q->name, q->prefetch) != 0)
		give_up(&w, WORKER_EXIT_DECLARE, mq_error(w.mq));
	/* from here the loop sees the master go (control socket EOF) and
	 * stops the handler's whole group first */
	prctl(PR_SET_PDEATHSIG, 0);
	report(&w, REPORT_CONSUMING, NULL);
	log_info("consuming %s", q->name);
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
	default:
		return "unexpected exit";
	}
}
