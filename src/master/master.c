/*
 * master.c: the supervisor. Owns no AMQP connection. Keeps a pool of
 * worker slots per queue, forks workers into them, reaps them, respawns
 * the dead with exponential backoff and jitter, reloads on SIGHUP and
 * stops gracefully on SIGTERM/SIGINT. Signals, the workers' control
 * sockets, warrenctl's clients and the metrics listener are read through
 * one epoll set (evloop.c); the wait's timeout drives the timers, kept in
 * a heap (timerq.c). Nothing per turn walks every slot: an event names
 * its slot, and the counts READY and the worker numbers need are kept as
 * they change. What the workers report is read and acted on in reports.c.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "pool.h"
#include "master/master.h"

#define STAYED_UP_MS 30000  /* a worker up this long resets backoff */
#define STOP_MARGIN_MS 5000 /* past shutdown_timeout + kill_grace */
#define REPORT_BATCH_MS 20  /* a worker's reports are read this often */

static void open_listeners(const struct config *cf, const struct config *old);

struct cf_gen {
	struct config *cf;
	struct cf_gen *next;
};

static struct {
	const char *path;
	struct config *cf;  /* the running configuration */
	struct cf_gen *old; /* earlier ones, kept for their pools */
	int sigfd;
	bool stopping;
	int64_t kill_at; /* stop: SIGKILL what is left */
	bool ready_sent;
	bool reload_pending;
	long watchdog_ms;
	int64_t next_watchdog;
	int64_t next_status;
	char status[1024];
	int spawn_errno; /* the last cause a worker could not start */
	int64_t spawn_told;
	struct ev *sigev;
	bool child_exited;   /* SIGCHLD came: reap */
	bool gating;	     /* new workers wait for gate_open() */
	struct slot **rearm; /* slots whose reports wait for the next batch */
	int nrearm, caprearm;
	int64_t rearm_at;	/* when they are watched again, 0: none */
	struct timerq respawns; /* slots waiting to be started again */
	int nchildren;		/* workers alive */
	int fd_floor;		/* fds from here up are the master's own: a new
				 * worker closes them */
	struct pidmap pids;	/* slots of live workers, by pid */
	int64_t next_scale;	/* scaler.c's next look at the pools */
} m;

static void on_slot_event(void *arg, uint32_t events);

/*
 * Close, in a new worker, every fd the master opened (worker sockets,
 * epoll, warrenctl's and the metrics listener's) but its own end: one
 * close_range() each side of it, however many workers there are.
 */
static void close_master_fds(int keep)
{
	DIR *d;
	struct dirent *e;

	if ((keep <= m.fd_floor ||
	     close_range((unsigned)m.fd_floor, (unsigned)keep - 1, 0) == 0) &&
	    close_range((unsigned)keep + 1, ~0U, 0) == 0)
		return;
	/* a seccomp filter without close_range: the fds that are open */
	if ((d = opendir("/proc/self/fd")) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] != '.' && fd >= m.fd_floor && fd != keep &&
		    fd != dirfd(d))
			close(fd);
	}
	closedir(d);
}

static int backoff_ms(int failures);

/*
 * A fork or its socket failed (out of fds or processes): said once per
 * cause a minute, and the slot backs off like a worker that died young.
 */
/* Start s again at monotonic ms at. */
static void schedule(struct slot *s, int64_t at)
{
	s->respawn_at = at;
	s->timers++;
	timerq_push(&m.respawns, at, s);
}

static void spawn_failed(struct slot *s, const char *what)
{
	int e = errno;

	s->failures++;
	schedule(s, now_ms() + backoff_ms(s->failures));
	if (e == m.spawn_errno && now_ms() < m.spawn_told + 60000) {
		log_debug("cannot start worker %s/%d: %s: %s", s->pool->q->name,
			  s->number, what, strerror(e));
		return;
	}
	m.spawn_errno = e;
	m.spawn_told = now_ms();
	log_warnx("cannot start worker %s/%d: %s: %s; retrying with backoff",
		  s->pool->q->name, s->number, what, strerror(e));
}

static void spawn(struct slot *s)
{
	int sv[2];
	pid_t pid;

	s->respawn_at = 0;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		spawn_failed(s, "socketpair");
		return;
	}
	/* reports are sent without waiting: room for a stalled master */
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &(int){1 << 20}, sizeof(int));
	pid = fork();
	if (pid == -1) {
		spawn_failed(s, "fork");
		close(sv[0]);
		close(sv[1]);
		return;
	}
	if (pid == 0) {
		close_master_fds(sv[1]);
		/* until its loop watches the control socket, the worker
		 * dies with the master */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(WORKER_EXIT_MASTER);
		struct worker_start ws = {m.cf,
					  s->pool->q,
					  s->number,
					  sv[1],
					  &s->pool->marks,
					  reports_consumer_timeout(),
					  s->home_moves,
					  pool_held(s->pool)};
		worker_main(&ws);
	}
	close(sv[1]);
	slot_close_ctl(s);
	s->ctl = sv[0];
	s->ev = ev_add(s->ctl, EPOLLIN | EPOLLONESHOT, on_slot_event, s);
	s->pid = pid;
	pidmap_put(&m.pids, pid, s);
	m.nchildren++;
	if (s->ran)
		s->pool->restarts++;
	s->ran = true;
	s->started = s->idle_since = now_ms();
	s->gen = s->pool->sc.gen;
	s->state = 0;
	s->node = -1;
	s->why[0] = '\0';
	log_debug("started worker %s/%d, pid %ld", s->pool->q->name, s->number,
		  (long)pid);
	s->gated = m.gating;
	if (!m.gating)
		slot_command(s, COMMAND_GO);
}

/*
 * Start-up and reload fork their workers as one batch (gate_open()
 * then lets them all go): each new worker waits for the word before it
 * connects, so the forking is not slowed by workers already at work.
 */
static void gate_close(void)
{
	m.gating = true;
}

static void gate_open(void)
{
	m.gating = false;
	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++)
			if (p->slots[i]->gated) {
				p->slots[i]->gated = false;
				slot_command(p->slots[i], COMMAND_GO);
			}
}

/* Tell a slot's worker to finish its message and go; never respawned. */
static void retire(struct slot *s)
{
	slot_deactivate(s);
	if (s->pid > 0)
		slot_command(s, COMMAND_RETIRE);
	else
		slot_remove(s);
}

/* One more worker for p, numbered the lowest free. */
static void start_one(struct pool *p)
{
	spawn(slot_add(p, pool_number_free(p, 1)));
}

/*
 * Start or retire workers until p has between its floor and ceiling
 * (extra workers of an elastic pool stay; scaler.c retires them idle).
 */
static void pool_resize(struct pool *p)
{
	int want = p->active, n = 0, k = 0;
	struct slot **v;

	if (want < scaler_floor(p))
		want = scaler_floor(p);
	if (want > scaler_ceiling(p))
		want = scaler_ceiling(p);

	while (p->active < want) {
		n = pool_number_free(p, n + 1);
		spawn(slot_add(p, n));
	}
	if (p->active <= want)
		return;
	v = xcalloc((size_t)p->active, sizeof(*v));
	for (int i = 0; i < p->nslots; i++)
		if (!p->slots[i]->retiring)
			v[k++] = p->slots[i];
	qsort(v, (size_t)k, sizeof(*v), supervise_retire_order);
	for (int i = 0; i < k - want; i++)
		retire(v[i]);
	free(v);
}

static void pool_retire_all(struct pool *p)
{
	for (int i = p->nslots - 1; i >= 0; i--)
		if (!p->slots[i]->retiring)
			retire(p->slots[i]);
}

/* Free earlier configurations that no pool points into any more. */
static void configs_gc(void)
{
	struct cf_gen **gp = &m.old;

	while (*gp != NULL) {
		struct cf_gen *g = *gp;

		if (!pool_config_in_use(g->cf)) {
			*gp = g->next;
			config_free(g->cf);
			free(g);
		} else {
			gp = &g->next;
		}
	}
}

/* Free removed pools whose last worker has gone, and their configs. */
static void gc(void)
{
	pools_gc();
	configs_gc();
}

/* A password file others can read is said at start and every reload. */
static void warn_exposed(const struct config *cf)
{
	char why[600];

	if (config_password_exposed(cf, why, sizeof(why)))
		log_warnx("%s", why);
}

/* The running pools (not removed), in table order; caller frees. */
static struct pool **running_pools(int *n)
{
	struct pool **v;
	int k = 0;

	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		k++;
	v = xcalloc((size_t)k + 1, sizeof(*v));
	*n = 0;
	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		if (!p->removed)
			v[(*n)++] = p;
	return v;
}

/* The plan's steps for the running pools run[], and its new queues. */
static void apply_plan(const struct reload_plan *pl, struct pool **run)
{
	for (int i = 0; i < pl->n; i++) {
		struct pool *p = run[i];

		switch (pl->pools[i].step) {
		case RELOAD_REMOVE:
			log_info("queue %s removed: its workers drain and stop",
				 p->q->name);
			p->removed = true;
			pool_retire_all(p);
			break;
		case RELOAD_ROLL:
			log_info("queue %s changed: rolling its workers",
				 p->q->name);
			pool_retire_all(p);
			p->q = pl->pools[i].nq;
			break;
		case RELOAD_KEEP:
			p->q = pl->pools[i].nq;
			break;
		}
		scaler_reset(p); /* warrenctl scale lasts until a reload */
	}
	for (int i = 0; i < pl->nadded; i++) {
		log_info("queue %s added", pl->added[i]->name);
		pool_new(pl->added[i]);
	}
}

/* A plan for the running pools from the running configuration to ncf. */
static struct reload_plan *plan_for(const struct config *ncf,
				    struct pool ***run)
{
	const struct queue_conf **qs;
	struct reload_plan *pl;
	int n;

	*run = running_pools(&n);
	qs = xcalloc((size_t)n + 1, sizeof(*qs));
	for (int i = 0; i < n; i++)
		qs[i] = (*run)[i]->q;
	pl = reload_plan(m.cf, ncf, qs, n);
	free(qs);
	return pl;
}

/*
 * SIGHUP: parse the file anew; keep the running configuration if it is
 * bad, else apply the plan reload.c makes of the two.
 */
static void reload(void)
{
	char err[1024];
	struct config *ncf;
	struct cf_gen *g;
	struct reload_plan *pl;
	struct pool **run;

	notify_reloading();
	log_info("reloading %s", m.path);
	ncf = config_load(m.path, err, sizeof(err));
	if (ncf != NULL && identity_check(ncf, err, sizeof(err)) != 0) {
		config_free(ncf);
		ncf = NULL;
	}
	if (ncf == NULL) {
		log_fields(LOG_ERR, NULL,
			   "%s; keeping the running configuration", err);
		notify_ready();
		return;
	}
	warn_exposed(ncf);
	mq_preload_ca(&ncf->broker);
	pl = plan_for(ncf, &run);
	/* a new consumer_timeout: the broker may have been changed too */
	if (pl->consumer_timeout_changed)
		reports_consumer_timeout_reset();
	apply_plan(pl, run);
	free(run);
	reload_plan_free(pl);
	g = xcalloc(1, sizeof(*g));
	g->cf = m.cf;
	g->next = m.old;
	m.old = g;
	m.cf = ncf;
	pool_table_set(m.path, ncf);
	open_listeners(ncf, g->cf);
	gate_close();
	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		if (!p->removed)
			pool_resize(p);
	gate_open();
	gc();
	m.ready_sent = false; /* READY=1 again once all report */
}

static int backoff_ms(int failures)
{
	return supervise_backoff_ms(failures, random());
}

/* A worker died holding a message: the pool counts it against that one. */
static void count_death(struct slot *s, int st)
{
	struct mark *k;

	if (s->holding == NULL)
		return;
	if (supervise_crashed(st)) {
		k = ledger_add(&s->pool->marks, s->holding);
		k->deaths++;
		if (k->deaths == LEDGER_DEATHS_MAX)
			log_warnx("queue %s: %d workers died holding message "
				  "%s; the next worker to get it parks it",
				  s->pool->q->name, k->deaths, s->holding);
		reports_tell_mark(s->pool, k);
	}
	free(s->holding);
	s->holding = NULL;
}

/*
 * Kill a dead worker's handler group g, if any of its processes is ours:
 * they are given to us (PR_SET_CHILD_SUBREAPER) when the worker dies. A
 * group none of whose processes is our child may be gone, its id taken
 * by a stranger's new group since: the worker reaped its handler before
 * it could report so.
 */
static void kill_group(const struct identity *id, pid_t g)
{
	siginfo_t si;

	if (g <= 0)
		return;
	si.si_pid = 0;
	if (waitid(P_PGID, (id_t)g, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
		identity_kill(id, -g, SIGKILL);
	else
		log_debug("handler group %ld: none of it left", (long)g);
}

static void on_exit_of(struct slot *s, int st)
{
	struct pool *p = s->pool;
	char words[800];

	/* its last words first: outcome counts, handler group, reason */
	if (s->ctl >= 0)
		reports_read(s);
	pidmap_del(&m.pids, s->pid);
	m.nchildren--;
	s->pid = 0;
	count_death(s, st);
	reports_slot_gone(s);
	/* a worker that died mid-message leaves no part of its handler */
	if (s->state != REPORT_BUSY)
		s->handler = 0;
	s->state = 0;
	kill_group(&p->q->id, s->handler);
	s->handler = 0;
	/* a persistent handler lives between messages too */
	kill_group(&p->q->id, s->group);
	s->group = 0;
	if (s->retiring || m.stopping || p->removed) {
		log_debug("worker %s/%d stopped", p->q->name, s->number);
		slot_remove(s);
		return;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_HOME) {
		/* between messages, by choice: back at once, no backoff */
		s->home_moves++;
		schedule(s, now_ms());
		return;
	}
	slot_reported(s);
	s->unreachable =
	    WIFEXITED(st) && (WEXITSTATUS(st) == WORKER_EXIT_CONNECT ||
			      WEXITSTATUS(st) == WORKER_EXIT_LOGIN);
	if (now_ms() - s->started >= STAYED_UP_MS) {
		s->failures = 0;
		p->last_error[0] = '\0'; /* a new episode */
	}
	s->failures++;
	supervise_exit_words(s, st, words, sizeof(words));
	if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_TAKEN_BACK) {
		/* already said once, by taken_back() */
		log_debug("worker %s/%d %s", p->q->name, s->number, words);
	} else if (strcmp(words, p->last_error) != 0) {
		p->recovery_told = false;
		log_warnx("worker %s/%d %s; respawning with backoff",
			  p->q->name, s->number, words);
		snprintf(p->last_error, sizeof(p->last_error), "%s", words);
	} else {
		log_debug("worker %s/%d %s (again)", p->q->name, s->number,
			  words);
	}
	schedule(s, now_ms() + backoff_ms(s->failures));
}

static void reap(void)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		struct slot *s = pidmap_get(&m.pids, pid);

		if (s != NULL)
			on_exit_of(s, st);
	}
	if (pid == -1 && errno != ECHILD)
		log_warn("waitpid");
	gc();
}

/*
 * A worker's reports are read in batches: once read, its socket is not
 * watched again for REPORT_BATCH_MS (EPOLLONESHOT). A busy pool then
 * wakes the master a few dozen times a second, not several times a
 * message. Nothing waits on it that matters sooner: a worker's exit is
 * seen at once (SIGCHLD), and its socket is read to the end then.
 */
static void on_slot_event(void *arg, uint32_t events)
{
	struct slot *s = arg;

	(void)events;
	reports_read(s);
	if (s->ev == NULL) /* closed: the worker is going */
		return;
	if (m.nrearm == m.caprearm) {
		m.caprearm = m.caprearm ? m.caprearm * 2 : 64;
		m.rearm =
		    realloc(m.rearm, (size_t)m.caprearm * sizeof(*m.rearm));
		if (m.rearm == NULL)
			fatal("realloc");
	}
	m.rearm[m.nrearm++] = s;
	s->timers++; /* the batch names it too */
	if (m.rearm_at == 0)
		m.rearm_at = now_ms() + REPORT_BATCH_MS;
}

/* Watch again the sockets of the last batch. */
static void rearm_due(void)
{
	if (m.rearm_at == 0 || now_ms() < m.rearm_at)
		return;
	for (int i = 0; i < m.nrearm; i++) {
		struct slot *s = m.rearm[i];

		if (--s->timers == 0 && s->gone)
			free(s);
		else if (!s->gone && s->ev != NULL)
			ev_mod(s->ev, EPOLLIN | EPOLLONESHOT);
	}
	m.nrearm = 0;
	m.rearm_at = 0;
}

static void begin_stop(void)
{
	int grace = 0;

	if (m.stopping)
		return;
	m.stopping = true;
	notify_stopping();
	log_info("stopping: running handlers get %d s", m.cf->shutdown_timeout);
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
	m.kill_at = now_ms() +
		    (int64_t)(m.cf->shutdown_timeout + grace) * 1000 +
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

/* Start the slots whose respawn time has come, earliest first. */
static void respawn_due(void)
{
	const struct timer *t;
	int64_t now = now_ms();

	while ((t = timerq_peek(&m.respawns)) != NULL && t->at <= now) {
		struct slot *s = t->p;

		timerq_pop(&m.respawns);
		if (--s->timers == 0 && s->gone) {
			free(s);
			continue;
		}
		/* a stale entry: the slot was started or moved since */
		if (!s->gone && s->pid == 0 && s->respawn_at != 0 &&
		    s->respawn_at <= now)
			spawn(s);
	}
}

/* Pools sized, watched and rolled (scaler.c), a few times a second. */
static void scale_due(void)
{
	static const struct scaler_ops ops = {start_one, retire};

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
	const struct timer *r = timerq_peek(&m.respawns);

#define EARLIER(x) (next == 0 || (x) < next)
	if (r != NULL && !m.stopping)
		next = r->at;
	if (m.stopping && m.kill_at != 0 && EARLIER(m.kill_at))
		next = m.kill_at;
	if (m.watchdog_ms > 0 && EARLIER(m.next_watchdog))
		next = m.next_watchdog;
	if (m.rearm_at != 0 && EARLIER(m.rearm_at))
		next = m.rearm_at;
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

static void loop(void)
{
	for (;;) {
		ev_wait(next_timeout());
		if (m.child_exited) {
			m.child_exited = false;
			reap();
		}
		rearm_due();
		control_timers();
		metrics_timers();
		if (m.reload_pending && !m.stopping) {
			m.reload_pending = false;
			reload();
		}
		if (m.stopping) {
			if (m.nchildren == 0)
				break;
			if (now_ms() >= m.kill_at) {
				log_warnx("workers still running past the stop "
					  "deadline; killing them");
				kill_all(SIGKILL);
				m.kill_at = 0;
			}
		} else {
			respawn_due();
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
	struct cf_gen *g, *gn;
	const struct timer *t;

	control_close();
	metrics_close();
	while ((t = timerq_peek(&m.respawns)) != NULL) {
		struct slot *s = t->p;

		timerq_pop(&m.respawns);
		if (--s->timers == 0 && s->gone)
			free(s);
	}
	timerq_free(&m.respawns);
	m.rearm_at = 1; /* let go of the last batch */
	rearm_due();
	free(m.rearm);
	pools_free();
	for (g = m.old; g != NULL; g = gn) {
		gn = g->next;
		config_free(g->cf);
		free(g);
	}
	config_free(m.cf);
	pidmap_free(&m.pids);
	ev_del(m.sigev);
	close(m.sigfd);
	close(ev_fd());
}

/* What status.c renders: the table and the master's own state. */
static const struct master_view *master_view(void)
{
	static struct master_view view;

	view.path = m.path;
	view.cf = m.cf;
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

int master_run(const char *path, struct config *cf)
{
	m.path = path;
	m.cf = cf;
	pool_table_set(path, cf);
	srandom((unsigned)getpid() ^ (unsigned)now_ms());
	/* the first record opens the journal's socket, below fd_floor:
	 * workers keep it */
	log_info("starting with %s: %d queue%s", path, cf->nqueues,
		 cf->nqueues == 1 ? "" : "s");
	m.sigfd = signal_fd();
	m.fd_floor = m.sigfd;
	if (ev_init() == -1)
		fatal("epoll_create1");
	m.sigev = ev_add(m.sigfd, EPOLLIN, on_signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* orphans of dead workers' handlers come to us, to be reaped */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) == -1)
		log_warn("PR_SET_CHILD_SUBREAPER");
	m.watchdog_ms = notify_watchdog_ms();
	m.next_watchdog = now_ms();
	warn_exposed(cf);
	mq_preload_ca(&cf->broker);
	open_listeners(cf, NULL);
	gate_close();
	for (int i = 0; i < cf->nqueues; i++)
		pool_resize(pool_new(&cf->queues[i]));
	gate_open();
	check_ready(); /* no worker to wait for: ready now */
	loop();
	log_info("stopped");
	cleanup();
	return 0;
}
