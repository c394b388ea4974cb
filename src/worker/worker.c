/*
 * worker.c: one worker process and its poll loop. Holds its own AMQP
 * connection, consumes one queue with manual acks, runs one handler at a
 * time (a new process per message, or in persistent mode the one that
 * persistent.c keeps). One poll loop serves the socket (heartbeats,
 * confirms, connection.blocked), the handler's pipes and deadlines,
 * signals and the master's control socket, so nothing in the message
 * path waits on a timer. The worker's other files, bottom up: report.c
 * (to the master), consume.c (consuming or not), message.c (a message's
 * way), command.c (from the master), home.c (its broker node).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "worker/worker_int.h"

static void on_signals(struct worker *w)
{
	struct signalfd_siginfo si;

	while (read(w->sigfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			consume_stop(w, true);
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

/* Tell the master when the broker blocks or unblocks our publishing. */
static void watch_blocked(struct worker *w)
{
	const char *why = mq_blocked(w->mq);

	if ((why != NULL) == w->blocked)
		return;
	w->blocked = why != NULL;
	if (w->blocked)
		log_debug("broker blocked publishing: %s", why);
	if (w->blocked)
		report_text(w, REPORT_BLOCKED, why);
	else
		report_kind(w, REPORT_UNBLOCKED);
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
	struct record r;
	long n;

	if (w->watch_ms <= 0 || w->retiring || w->settling ||
	    now_ms() < w->next_watch)
		return;
	w->next_watch = now_ms() + w->watch_ms;
	if (mq_queue_ready(w->mq, w->q->name, &n) != 0) {
		log_debug("%s", mq_error(w->mq));
		return;
	}
	record_init(&r, RECORD_REPORT, REPORT_READY);
	r.u.ready = n;
	report_record(w, &r);
}

static void loop(struct worker *w)
{
	struct pollfd pfd[6];
	int n, nh, t;

	for (;;) {
		if (w->retiring && w->d == NULL) {
			/* drain what was sent before the cancel, then go */
			message_read(w);
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
		t = wake_poll_ms(w);
		if (poll(pfd, (nfds_t)(n + nh), t) == -1 && errno != EINTR)
			fatal("poll");
		if (pfd[1].revents)
			on_signals(w);
		if (pfd[2].revents)
			command_read(w);
		if (w->h != NULL || w->p != NULL)
			message_serve(w, pfd + n, nh);
		message_check_slow(w);
		if (broker_due(w, pfd[0].revents != 0))
			message_read(w);
		watch_blocked(w);
		watch_queue(w);
		home_probe(w);
		if (w->settling) {
			if (w->stopping && now_ms() >= w->stop_deadline) {
				if (settle_abandon(&w->set))
					w->r.started = false;
			}
			message_settle(w);
		}
	}
}

void worker_main(const struct worker_start *ws)
{
	struct worker w = {0};
	char err[512];

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
	wake_init(&w);
	w.paused = ws->paused;
	command_wait_go(&w);
	home_connect(&w);
	settle_init(&w.set, w.mq, w.q);
	mq_set_max_body(w.mq, (size_t)w.q->max_body << 20);
	if (mq_declare(w.mq, w.q) != 0)
		report_and_exit(&w, WORKER_EXIT_DECLARE, mq_error(w.mq));
	/* take no message while the handler cannot run */
	if (handler_check(w.q, err, sizeof(err)) != 0)
		report_and_exit(&w, WORKER_EXIT_HANDLER, err);
	if (w.q->mode == MODE_PERSISTENT) {
		/* started before the first message: its start-up is paid
		 * while none waits */
		w.p = persistent_new(w.q, w.number);
		if (persistent_start(w.p, err, sizeof(err)) != 0)
			report_and_exit(&w, WORKER_EXIT_HANDLER, err);
		report_group(&w);
	}
	if (mq_confirm_select(w.mq) != 0 ||
	    (!w.paused && mq_consume(w.mq, w.q->name, w.q->prefetch) != 0))
		report_and_exit(&w, WORKER_EXIT_DECLARE, mq_error(w.mq));
	/* from here the loop sees the master go (control socket EOF) and
	 * stops the handler's whole group first */
	prctl(PR_SET_PDEATHSIG, 0);
	report_consuming(&w);
	home_started(&w, ws->home_moves);
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
