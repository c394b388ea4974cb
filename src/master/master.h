/*
 * master.h: warrend's master: the circuit breaker, metrics, the control
 * socket, the pid map, the supervisor.
 */
#ifndef WARREN_MASTER_MASTER_H
#define WARREN_MASTER_MASTER_H

#include "worker/worker.h"

/* ------------------------------------------------------------------ */
/* breaker.c: the circuit breaker of a pool (pure) */

enum breaker_state {
	BREAKER_CLOSED,	   /* consuming */
	BREAKER_OPEN,	   /* paused until `until` */
	BREAKER_HALF_OPEN, /* one probe message decides */
};

struct breaker {
	enum breaker_state state;
	int64_t until;	  /* BREAKER_OPEN: monotonic ms it ends */
	int cooldown_ms;  /* of the current opening: doubles, at most 10 x */
	int streak;	  /* failed attempts in a row */
	bool probing;	  /* half-open: a probe message is out */
	int probe_worker; /* its worker number, or 0 */
	unsigned long openings;
};

/* What an event did to the breaker, for the caller to act on. */
enum breaker_move {
	BREAKER_STAY,	    /* nothing changes for the pool */
	BREAKER_OPENED,	    /* stop consuming: it opened (or opened again) */
	BREAKER_PROBE,	    /* half-open: let one worker take one message */
	BREAKER_CLOSED_NOW, /* consume again */
};

/* The outcome of a handled message as the breaker counts it. */
enum breaker_event {
	BREAKER_EV_SUCCESS,  /* acked */
	BREAKER_EV_FAILURE,  /* a failed attempt (retry or failed) */
	BREAKER_EV_TEMPFAIL, /* exit 75 / "tempfail": put back unspent */
	BREAKER_EV_NONE,     /* requeued, never ran: tells nothing */
};

/* A message's outcome, at now (monotonic ms). */
enum breaker_move breaker_event(struct breaker *b, const struct breaker_conf *c,
				enum breaker_event ev, int64_t now);
/* Time passes: an open breaker whose cooldown is over becomes half-open. */
enum breaker_move breaker_tick(struct breaker *b, int64_t now);
/* The probe went nowhere (its worker died, or it was requeued). */
void breaker_probe_lost(struct breaker *b);
/* Whether the pool must not consume now (open or half-open). */
bool breaker_holds(const struct breaker *b);
/* ms until an open breaker turns half-open (breaker_tick), -1 if none */
int64_t breaker_next(const struct breaker *b, int64_t now);
const char *breaker_state_name(enum breaker_state s);

/* ------------------------------------------------------------------ */
/* stats.c: Prometheus text exposition and histograms (pure) */

#define HISTOGRAM_BUCKETS 17
extern const double histogram_bounds[HISTOGRAM_BUCKETS]; /* seconds */

struct histogram {
	uint64_t counts[HISTOGRAM_BUCKETS + 1]; /* per bucket, not summed */
	uint64_t count;
	double sum;
};

void histogram_observe(struct histogram *h, double seconds);
/* "# HELP" and "# TYPE" lines of a family */
void prom_family(FILE *f, const char *name, const char *type, const char *help);
/* name{labels} v; kv: NULL-terminated label name, value pairs, or NULL */
void prom_sample(FILE *f, const char *name, const char *const *kv, double v);
/* name_bucket{...,le=}, name_sum and name_count, buckets cumulative */
void prom_histogram(FILE *f, const char *name, const char *const *kv,
		    const struct histogram *h);

/* ------------------------------------------------------------------ */
/* control.c: the master's unix socket for warrenctl */

/* What the socket answers with, handed in by the master. */
struct control_ops {
	char *(*status)(void);	/* the status JSON; caller frees */
	char *(*metrics)(void); /* the Prometheus text; caller frees */
	int (*pause)(const char *queue, bool pause); /* -1: no such queue */
	int (*scale)(const char *queue, int n);	     /* -1: no such queue */
	int (*restart)(const char *queue);	     /* -1: no such queue */
};

/* Answer at path ("" : none) with ops, which must outlive the socket;
 * reasons it cannot are said once. */
void control_open(const char *path, const struct control_ops *ops);
void control_close(void);
bool control_is_open(void);
/* monotonic ms of the next client deadline, 0 if none */
int64_t control_next_timer(void);
void control_timers(void);

/* ------------------------------------------------------------------ */
/* metrics.c: the Prometheus listener; the only user of libmicrohttpd */

/* Serve render()'s text (caller frees) at /metrics of listen ("" :
 * none), and health()'s at /health with the HTTP status it gives. */
void metrics_open(const char *listen, char *(*render)(void),
		  char *(*health)(int *code));
void metrics_close(void);
bool metrics_is_open(void);
int64_t metrics_next_timer(void); /* monotonic ms, 0 if none */
void metrics_timers(void);

/* ------------------------------------------------------------------ */
/* pidmap.c: pid -> pointer (pure) */

struct pidmap_entry {
	pid_t pid; /* 0: free, -1: deleted */
	void *p;
};

struct pidmap {
	struct pidmap_entry *v;
	int cap, n; /* n: entries used, deleted ones included */
};

void pidmap_put(struct pidmap *m, pid_t pid, void *p);
void *pidmap_get(const struct pidmap *m, pid_t pid); /* NULL: none */
void pidmap_del(struct pidmap *m, pid_t pid);
void pidmap_free(struct pidmap *m);

/* ------------------------------------------------------------------ */
/* checkusers.c: whether warrend can become the users the queues name */

/*
 * -1 with "FILE:LINE: ..." in err when a queue's user differs from
 * warrend's and warrend cannot switch to it.
 */
int identity_check(const struct config *cf, char *err, size_t errlen);
/*
 * When warrend could switch: a "FILE:LINE: warning: ..." line on out for
 * each queue whose handlers would run as warrend itself; how many.
 */
int identity_warnings(const struct config *cf, FILE *out);

/* ------------------------------------------------------------------ */
/* master.c: the supervisor */

int master_run(const char *path, struct config *cf);

/* ------------------------------------------------------------------ */
/* The supervisor's own files, below master.c (on pool.h's table). */
struct slot;
struct pool;

/* spawn.c: workers started into their slots, and again */
void spawn_init(int fd_floor);	  /* fds from fd_floor up: not a worker's */
void spawn_start(struct slot *s); /* fork s's worker (backs off if not) */
void spawn_schedule(struct slot *s, int64_t at); /* start s again at */
int spawn_backoff_ms(int failures);		 /* with jitter */
/* Workers forked between close and open wait for one go (a batch). */
void spawn_gate_close(void);
void spawn_gate_open(void);
void spawn_retire(struct slot *s); /* finish the message and go */
void spawn_one(struct pool *p);	   /* one more, numbered the lowest free */
/* Start or retire workers until p is between its floor and ceiling. */
void spawn_resize(struct pool *p);
void spawn_retire_all(struct pool *p);
void spawn_due(void);		       /* the respawns whose time has come */
void spawn_rearm_due(void);	       /* sockets of the last batch watched */
int64_t spawn_next_respawn(void);      /* monotonic ms, 0 if none */
int64_t spawn_next_rearm(void);	       /* monotonic ms, 0 if none */
struct slot *spawn_slot_of(pid_t pid); /* a live worker's, or NULL */
void spawn_exited(struct slot *s);     /* s's worker is reaped */
int spawn_alive(void);		       /* workers alive */
void spawn_free(void);		       /* at exit */

/* exits.c: reap every exited worker and decide (stopping: warrend is) */
void exits_reap(bool stopping);

/* reconfigure.c: the running configuration, and SIGHUP */
void reconfigure_init(const char *path, struct config *cf);
/* Reload the file; false if it is bad (the running one is kept). Else the
 * pools follow it, listeners(new, old) opened in between. */
bool reconfigure(void (*listeners)(const struct config *cf,
				   const struct config *old));
/* Free removed pools without workers and configurations none uses. */
void reconfigure_gc(void);
void reconfigure_warn_exposed(const struct config *cf);
void reconfigure_free(void); /* at exit */

#endif
