/*
 * spawn.c: workers started into their slots, and again: the fork and its
 * control socket, the batch that waits for one go (start-up, reload),
 * respawns due from a heap of times (timerq.c), sizing a pool between its
 * floor and ceiling, retiring, and the batched reading of workers'
 * reports (a socket read at most every REPORT_BATCH_MS). Master only.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pool.h"
#include "master/master.h"

#define REPORT_BATCH_MS 20 /* a worker's reports are read this often */

static struct {
	int fd_floor;	 /* fds from here up are the master's own: a new
			  * worker closes them */
	bool gating;	 /* new workers wait for spawn_gate_open() */
	int spawn_errno; /* the last cause a worker could not start */
	int64_t spawn_told;
	struct slot **rearm; /* slots whose reports wait for the next batch */
	int nrearm, caprearm;
	int64_t rearm_at;	/* when they are watched again, 0: none */
	struct timerq respawns; /* slots waiting to be started again */
	int nchildren;		/* workers alive */
	struct pidmap pids;	/* slots of live workers, by pid */
} sp;

static void on_slot_event(void *arg, uint32_t events);

void spawn_init(int fd_floor)
{
	sp.fd_floor = fd_floor;
}

/*
 * Close, in a new worker, every fd the master opened (worker sockets,
 * epoll, warrenctl's and the metrics listener's) but its own end: one
 * close_range() each side of it, however many workers there are.
 */
static void close_master_fds(int keep)
{
	DIR *d;
	struct dirent *e;

	if ((keep <= sp.fd_floor ||
	     close_range((unsigned)sp.fd_floor, (unsigned)keep - 1, 0) == 0) &&
	    close_range((unsigned)keep + 1, ~0U, 0) == 0)
		return;
	/* a seccomp filter without close_range: the fds that are open */
	if ((d = opendir("/proc/self/fd")) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] != '.' && fd >= sp.fd_floor && fd != keep &&
		    fd != dirfd(d))
			close(fd);
	}
	closedir(d);
}

/* Start s again at monotonic ms at. */
void spawn_schedule(struct slot *s, int64_t at)
{
	s->respawn_at = at;
	s->timers++;
	timerq_push(&sp.respawns, at, s);
}

/*
 * A fork or its socket failed (out of fds or processes): said once per
 * cause a minute, and the slot backs off like a worker that died young.
 */
static void spawn_failed(struct slot *s, const char *what)
{
	int e = errno;

	s->failures++;
	spawn_schedule(s, now_ms() + spawn_backoff_ms(s->failures));
	if (e == sp.spawn_errno && now_ms() < sp.spawn_told + 60000) {
		log_debug("cannot start worker %s/%d: %s: %s", s->pool->q->name,
			  s->number, what, strerror(e));
		return;
	}
	sp.spawn_errno = e;
	sp.spawn_told = now_ms();
	log_warnx("cannot start worker %s/%d: %s: %s; retrying with backoff",
		  s->pool->q->name, s->number, what, strerror(e));
}

void spawn_start(struct slot *s)
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
		struct worker_start ws = {
		    pool_table()->cf, s->pool->q,
		    s->number,	      sv[1],
		    &s->pool->marks,  reports_consumer_timeout(),
		    s->home_moves,    pool_held(s->pool)};
		worker_main(&ws);
	}
	close(sv[1]);
	slot_close_ctl(s);
	s->ctl = sv[0];
	s->ev = ev_add(s->ctl, EPOLLIN | EPOLLONESHOT, on_slot_event, s);
	s->pid = pid;
	pidmap_put(&sp.pids, pid, s);
	sp.nchildren++;
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
	s->gated = sp.gating;
	if (!sp.gating)
		slot_command(s, COMMAND_GO);
}

/*
 * Start-up and reload fork their workers as one batch (spawn_gate_open()
 * then lets them all go): each new worker waits for the word before it
 * connects, so the forking is not slowed by workers already at work.
 */
void spawn_gate_close(void)
{
	sp.gating = true;
}

void spawn_gate_open(void)
{
	sp.gating = false;
	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++)
			if (p->slots[i]->gated) {
				p->slots[i]->gated = false;
				slot_command(p->slots[i], COMMAND_GO);
			}
}

/* Tell a slot's worker to finish its message and go; never respawned. */
void spawn_retire(struct slot *s)
{
	slot_deactivate(s);
	if (s->pid > 0)
		slot_command(s, COMMAND_RETIRE);
	else
		slot_remove(s);
}

/* One more worker for p, numbered the lowest free. */
void spawn_one(struct pool *p)
{
	spawn_start(slot_add(p, pool_number_free(p, 1)));
}

/*
 * Start or retire workers until p has between its floor and ceiling
 * (extra workers of an elastic pool stay; scaler.c retires them idle).
 */
void spawn_resize(struct pool *p)
{
	int want = p->active, n = 0, k = 0;
	struct slot **v;

	if (want < scaler_floor(p))
		want = scaler_floor(p);
	if (want > scaler_ceiling(p))
		want = scaler_ceiling(p);

	while (p->active < want) {
		n = pool_number_free(p, n + 1);
		spawn_start(slot_add(p, n));
	}
	if (p->active <= want)
		return;
	v = xcalloc((size_t)p->active, sizeof(*v));
	for (int i = 0; i < p->nslots; i++)
		if (!p->slots[i]->retiring)
			v[k++] = p->slots[i];
	qsort(v, (size_t)k, sizeof(*v), supervise_retire_order);
	for (int i = 0; i < k - want; i++)
		spawn_retire(v[i]);
	free(v);
}

void spawn_retire_all(struct pool *p)
{
	for (int i = p->nslots - 1; i >= 0; i--)
		if (!p->slots[i]->retiring)
			spawn_retire(p->slots[i]);
}

int spawn_backoff_ms(int failures)
{
	return supervise_backoff_ms(failures, random());
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
	if (sp.nrearm == sp.caprearm) {
		sp.caprearm = sp.caprearm ? sp.caprearm * 2 : 64;
		sp.rearm =
		    realloc(sp.rearm, (size_t)sp.caprearm * sizeof(*sp.rearm));
		if (sp.rearm == NULL)
			fatal("realloc");
	}
	sp.rearm[sp.nrearm++] = s;
	s->timers++; /* the batch names it too */
	if (sp.rearm_at == 0)
		sp.rearm_at = now_ms() + REPORT_BATCH_MS;
}

/* Watch again the sockets of the last batch. */
void spawn_rearm_due(void)
{
	if (sp.rearm_at == 0 || now_ms() < sp.rearm_at)
		return;
	for (int i = 0; i < sp.nrearm; i++) {
		struct slot *s = sp.rearm[i];

		if (--s->timers == 0 && s->gone)
			free(s);
		else if (!s->gone && s->ev != NULL)
			ev_mod(s->ev, EPOLLIN | EPOLLONESHOT);
	}
	sp.nrearm = 0;
	sp.rearm_at = 0;
}

/* Start the slots whose respawn time has come, earliest first. */
void spawn_due(void)
{
	const struct timer *t;
	int64_t now = now_ms();

	while ((t = timerq_peek(&sp.respawns)) != NULL && t->at <= now) {
		struct slot *s = t->p;

		timerq_pop(&sp.respawns);
		if (--s->timers == 0 && s->gone) {
			free(s);
			continue;
		}
		/* a stale entry: the slot was started or moved since */
		if (!s->gone && s->pid == 0 && s->respawn_at != 0 &&
		    s->respawn_at <= now)
			spawn_start(s);
	}
}

int64_t spawn_next_respawn(void)
{
	const struct timer *t = timerq_peek(&sp.respawns);

	return t != NULL ? t->at : 0;
}

int64_t spawn_next_rearm(void)
{
	return sp.rearm_at;
}

struct slot *spawn_slot_of(pid_t pid)
{
	return pidmap_get(&sp.pids, pid);
}

void spawn_exited(struct slot *s)
{
	pidmap_del(&sp.pids, s->pid);
	sp.nchildren--;
	s->pid = 0;
}

int spawn_alive(void)
{
	return sp.nchildren;
}

void spawn_free(void)
{
	const struct timer *t;

	while ((t = timerq_peek(&sp.respawns)) != NULL) {
		struct slot *s = t->p;

		timerq_pop(&sp.respawns);
		if (--s->timers == 0 && s->gone)
			free(s);
	}
	timerq_free(&sp.respawns);
	sp.rearm_at = 1; /* let go of the last batch */
	spawn_rearm_due();
	free(sp.rearm);
	pidmap_free(&sp.pids);
}
