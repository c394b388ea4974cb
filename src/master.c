/*
 * master.c: the supervisor. Owns no AMQP connection. Keeps a pool of
 * worker slots per queue, forks workers into them, reaps them, respawns
 * the dead with exponential backoff and jitter, reloads on SIGHUP and
 * stops gracefully on SIGTERM/SIGINT. Signals arrive through a signalfd
 * read in the one poll loop, whose timeout also drives the timers.
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
#include <unistd.h>

#include "warren.h"

#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 60000
#define STAYED_UP_MS 30000  /* a worker up this long resets backoff */
#define STOP_MARGIN_MS 5000 /* past shutdown_timeout + kill_grace */

struct pool;

struct slot {
	struct pool *pool;
	int number; /* WARREN_WORKER, from 1 */
	pid_t pid;  /* 0: not running */
	int ctl;    /* master's end of the control socket */
	int64_t started;
	int64_t respawn_at; /* 0: none scheduled */
	int failures;	    /* quick deaths in a row */
	char state;	    /* 0, REPORT_CONSUMING, REPORT_BUSY */
	pid_t handler;	    /* its handler's process group, or 0 */
	pid_t group;	    /* its persistent handler's group, or 0 */
	bool reported;	    /* said it consumes, or why it cannot */
	bool retiring;	    /* told to finish and go; not respawned */
	bool blocked;	    /* the broker blocks its publishing */
	int home_moves;	    /* moves home since it last consumed there */
	char *holding;	    /* key of the message in hand, or NULL */
	char why[700];	    /* last REPORT_DOWN text */
};

struct pool {
	const struct queue_conf *q;
	struct slot **slots;
	int nslots;
	unsigned long done, retried, failed;
	char last_error[800]; /* logged once per change */
	bool recovery_told;   /* "consuming again" said for it */
	bool removed;	      /* dropped by a reload; goes when empty */
	struct ledger marks;  /* messages that outlived their workers */
	struct pool *next;
};

static void on_report(struct slot *s);

struct cf_gen {
	struct config *cf;
	struct cf_gen *next;
};

static struct {
	const char *path;
	struct config *cf;  /* the running configuration */
	struct cf_gen *old; /* earlier ones, kept for their pools */
	struct pool *pools;
	int sigfd;
	bool stopping;
	int64_t kill_at; /* stop: SIGKILL what is left */
	bool ready_sent;
	bool reload_pending;
	long watchdog_ms;
	int64_t next_watchdog;
	int64_t next_status;
	char status[1024];
	int ct_ms;    /* the broker's consumer_timeout, once proven shorter */
	int nblocked; /* workers the broker blocks from publishing */
	int spawn_errno; /* the last cause a worker could not start */
	int64_t spawn_told;
	int64_t blocked_since;
} m;

static struct pool *pool_find(const char *name)
{
	for (struct pool *p = m.pools; p != NULL; p = p->next)
		if (!p->removed && strcmp(p->q->name, name) == 0)
			return p;
	return NULL;
}

static struct slot *slot_add(struct pool *p, int number)
{
	struct slot *s = xcalloc(1, sizeof(*s));

	s->pool = p;
	s->number = number;
	s->ctl = -1;
	p->slots =
	    realloc(p->slots, (size_t)(p->nslots + 1) * sizeof(*p->slots));
	if (p->slots == NULL)
		fatal("realloc");
	p->slots[p->nslots++] = s;
	return s;
}

static void slot_remove(struct slot *s)
{
	struct pool *p = s->pool;

	for (int i = 0; i < p->nslots; i++) {
		if (p->slots[i] == s) {
			memmove(&p->slots[i], &p->slots[i + 1],
				(size_t)(p->nslots - i - 1) *
				    sizeof(*p->slots));
			p->nslots--;
			break;
		}
	}
	if (s->ctl >= 0)
		close(s->ctl);
	if (s->blocked)
		m.nblocked--;
	free(s->holding);
	free(s);
}

/* Close, in a new worker, every fd of the master that is not its own. */
static void close_master_fds(const struct slot *mine)
{
	close(m.sigfd);
	for (struct pool *p = m.pools; p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++)
			if (p->slots[i] != mine && p->slots[i]->ctl >= 0)
				close(p->slots[i]->ctl);
}

static int backoff_ms(int failures);

/*
 * A fork or its socket failed (out of fds or processes): said once per
 * cause a minute, and the slot backs off like a worker that died young.
 */
static void spawn_failed(struct slot *s, const char *what)
{
	int e = errno;

	s->failures++;
	s->respawn_at = now_ms() + backoff_ms(s->failures);
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
		close_master_fds(s);
		close(sv[0]);
		/* until its loop watches the control socket, the worker
		 * dies with the master */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(WORKER_EXIT_MASTER);
		struct worker_start ws = {
		    m.cf,    s->pool->q,   s->number, sv[1], &s->pool->marks,
		    m.ct_ms, s->home_moves};
		worker_main(&ws);
	}
	close(sv[1]);
	if (s->ctl >= 0)
		close(s->ctl);
	s->ctl = sv[0];
	s->pid = pid;
	s->started = now_ms();
	s->state = 0;
	s->why[0] = '\0';
	log_debug("started worker %s/%d, pid %ld", s->pool->q->name, s->number,
		  (long)pid);
}

/* Lowest worker number no live, non-retiring slot of p holds. */
static int free_number(struct pool *p)
{
	for (int n = 1;; n++) {
		bool used = false;

		for (int i = 0; i < p->nslots; i++)
			if (!p->slots[i]->retiring && p->slots[i]->number == n)
				used = true;
		if (!used)
			return n;
	}
}

static int active_count(struct pool *p)
{
	int n = 0;

	for (int i = 0; i < p->nslots; i++)
		if (!p->slots[i]->retiring)
			n++;
	return n;
}

/* A command, code byte then optional text; never waits for the worker. */
static void send_text(struct slot *s, char cmd, const char *text)
{
	char buf[1200];
	size_t n = 1;

	if (s->pid <= 0 || s->ctl < 0)
		return;
	buf[0] = cmd;
	if (text != NULL) {
		n += (size_t)snprintf(buf + 1, sizeof(buf) - 1, "%s", text);
		if (n > sizeof(buf) - 1)
			n = sizeof(buf) - 1;
	}
	(void)send(s->ctl, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void send_command(struct slot *s, char cmd)
{
	send_text(s, cmd, NULL);
}

/* A changed mark goes to every worker of the pool. */
static void tell_mark(struct pool *p, const struct mark *k)
{
	char text[1100];

	ledger_encode(k, text, sizeof(text));
	for (int i = 0; i < p->nslots; i++)
		send_text(p->slots[i], COMMAND_MARK, text);
}

/* A message the worker settled: the pool forgets what it knew of it. */
static void forget_holding(struct slot *s)
{
	struct mark gone = {s->holding, 0, 0, 0, 0, 0, ""};

	if (s->holding == NULL)
		return;
	if (ledger_find(&s->pool->marks, s->holding) != NULL) {
		tell_mark(s->pool, &gone);
		ledger_forget(&s->pool->marks, s->holding);
	}
	free(s->holding);
	s->holding = NULL;
}

/* Tell a slot's worker to finish its message and go; never respawned. */
static void retire(struct slot *s)
{
	s->retiring = true;
	if (s->pid > 0)
		send_command(s, COMMAND_RETIRE);
	else
		slot_remove(s);
}

/* Start or retire workers until p has q->workers active ones. */
static void pool_resize(struct pool *p)
{
	int want = p->q->workers;

	while (active_count(p) < want)
		spawn(slot_add(p, free_number(p)));
	/* idle ones first, highest numbers first: busy ones never die */
	for (int pass = 0; pass < 2 && active_count(p) > want; pass++) {
		for (int i = p->nslots - 1; i >= 0 && active_count(p) > want;
		     i--) {
			struct slot *s = p->slots[i];

			if (s->retiring ||
			    (pass == 0 && s->state == REPORT_BUSY))
				continue;
			retire(s);
		}
	}
}

static struct pool *pool_new(const struct queue_conf *q)
{
	struct pool *p = xcalloc(1, sizeof(*p)), **tail = &m.pools;

	p->q = q;
	while (*tail != NULL)
		tail = &(*tail)->next;
	*tail = p;
	return p;
}

static void pool_retire_all(struct pool *p)
{
	for (int i = p->nslots - 1; i >= 0; i--)
		if (!p->slots[i]->retiring)
			retire(p->slots[i]);
}

static bool config_in_use(const struct config *cf)
{
	for (struct pool *p = m.pools; p != NULL; p = p->next)
		if (p->q >= cf->queues && p->q < cf->queues + cf->nqueues)
			return true;
	return false;
}

/* Free earlier configurations that no pool points into any more. */
static void configs_gc(void)
{
	struct cf_gen **gp = &m.old;

	while (*gp != NULL) {
		struct cf_gen *g = *gp;

		if (!config_in_use(g->cf)) {
			*gp = g->next;
			config_free(g->cf);
			free(g);
		} else {
			gp = &g->next;
		}
	}
}

/* Free removed pools whose last worker has gone, and their configs. */
static void pools_gc(void)
{
	struct pool **pp = &m.pools;

	while (*pp != NULL) {
		struct pool *p = *pp;

		if (p->removed && p->nslots == 0) {
			*pp = p->next;
			ledger_free(&p->marks);
			free(p->slots);
			free(p);
		} else {
			pp = &p->next;
		}
	}
	configs_gc();
}

static bool broker_same(const struct broker_conf *a,
			const struct broker_conf *b)
{
	if (a->nurls != b->nurls || a->heartbeat != b->heartbeat ||
	    a->connect_timeout != b->connect_timeout ||
	    a->consumer_timeout != b->consumer_timeout ||
	    a->secret != b->secret) /* a rotated password: log in again */
		return false;
	for (int i = 0; i < a->nurls; i++)
		if (strcmp(a->urls[i], b->urls[i]) != 0)
			return false;
#define SAME_STR(x, y)                                                         \
	((x) == NULL ? (y) == NULL : (y) != NULL && !strcmp(x, y))
	return SAME_STR(a->password_file, b->password_file) &&
	       SAME_STR(a->tls.ca_cert, b->tls.ca_cert) &&
	       SAME_STR(a->tls.cert, b->tls.cert) &&
	       SAME_STR(a->tls.key, b->tls.key) &&
	       a->tls.verify_peer == b->tls.verify_peer &&
	       a->tls.verify_hostname == b->tls.verify_hostname;
#undef SAME_STR
}

/* A password file others can read is said at start and every reload. */
static void warn_exposed(const struct config *cf)
{
	char why[600];

	if (config_password_exposed(cf, why, sizeof(why)))
		log_warnx("%s", why);
}

/*
 * SIGHUP: parse the file anew; keep the running configuration if it is
 * bad, else reconcile pool by pool.
 */
static void reload(void)
{
	char err[1024];
	struct config *ncf;
	struct cf_gen *g;
	bool broker_changed;

	notify_reloading();
	log_info("reloading %s", m.path);
	ncf = config_load(m.path, err, sizeof(err));
	if (ncf == NULL) {
		log_fields(LOG_ERR, NULL,
			   "%s; keeping the running configuration", err);
		notify_ready();
		return;
	}
	warn_exposed(ncf);
	mq_preload_ca(&ncf->broker);
	broker_changed = !broker_same(&m.cf->broker, &ncf->broker) ||
			 m.cf->shutdown_timeout != ncf->shutdown_timeout;
	/* a new consumer_timeout: the broker may have been changed too */
	if (m.cf->broker.consumer_timeout != ncf->broker.consumer_timeout)
		m.ct_ms = 0;
	for (struct pool *p = m.pools; p != NULL; p = p->next) {
		const struct queue_conf *nq;

		if (p->removed)
			continue;
		nq = config_queue(ncf, p->q->name);
		if (nq == NULL) {
			log_info("queue %s removed: its workers drain and stop",
				 p->q->name);
			p->removed = true;
			pool_retire_all(p);
		} else if (broker_changed ||
			   !queue_conf_same_but_workers(p->q, nq)) {
			log_info("queue %s changed: rolling its workers",
				 p->q->name);
			pool_retire_all(p);
			p->q = nq;
		} else {
			p->q = nq;
		}
	}
	g = xcalloc(1, sizeof(*g));
	g->cf = m.cf;
	g->next = m.old;
	m.old = g;
	m.cf = ncf;
	for (int i = 0; i < ncf->nqueues; i++) {
		struct pool *p = pool_find(ncf->queues[i].name);

		if (p == NULL) {
			log_info("queue %s added", ncf->queues[i].name);
			p = pool_new(&ncf->queues[i]);
		}
	}
	for (struct pool *p = m.pools; p != NULL; p = p->next)
		if (!p->removed)
			pool_resize(p);
	pools_gc();
	m.ready_sent = false; /* READY=1 again once all report */
}

/* Why a worker ended, in words, from its status and last report. */
static void exit_words(const struct slot *s, int st, char *buf, size_t len)
{
	if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(st));
	else if (s->why[0] != '\0')
		snprintf(buf, len, "%s: %s",
			 worker_exit_reason(WEXITSTATUS(st)), s->why);
	else
		snprintf(buf, len, "%s (exit %d)",
			 worker_exit_reason(WEXITSTATUS(st)), WEXITSTATUS(st));
}

static int backoff_ms(int failures)
{
	int64_t d;

	if (failures <= 1)
		return failures == 1 ? 100 : 0;
	d = (int64_t)BACKOFF_FIRST_MS
	    << (failures - 2 > 16 ? 16 : failures - 2);
	if (d > BACKOFF_MAX_MS)
		d = BACKOFF_MAX_MS;
	/* jitter: between half and all of it, so pools do not march */
	return (int)(d / 2 + random() % (d / 2 + 1));
}

/* A crash of the worker itself, not a stop from outside (SIGKILL is
 * what operators and the OOM killer send, and says nothing of a message). */
static bool crashed(int st)
{
	if (WIFSIGNALED(st))
		return WTERMSIG(st) != SIGKILL && WTERMSIG(st) != SIGTERM &&
		       WTERMSIG(st) != SIGINT && WTERMSIG(st) != SIGHUP;
	return WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_FATAL;
}

/* A worker died holding a message: the pool counts it against that one. */
static void count_death(struct slot *s, int st)
{
	struct mark *k;

	if (s->holding == NULL)
		return;
	if (crashed(st)) {
		k = ledger_add(&s->pool->marks, s->holding);
		k->deaths++;
		if (k->deaths == LEDGER_DEATHS_MAX)
			log_warnx("queue %s: %d workers died holding message "
				  "%s; the next worker to get it parks it",
				  s->pool->q->name, k->deaths, s->holding);
		tell_mark(s->pool, k);
	}
	free(s->holding);
	s->holding = NULL;
}

static void on_exit_of(struct slot *s, int st)
{
	struct pool *p = s->pool;
	char words[800];

	/* its last words first: outcome counts, handler group, reason */
	if (s->ctl >= 0)
		on_report(s);
	s->pid = 0;
	count_death(s, st);
	if (s->blocked) {
		s->blocked = false;
		m.nblocked--;
	}
	/* a worker that died mid-message leaves no part of its handler */
	if (s->state != REPORT_BUSY)
		s->handler = 0;
	s->state = 0;
	if (s->handler > 0)
		kill(-s->handler, SIGKILL);
	s->handler = 0;
	/* a persistent handler lives between messages too */
	if (s->group > 0)
		kill(-s->group, SIGKILL);
	s->group = 0;
	if (s->retiring || m.stopping || p->removed) {
		log_debug("worker %s/%d stopped", p->q->name, s->number);
		slot_remove(s);
		return;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_HOME) {
		/* between messages, by choice: back at once, no backoff */
		s->home_moves++;
		s->respawn_at = now_ms();
		return;
	}
	s->reported = true;
	if (now_ms() - s->started >= STAYED_UP_MS) {
		s->failures = 0;
		p->last_error[0] = '\0'; /* a new episode */
	}
	s->failures++;
	exit_words(s, st, words, sizeof(words));
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
	s->respawn_at = now_ms() + backoff_ms(s->failures);
}

static struct slot *slot_of_pid(pid_t pid)
{
	for (struct pool *p = m.pools; p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++)
			if (p->slots[i]->pid == pid)
				return p->slots[i];
	return NULL;
}

static void reap(void)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		struct slot *s = slot_of_pid(pid);

		if (s != NULL)
			on_exit_of(s, st);
	}
	if (pid == -1 && errno != ECHILD)
		log_warn("waitpid");
	pools_gc();
}

/* The STATUS= counts; a handled message also ends a failure episode. */
static void count_outcome(struct pool *p, char report)
{
	switch (report) {
	case REPORT_ACK:
		p->done++;
		p->last_error[0] = '\0';
		break;
	case REPORT_RETRY:
		p->retried++;
		break;
	case REPORT_FAILED:
		p->failed++;
		break;
	}
}

/*
 * The broker's consumer_timeout took a message back: its value holds for
 * every worker from now on, said once, and the message's attempt counts.
 */
static void taken_back(struct slot *s, const char *text)
{
	struct pool *p = s->pool;
	char *tab, num[16];
	int ms = (int)strtol(text, &tab, 10);
	struct mark *k;

	if (ms > 0 && (m.ct_ms == 0 || ms < m.ct_ms)) {
		if (m.ct_ms == 0)
			log_fields(
			    LOG_ERR, NULL,
			    "the broker's consumer_timeout is %d ms, below "
			    "broker.consumer_timeout = %d s of %s: it took a "
			    "message back from %s/%d. Handlers are now stopped "
			    "in time for %d ms; set broker.consumer_timeout = "
			    "%d, or raise consumer_timeout in rabbitmq.conf",
			    ms, m.cf->broker.consumer_timeout, m.path,
			    p->q->name, s->number, ms,
			    ms > 1999 ? ms / 1000 : 1);
		m.ct_ms = ms;
		snprintf(num, sizeof(num), "%d", ms);
		for (struct pool *q = m.pools; q != NULL; q = q->next)
			for (int i = 0; i < q->nslots; i++)
				send_text(q->slots[i], COMMAND_CONSUMER_TIMEOUT,
					  num);
	}
	if (*tab != '\t' || tab[1] == '\0')
		return;
	k = ledger_add(&p->marks, tab + 1);
	k->lost++;
	snprintf(k->reason, sizeof(k->reason), "consumer_timeout %ds",
		 (ms + 500) / 1000);
	tell_mark(p, k);
}

/*
 * A worker lost its connection after its handler had run: the message
 * comes back, and is settled by the outcome it already had.
 */
static void outcome_pending(struct slot *s, const char *text)
{
	char *p;
	long kind = strtol(text, &p, 10), attempt, delay;
	const char *reason, *key;
	struct mark *k;

	if (*p != '\t')
		return;
	attempt = strtol(p + 1, &p, 10);
	if (*p != '\t')
		return;
	delay = strtol(p + 1, &p, 10);
	if (*p != '\t')
		return;
	reason = p + 1;
	key = strchr(reason, '\t');
	if (key == NULL || key[1] == '\0' || kind < 0 ||
	    kind > OUTCOME_REQUEUED)
		return;
	k = ledger_add(&s->pool->marks, key + 1);
	k->pending = (int)kind + 1;
	k->attempt = (int)attempt;
	k->delay = (int)delay;
	snprintf(k->reason, sizeof(k->reason), "%.*s", (int)(key - reason),
		 reason);
	tell_mark(s->pool, k);
}

/* Workers the broker blocks from publishing: one line per episode. */
static void blocked(struct slot *s, bool now_blocked, const char *why)
{
	if (s->blocked == now_blocked)
		return;
	s->blocked = now_blocked;
	if (now_blocked && m.nblocked++ == 0) {
		m.blocked_since = now_ms();
		log_warnx("broker blocked publishing: %s; retry and parking "
			  "copies wait for it",
			  why[0] ? why : "no reason given");
	} else if (!now_blocked && --m.nblocked == 0) {
		log_info("broker unblocked publishing after %.1f s",
			 (double)(now_ms() - m.blocked_since) / 1000.0);
	}
}

static void on_report(struct slot *s)
{
	struct pool *p = s->pool;
	char buf[1200];
	ssize_t n;

	for (;;) {
		n = recv(s->ctl, buf, sizeof(buf) - 1, MSG_DONTWAIT);
		/* a worker that exited with our command unread resets the
		 * socket; what it sent before is still there to read */
		if (n == -1 && errno == ECONNRESET)
			continue;
		if (n <= 0)
			break;
		buf[n] = '\0';
		switch (buf[0]) {
		case REPORT_CONSUMING:
			s->state = REPORT_CONSUMING;
			s->reported = true;
			if (strcmp(buf + 1, "home") == 0)
				s->home_moves = 0;
			/* said once per episode; the cause stays until a
			 * message is handled: consuming alone proves little */
			if (p->last_error[0] != '\0' && !p->recovery_told) {
				log_info("queue %s: worker %d consuming again",
					 p->q->name, s->number);
				p->recovery_told = true;
			}
			break;
		case REPORT_BUSY:
			s->state = REPORT_BUSY;
			s->handler = (pid_t)strtol(buf + 1, NULL, 10);
			break;
		case REPORT_GROUP:
			s->group = (pid_t)strtol(buf + 1, NULL, 10);
			break;
		case REPORT_HOLDING:
			free(s->holding);
			s->holding = xstrdup(buf + 1);
			s->state = REPORT_BUSY;
			break;
		/* an outcome also means the worker is idle again */
		case REPORT_ACK:
		case REPORT_RETRY:
		case REPORT_FAILED:
			forget_holding(s);
			/* fall through */
		case REPORT_REQUEUED:
			count_outcome(p, buf[0]);
			s->state = REPORT_CONSUMING;
			s->handler = 0;
			free(s->holding);
			s->holding = NULL;
			break;
		case REPORT_TAKEN_BACK:
			taken_back(s, buf + 1);
			break;
		case REPORT_PENDING:
			outcome_pending(s, buf + 1);
			break;
		case REPORT_BLOCKED:
		case REPORT_UNBLOCKED:
			blocked(s, buf[0] == REPORT_BLOCKED, buf + 1);
			break;
		case REPORT_DOWN:
			s->reported = true;
			snprintf(s->why, sizeof(s->why), "%.690s", buf + 1);
			break;
		}
	}
	if (n == 0) { /* worker closed it: it is exiting */
		close(s->ctl);
		s->ctl = -1;
	}
}

static void begin_stop(void)
{
	int grace = 0;

	if (m.stopping)
		return;
	m.stopping = true;
	notify_stopping();
	log_info("stopping: running handlers get %d s", m.cf->shutdown_timeout);
	for (struct pool *p = m.pools; p != NULL; p = p->next) {
		if (p->q->kill_grace > grace)
			grace = p->q->kill_grace;
		for (int i = p->nslots - 1; i >= 0; i--) {
			struct slot *s = p->slots[i];

			if (s->pid > 0)
				send_command(s, COMMAND_STOP);
			else
				slot_remove(s);
		}
	}
	m.kill_at = now_ms() +
		    (int64_t)(m.cf->shutdown_timeout + grace) * 1000 +
		    STOP_MARGIN_MS;
}

static int children(void)
{
	int n = 0;

	for (struct pool *p = m.pools; p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++)
			if (p->slots[i]->pid > 0)
				n++;
	return n;
}

static void kill_all(int sig)
{
	for (struct pool *p = m.pools; p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++)
			if (p->slots[i]->pid > 0)
				kill(p->slots[i]->pid, sig);
}

static void on_signals(void)
{
	struct signalfd_siginfo si;

	while (read(m.sigfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			begin_stop();
			break;
		case SIGHUP:
			m.reload_pending = true;
			break;
		default:
			break; /* SIGCHLD: reaped every turn */
		}
	}
}

static void respawn_due(void)
{
	int64_t now = now_ms();

	for (struct pool *p = m.pools; p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++) {
			struct slot *s = p->slots[i];

			if (s->pid == 0 && s->respawn_at != 0 &&
			    s->respawn_at <= now)
				spawn(s);
		}
}

/* The STATUS= line: per queue, workers consuming, busy, and counts. */
static void update_status(void)
{
	char buf[sizeof(m.status)];
	size_t o = 0;

	buf[0] = '\0';
	for (struct pool *p = m.pools; p != NULL && o < sizeof(buf);
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
		    "%s%s %d/%d consuming, %d busy; %lu done, %lu retried, %lu "
		    "failed%s",
		    o ? " | " : "", p->q->name, cons, p->q->workers, busy,
		    p->done, p->retried, p->failed,
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

	if (m.ready_sent || m.stopping)
		return;
	for (struct pool *p = m.pools; p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++) {
			if (p->slots[i]->retiring)
				continue;
			if (!p->slots[i]->reported)
				return;
			n++;
		}
	m.ready_sent = true;
	update_status();
	notify_ready();
	log_info("ready: %d workers started", n);
}

static int next_timeout(void)
{
	int64_t next = 0, now = now_ms();

	for (struct pool *p = m.pools; p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++) {
			int64_t r = p->slots[i]->respawn_at;

			if (p->slots[i]->pid == 0 && r != 0 &&
			    (next == 0 || r < next))
				next = r;
		}
	if (m.stopping && m.kill_at != 0 && (next == 0 || m.kill_at < next))
		next = m.kill_at;
	if (m.watchdog_ms > 0 && (next == 0 || m.next_watchdog < next))
		next = m.next_watchdog;
	if (next == 0)
		return -1;
	if (next - now > INT_MAX)
		return INT_MAX;
	return next <= now ? 0 : (int)(next - now);
}

static void loop(void)
{
	struct pollfd *pfd = NULL;
	struct slot **who = NULL;
	size_t cap = 0;

	for (;;) {
		size_t n = 1;
		int total = 0;

		for (struct pool *p = m.pools; p != NULL; p = p->next)
			total += p->nslots;
		if ((size_t)total + 1 > cap) {
			cap = (size_t)total + 16;
			pfd = realloc(pfd, cap * sizeof(*pfd));
			who = realloc(who, cap * sizeof(*who));
			if (pfd == NULL || who == NULL)
				fatal("realloc");
		}
		pfd[0].fd = m.sigfd;
		pfd[0].events = POLLIN;
		for (struct pool *p = m.pools; p != NULL; p = p->next)
			for (int i = 0; i < p->nslots; i++)
				if (p->slots[i]->ctl >= 0) {
					pfd[n].fd = p->slots[i]->ctl;
					pfd[n].events = POLLIN;
					who[n++] = p->slots[i];
				}
		if (poll(pfd, n, next_timeout()) == -1 && errno != EINTR)
			fatal("poll");
		for (size_t i = 1; i < n; i++)
			if (pfd[i].revents)
				on_report(who[i]);
		if (pfd[0].revents)
			on_signals();
		reap();
		if (m.reload_pending && !m.stopping) {
			m.reload_pending = false;
			reload();
		}
		if (m.stopping) {
			if (children() == 0)
				break;
			if (now_ms() >= m.kill_at) {
				log_warnx("workers still running past the stop "
					  "deadline; killing them");
				kill_all(SIGKILL);
				m.kill_at = 0;
			}
		} else {
			respawn_due();
			check_ready();
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
	free(pfd);
	free(who);
}

static void cleanup(void)
{
	struct cf_gen *g, *gn;

	while (m.pools != NULL) {
		struct pool *p = m.pools;

		m.pools = p->next;
		while (p->nslots > 0)
			slot_remove(p->slots[0]);
		ledger_free(&p->marks);
		free(p->slots);
		free(p);
	}
	for (g = m.old; g != NULL; g = gn) {
		gn = g->next;
		config_free(g->cf);
		free(g);
	}
	config_free(m.cf);
	close(m.sigfd);
}

int master_run(const char *path, struct config *cf)
{
	m.path = path;
	m.cf = cf;
	srandom((unsigned)getpid() ^ (unsigned)now_ms());
	m.sigfd = signal_fd();
	signal(SIGPIPE, SIG_IGN);
	/* orphans of dead workers' handlers come to us, to be reaped */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) == -1)
		log_warn("PR_SET_CHILD_SUBREAPER");
	m.watchdog_ms = notify_watchdog_ms();
	m.next_watchdog = now_ms();
	log_info("starting with %s: %d queue%s", path, cf->nqueues,
		 cf->nqueues == 1 ? "" : "s");
	warn_exposed(cf);
	mq_preload_ca(&cf->broker);
	for (int i = 0; i < cf->nqueues; i++)
		pool_resize(pool_new(&cf->queues[i]));
	check_ready(); /* no worker to wait for: ready now */
	loop();
	log_info("stopped");
	cleanup();
	return 0;
}
