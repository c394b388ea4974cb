/*
 * master.c: the supervisor's loop. Owns no AMQP connection. Signals, the
 * workers' control sockets, warrenctl's clients and the metrics listener
 * are read through one epoll set (evloop.c); the wait's timeout drives the
 * timers. Each turn acts on what the events flagged, in one flat list:
 * reaping (exits.c), a reload (reconfigure.c), a stop, respawns and sizing
 * (spawn.c, scaler.c), READY=1 and STATUS=, the watchdog. It also answers
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
	bool child_exited;  /* SIGCHLD came: reap */
	int64_t next_scale; /* scaler.c's next look at the pools */
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

/* Pools sized, watched and rolled (scaler.c), a few times a second. */
static void scale_due(void)
{
	static const struct scaler_ops ops = {spawn_one, spawn_retire};

	if (now_ms() >= m.next_scale)
		m.next_scale = scaler_tick(&ops);
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

/* The earliest of the timers, as a wait in ms (-1: none). */
static int next_timeout(void)
{
	int64_t next = 0, now = now_ms(), t;

#define EARLIER(x) (next == 0 || (x) < next)
	if (!m.stopping)
		next = spawn_next_respawn();
	if (m.stopping && m.kill_at != 0 && EARLIER(m.kill_at))
		next = m.kill_at;
	if (m.watchdog_ms > 0 && EARLIER(m.next_watchdog))
		next = m.next_watchdog;
	if ((t = spawn_next_rearm()) > 0 && EARLIER(t))
		next = t;
	if (!m.stopping && EARLIER(m.next_scale))
		next = m.next_scale;
	if (m.ready_sent && EARLIER(m.next_status))
		next = m.next_status;
	if ((t = control_next_timer()) > 0 && EARLIER(t))
		next = t;
	if ((t = metrics_next_timer()) > 0 && EARLIER(t))
		next = t;
	if ((t = breakers_next_timer()) > 0 && EARLIER(t))
		next = t;
#undef EARLIER
	if (next == 0)
		return -1;
	if (next - now > INT_MAX)
		return INT_MAX;
	return next <= now ? 0 : (int)(next - now);
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

static void loop(void)
{
	for (;;) {
		ev_wait(next_timeout());
		if (m.child_exited) {
			m.child_exited = false;
			exits_reap(m.stopping);
		}
		spawn_rearm_due();
		control_timers();
		metrics_timers();
		if (m.reload_pending && !m.stopping) {
			m.reload_pending = false;
			/* READY=1 again once all report */
			if (reconfigure(open_listeners))
				m.ready_sent = false;
		}
		if (m.stopping) {
			if (spawn_alive() == 0)
				break;
			if (now_ms() >= m.kill_at) {
				log_warnx("workers still running past the stop "
					  "deadline; killing them");
				kill_all(SIGKILL);
				m.kill_at = 0;
			}
		} else {
			spawn_due();
			scale_due();
			check_ready();
			breakers_tick();
		}
		if (m.watchdog_ms > 0 && now_ms() >= m.next_watchdog) {
			notify_watchdog();
			m.next_watchdog = now_ms() + m.watchdog_ms / 2;
		}
		if (m.ready_sent && now_ms() >= m.next_status) {
			update_status();
			m.next_status = now_ms() + 1000;
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
