/*
 * pool.h: the master's worker table (pool.c owns it) and the master's
 * private modules that work on it: reports, status, pure supervision.
 */
#ifndef WARREN_POOL_H
#define WARREN_POOL_H

#include "master/master.h"

struct pool;

/* One worker's place in its pool; a respawned worker takes the same. */
struct slot {
	struct pool *pool;
	int index;  /* in pool->slots */
	int number; /* WARREN_WORKER, from 1 */
	pid_t pid;  /* 0: not running */
	int ctl;    /* master's end of the control socket */
	struct ev *ev;
	int64_t started;
	int64_t respawn_at; /* 0: none scheduled */
	int timers;	    /* heap entries and batches naming it */
	bool gone;	    /* removed; freed once no timer names it */
	int failures;	    /* quick deaths in a row */
	char state;	  /* 0, REPORT_CONSUMING, REPORT_BUSY, REPORT_PAUSED */
	pid_t handler;	  /* its handler's process group, or 0 */
	pid_t group;	  /* its persistent handler's group, or 0 */
	bool reported;	  /* said it consumes, or why it cannot */
	bool retiring;	  /* told to finish and go; not respawned */
	bool blocked;	  /* the broker blocks its publishing */
	bool gated;	  /* forked, waiting for its batch's go */
	bool ran;	  /* has been started before: a start is a restart */
	int home_moves;	  /* moves home since it last consumed there */
	bool unreachable; /* its last end: the broker could not be reached */
	int node;	  /* index in broker.url of its connection, or -1 */
	char *holding;	  /* key of the message in hand, or NULL */
	int64_t held_since; /* when it took that message */
	int64_t idle_since; /* when it last became idle (elastic.c) */
	int gen; /* its pool's gen when started (warrenctl restart) */
	unsigned long acked, retried, failed, requeued;
	char why[RECORD_TEXT_MAX]; /* last REPORT_DOWN text */
};

#define POOL_NODES_MAX 16 /* broker nodes counted apart in metrics */

/* A pool's sizing: what scaler.c keeps and status.c shows. */
struct scaling {
	int floor;	  /* warrenctl scale's minimum, 0: the configuration */
	bool floor_now;	  /* scale went down: idle workers above it go now */
	int target;	  /* workers wanted, the last decision */
	char why[120];	  /* and why, for warrenctl status */
	long ready;	  /* ready messages a worker last saw */
	int64_t ready_at; /* when it said so, 0: never */
	int watch_ms;	  /* how often the watcher was asked to look */
	int64_t watch_asked; /* when a worker was last asked to watch */
	int watch_next;	     /* where the next pick of a watcher starts */
	int watcher;	     /* the number of the worker last asked */
	int64_t grown_at;    /* the last growth: at most one step a second */
	int gen;	     /* bumped by warrenctl restart */
	bool rolling;	     /* a rolling restart is under way */
	int rolled;	     /* workers replaced by the restart so far */
};

struct pool {
	const struct queue_conf *q;
	struct slot **slots;
	int nslots, cap;
	int active;	     /* slots not retiring */
	unsigned char *used; /* used[n]: a slot not retiring is number n */
	int nused;
	unsigned long done, retried, failed, requeued, restarts;
	struct histogram durations;
	struct histogram waits; /* from a message's timestamp to its start */
	unsigned long slow;	/* handlers that ran past queue.slow */
	uint64_t cpu_ms;	/* handlers' CPU time, summed over messages */
	struct {
		char *node; /* "host:port" */
		unsigned long n;
	} conns[POOL_NODES_MAX];
	bool paused;		/* by warrenctl; kept across reloads */
	struct breaker breaker; /* queue.breaker's state (pool_breaker.c) */
	char last_error[800];	/* logged once per change */
	bool recovery_told;	/* "consuming again" said for it */
	bool removed;		/* dropped by a reload; goes when empty */
	struct ledger marks;	/* messages that outlived their workers */
	struct scaling sc; /* elastic sizing, scale and restart (scaler.c) */
	struct pool *next;
};

/* The worker table: pool.c owns it, the master fills it. */
struct pool_table {
	const char *path;	 /* the configuration file */
	const struct config *cf; /* the running configuration */
	struct pool *pools;
	int unreported; /* active slots yet to report: READY waits */
};

/* What status.c renders: the table and the master's own state. */
struct master_view {
	const char *path;
	const struct config *cf;
	struct pool *pools;
	bool ready, stopping;
};

/* pool.c: the one owner of the worker table */
const struct pool_table *pool_table(void);
void pool_table_set(const char *path, const struct config *cf);
struct pool *pool_first(void);
struct pool *pool_find(const char *name); /* not removed; NULL if none */
struct pool *pool_new(const struct queue_conf *q); /* appended */
void pools_gc(void);   /* frees removed pools without slots */
void pools_free(void); /* all of them, at exit */
/* Whether a pool still points into cf's queues. */
bool pool_config_in_use(const struct config *cf);
/* Lowest worker number from n up that no active slot of p holds. */
int pool_number_free(const struct pool *p, int n);
struct slot *slot_add(struct pool *p, int number); /* counts as unreported */
void slot_reported(struct slot *s); /* it said it consumes, or why not */
/* s leaves the active count (retiring or removed); idempotent. */
void slot_deactivate(struct slot *s);
void slot_close_ctl(struct slot *s);
/* Out of the table; freed now, or by the last timer naming it. */
void slot_remove(struct slot *s);
/* A command to s's worker (record.c encodes it); never waits for it. */
void slot_send(struct slot *s, const struct record *r);
void slot_command(struct slot *s, char cmd); /* one with no fields */
/* The "host:port" of broker node i, for labels; never the password. */
const char *pool_node_name(int i);

/* pool_breaker.c: queue.breaker, the master's side */
/* p must not consume: paused by warrenctl, or its breaker holds it. */
bool pool_held(const struct pool *p);
/* An outcome report of s's worker, for its pool's breaker. */
void breaker_report(struct slot *s, char report);
/* Open breakers whose cooldown is over send their probe; every turn. */
void breakers_tick(void);
/* Monotonic ms of the next cooldown's end, 0 if none. */
int64_t breakers_next_timer(void);

/* reports.c: what the master makes of its workers' reports */
void reports_read(struct slot *s); /* all s's worker has sent so far */
/* A changed mark goes to every worker of the pool. */
void reports_tell_mark(struct pool *p, const struct mark *k);
/* The broker's consumer_timeout in ms once proven shorter, else 0. */
int reports_consumer_timeout(void);
void reports_consumer_timeout_reset(void); /* a new setting: unproven */
/* s goes: it no longer counts among the blocked */
void reports_slot_gone(struct slot *s);

/* status.c: the master's answers, as JSON or Prometheus text */
char *status_json(const struct master_view *v); /* caller frees */
char *status_metrics(const struct master_view *v);

/* health.c: GET /health: "ok\n" and 200, or one line per problem and
 * 503 in *code; caller frees */
char *health_text(const struct master_view *v, int *code);

/* reload.c: what a reload changes (pure) */
enum reload_step {
	RELOAD_KEEP,   /* same queue: only its worker count may change */
	RELOAD_ROLL,   /* changed: each worker is replaced between messages */
	RELOAD_REMOVE, /* gone from the file: drains and stops */
};

struct reload_plan {
	bool broker_changed; /* every pool rolls */
	bool
	    consumer_timeout_changed; /* the broker's proven one is forgotten */
	int n;			      /* one per running pool, as given */
	struct {
		enum reload_step step;
		const struct queue_conf *nq; /* the new settings, or NULL */
	} * pools;
	int nadded;
	const struct queue_conf **added; /* new queues, in file order */
};

/* The plan from old to ncf for the running pools' queues run[0..nrun). */
struct reload_plan *reload_plan(const struct config *old,
				const struct config *ncf,
				const struct queue_conf *const *run, int nrun);
void reload_plan_free(struct reload_plan *pl);

/* elastic.c: how many workers a pool wants (pure) */
struct elastic_in {
	int workers;	 /* the floor: configuration, or warrenctl scale */
	int max_workers; /* the ceiling; below workers counts as workers */
	bool floor_now;	 /* scaled down: idle ones above the floor go now */
	bool paused;
	int active; /* workers not retiring, running or not */
	int busy;   /* of them, with a message in hand */
	long ready; /* ready messages last seen, -1: unknown or stale */
	int64_t now, grown_at; /* ms; the last growth */
	int idle_timeout_ms;
	const int64_t *idle_since; /* when each idle worker became idle */
	int nidle;
};
struct elastic_out {
	int target;    /* workers wanted now */
	char why[120]; /* "scaling up: 14 ready, all busy" */
};
void elastic_decide(const struct elastic_in *in, struct elastic_out *out);

/* scaler.c: applies elastic.c, warrenctl scale and restart */
struct scaler_ops {
	void (*start)(struct pool *p);	/* one more worker */
	void (*retire)(struct slot *s); /* finish the message in hand, go */
};
/* Every pool's size, watcher and rolling restart; when to call again. */
int64_t scaler_tick(const struct scaler_ops *ops);
/* warrenctl scale: -1 no such queue. */
int scaler_scale(const char *name, int n);
/* warrenctl restart: -1 no such queue. */
int scaler_restart(const char *name);
/* A reload: back to the configuration's size. */
void scaler_reset(struct pool *p);
/* The floor of p: warrenctl scale's, or the configuration's workers. */
int scaler_floor(const struct pool *p);
/* Its ceiling: max_workers, or the floor when that is higher or the
 * pool is not elastic. */
int scaler_ceiling(const struct pool *p);
/* The ready count when fresh (at most 5 s old), else -1. */
long scaler_ready(const struct pool *p);

/* supervise.c: the supervisor's pure decisions */
/* Wait before respawning after failures quick deaths in a row; rnd is
 * a random number (jitter). */
int supervise_backoff_ms(int failures, long rnd);
/* A crash of the worker itself, not a stop from outside. */
bool supervise_crashed(int status);
/* qsort order of slots to retire: idle first, then highest number. */
int supervise_retire_order(const void *a, const void *b);
/* Why a worker ended, in words, from its status and last report. */
void supervise_exit_words(const struct slot *s, int status, char *buf,
			  size_t len);

#endif
