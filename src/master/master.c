/*
 * master.c: the supervisor's loop. Owns no AMQP connection. Signals, the
 * workers' control sockets, warrenctl's clients and the metrics listener
 * are read through one epoll set (evloop.c), waiting for the earliest of
 * its timers (timers.c: each owns one deadline and what runs at it). Each
 * turn acts on what the events flagged (reaping in exits.c, a reload in
 * reconfigure.c), then on the timers due: respawns and sizing (spawn.c,
 * scaler.c), the stop's deadline, the watchdog, STATUS=. It also answers
 * warrenctl and /metrics from the worker table (status.c). Nothing per
 * turn walks every slot: an event names its slot, and the counts READY
 * and the worker numbers need are kept as they change.
 */
#include "config.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "pool.h"
#include "master/master.h"

#define STOP_MARGIN_MS 5000 /* past shutdown_timeout + kill_grace */

static struct {
	int sigfd;
	bool stopping;
	int64_t kill_at; /* stop: SIGKILL what is left */
	bool ready_sent;
	bool reload_pending;
	long watchdog_ms;
	int64_t next_watchdog;
	int64_t next_status;
	char status[1024];
	struct ev *sigev;
	bool child_exited;    /* SIGCHLD came: reap */
	int64_t next_scale;   /* scaler.c's next look at the pools */
	struct timers timers; /* every deadline the loop waits for */
} m;

static void begin_stop(void)
{
	int grace = 0;

	if (m.stopping)
		return;
	m.stopping = true;
	notify_stopping();
	log_info("stopping: running handlers get %d s",
		 pool_table()->cf->shutdown_timeout);
	for (struct pool *p = pool_first(); p != NULL; p = p->next) {
		if (p->q->kill_grace > grace)
			grace = p->q->kill_grace;
		for (int i = p->nslots - 1; i >= 0; i--) {
			struct slot *s = p->slots[i];

			if (s->pid > 0)
				slot_command(s, COMMAND_STOP);
			else
				slot_remove(s);
		}
	}
	m.kill_at =
	    now_ms() +
	    (int64_t)(pool_table()->cf->shutdown_timeout + grace) * 1000 +
	    STOP_MARGIN_MS;
}

static void kill_all(int sig)
{
	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++)
			if (p->slots[i]->pid > 0)
				kill(p->slots[i]->pid, sig);
}

static void on_signals(void *arg, uint32_t events)
{
	struct signalfd_siginfo si;

	(void)arg;
	(void)events;
	while (read(m.sigfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			begin_stop();
			break;
		case SIGHUP:
			m.reload_pending = true;
			break;
		case SIGCHLD:
			m.child_exited = true;
			break;
		default:
			break;
		}
	}
}

/* The STATUS= line: per queue, workers consuming, busy, and counts. */
static void update_status(void)
{
	char buf[sizeof(m.status)];
	size_t o = 0;

	buf[0] = '\0';
	for (struct pool *p = pool_first(); p != NULL && o < sizeof(buf);
	     p = p->next) {
		int cons = 0, busy = 0;

		if (p->removed)
			continue;
		for (int i = 0; i < p->nslots; i++) {
			if (p->slots[i]->retiring)
				continue;
			if (p->slots[i]->state != 0)
				cons++;
			if (p->slots[i]->state == REPORT_BUSY)
				busy++;
		}
		o += (size_t)snprintf(
		    buf + o, sizeof(buf) - o,
		    "%s%s %d/%d %s, %d busy; %lu done, %lu retried, %lu "
		    "failed%s",
		    o ? " | " : "", p->q->name, cons,
		    p->sc.target > 0 ? p->sc.target : scaler_floor(p),
		    p->paused			       ? "paused"
		    : p->breaker.state == BREAKER_OPEN ? "breaker open"
		    : p->breaker.state == BREAKER_HALF_OPEN
			? "breaker half-open"
			: "consuming",
		    busy, p->done, p->retried, p->failed,
		    p->last_error[0] ? " (workers failing)" : "");
	}
	if (strcmp(buf, m.status) != 0) {
		memcpy(m.status, buf, sizeof(buf));
		notify_status(buf);
	}
}

static void check_ready(void)
{
	int n = 0;

	if (m.ready_sent || m.stopping || pool_table()->unreported > 0)
		return;
	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		n += p->active;
	m.ready_sent = true;
	update_status();
	m.next_status = now_ms() + 1000;
	notify_ready();
	log_info("ready: %d worker%s started", n, n == 1 ? "" : "s");
}

/* What status.c renders: the table and the master's own state. */
static const struct master_view *master_view(void)
{
	static struct master_view view;

	view.path = pool_table()->path;
	view.cf = pool_table()->cf;
	view.pools = pool_first();
	view.ready = m.ready_sent;
	view.stopping = m.stopping;
	return &view;
}

static char *status_answer(void)
{
	return status_json(master_view());
}

static char *metrics_text(void)
{
	return status_metrics(master_view());
}

static char *health_answer(int *code)
{
	return health_text(master_view(), code);
}

/* warrenctl pause/resume: -1 if there is no such queue. */
static int master_pause(const char *name, bool pause)
{
	struct pool *p = pool_find(name);

	if (p == NULL)
		return -1;
	if (p->paused == pause)
		return 0;
	p->paused = pause;
	log_info("queue %s %s by warrenctl%s", name,
		 pause ? "paused" : "resumed",
		 pause ? ": its workers stop consuming after their current "
			 "message"
		 : breaker_holds(&p->breaker)
		     ? " (its circuit breaker still holds it)"
		     : "");
	for (int i = 0; i < p->nslots && !breaker_holds(&p->breaker); i++)
		slot_command(p->slots[i],
			     pause ? COMMAND_PAUSE : COMMAND_RESUME);
	m.next_status = now_ms(); /* STATUS= says it at once */
	return 0;
}

/* warrenctl scale and restart: scaler.c's, looked at now. */
static int master_scale(const char *name, int n)
{
	m.next_scale = 0;
	m.next_status = now_ms();
	return scaler_scale(name, n);
}

static int master_restart(const char *name)
{
	m.next_scale = 0;
	return scaler_restart(name);
}

/*
 * The control socket and metrics listener of cf: opened again when moved,
 * and tried again at each reload while they could not be opened.
 */
static void open_listeners(const struct config *cf, const struct config *old)
{
	static const struct control_ops control_ops = {
	    status_answer, metrics_text, master_pause, master_scale,
	    master_restart};

	if (old == NULL || strcmp(cf->control_socket, old->control_socket) ||
	    (!control_is_open() && cf->control_socket[0] != '\0'))
		control_open(cf->control_socket, &control_ops);
	if (old == NULL || strcmp(cf->metrics_listen, old->metrics_listen) ||
	    (!metrics_is_open() && cf->metrics_listen[0] != '\0'))
		metrics_open(cf->metrics_listen, metrics_text, health_answer);
}

/*
 * The master's timers, each owning one deadline: when it is next due (0:
 * not armed) and what runs then. Registered once, run in this order.
 */
static int64_t respawn_next(void *arg)
{
	(void)arg;
	return m.stopping ? 0 : spawn_next_respawn();
}

static void respawn_run(void *arg, int64_t now)
{
	(void)arg;
	(void)now;
	spawn_due();
}

static int64_t rearm_next(void *arg)
{
	(void)arg;
	return spawn_next_rearm();
}

static void rearm_run(void *arg, int64_t now)
{
	(void)arg;
	(void)now;
	spawn_rearm_due();
}

/* Pools sized, watched and rolled (scaler.c), a few times a second; 0
 * (warrenctl scale, restart) is at once. */
static int64_t scale_next(void *arg)
{
	(void)arg;
	return m.stopping ? 0 : m.next_scale == 0 ? 1 : m.next_scale;
}

static void scale_run(void *arg, int64_t now)
{
	static const struct scaler_ops ops = {spawn_one, spawn_retire};

	(void)arg;
	(void)now;
	m.next_scale = scaler_tick(&ops);
}

static int64_t kill_next(void *arg)
{
	(void)arg;
	return m.stopping ? m.kill_at : 0;
}

static void kill_run(void *arg, int64_t now)
{
	(void)arg;
	(void)now;
	log_warnx("workers still running past the stop deadline; killing "
		  "them");
	kill_all(SIGKILL);
	m.kill_at = 0;
}

static int64_t watchdog_next(void *arg)
{
	(void)arg;
	return m.watchdog_ms > 0 ? m.next_watchdog : 0;
}

static void watchdog_run(void *arg, int64_t now)
{
	(void)arg;
	notify_watchdog();
	m.next_watchdog = now + (m.watchdog_ms + 1) / 2; /* 1 ms at least */
}

static int64_t status_next(void *arg)
{
	(void)arg;
	return m.ready_sent ? m.next_status : 0;
}

static void status_run(void *arg, int64_t now)
{
	(void)arg;
	update_status();
	m.next_status = now + 1000;
}

/* Modules' own timers, with no argument to pass. */
static int64_t control_next(void *arg)
{
	(void)arg;
	return control_next_timer();
}

static void control_run(void *arg, int64_t now)
{
	(void)arg;
	(void)now;
	control_timers();
}

static int64_t metrics_next(void *arg)
{
	(void)arg;
	return metrics_next_timer();
}

static void metrics_run(void *arg, int64_t now)
{
	(void)arg;
	(void)now;
	metrics_timers();
}

/* An open breaker's end wakes the loop; breakers_tick runs every turn. */
static int64_t breakers_next(void *arg)
{
	(void)arg;
	return m.stopping ? 0 : breakers_next_timer();
}

static void timers_init(void)
{
	timers_add(&m.timers, "rearm", rearm_next, rearm_run, NULL);
	timers_add(&m.timers, "control", control_next, control_run, NULL);
	timers_add(&m.timers, "metrics", metrics_next, metrics_run, NULL);
	timers_add(&m.timers, "respawn", respawn_next, respawn_run, NULL);
	timers_add(&m.timers, "scale", scale_next, scale_run, NULL);
	timers_add(&m.timers, "breakers", breakers_next, NULL, NULL);
	timers_add(&m.timers, "stop", kill_next, kill_run, NULL);
	timers_add(&m.timers, "watchdog", watchdog_next, watchdog_run, NULL);
	timers_add(&m.timers, "status", status_next, status_run, NULL);
}

/*
 * One turn: what the events flagged (an exit, a reload), the timers due,
 * and what is looked at every turn (READY=1, the breakers).
 */
static void loop(void)
{
	for (;;) {
		ev_wait(timers_wait_ms(&m.timers, now_ms()));
		if (m.child_exited) {
			m.child_exited = false;
			exits_reap(m.stopping);
		}
		if (m.reload_pending && !m.stopping) {
			m.reload_pending = false;
			/* READY=1 again once all report */
			if (reconfigure(open_listeners))
				m.ready_sent = false;
		}
		if (m.stopping && spawn_alive() == 0)
			break;
		timers_run(&m.timers, now_ms());
		if (!m.stopping) {
			check_ready();
			breakers_tick();
		}
	}
}

static void cleanup(void)
{
	control_close();
	metrics_close();
	spawn_free();
	pools_free();
	reconfigure_free();
	ev_del(m.sigev);
	close(m.sigfd);
	close(ev_fd());
}

int master_run(const char *path, struct config *cf)
{
	reconfigure_init(path, cf);
	srandom((unsigned)getpid() ^ (unsigned)now_ms());
	/* the first record opens the journal's socket, below fd_floor:
	 * workers keep it */
	log_info("starting with %s: %d queue%s", path, cf->nqueues,
		 cf->nqueues == 1 ? "" : "s");
	m.sigfd = signal_fd();
	spawn_init(m.sigfd);
	if (ev_init() == -1)
		fatal("epoll_create1");
	m.sigev = ev_add(m.sigfd, EPOLLIN, on_signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* orphans of dead workers' handlers come to us, to be reaped */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) == -1)
		log_warn("PR_SET_CHILD_SUBREAPER");
	m.watchdog_ms = notify_watchdog_ms();
	m.next_watchdog = now_ms();
	timers_init();
	reconfigure_warn_exposed(cf);
	mq_preload_ca(&cf->broker);
	open_listeners(cf, NULL);
	spawn_gate_close();
	for (int i = 0; i < cf->nqueues; i++)
		spawn_resize(pool_new(&cf->queues[i]));
	spawn_gate_open();
	check_ready(); /* no worker to wait for: ready now */
	loop();
	log_info("stopped");
	cleanup();
	return 0;
}
