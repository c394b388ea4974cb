/*
 * pool.h: the master's worker table, shared by master.c (which owns and
 * changes it) and status.c (which reads it for warrenctl and metrics).
 */
#ifndef WARREN_POOL_H
#define WARREN_POOL_H

#include "warren.h"

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
	char state;	/* 0, REPORT_CONSUMING, REPORT_BUSY, REPORT_PAUSED */
	pid_t handler;	/* its handler's process group, or 0 */
	pid_t group;	/* its persistent handler's group, or 0 */
	bool reported;	/* said it consumes, or why it cannot */
	bool retiring;	/* told to finish and go; not respawned */
	bool blocked;	/* the broker blocks its publishing */
	bool gated;	/* forked, waiting for its batch's go */
	bool ran;	/* has been started before: a start is a restart */
	int home_moves; /* moves home since it last consumed there */
	int node;	/* index in broker.url of its connection, or -1 */
	char *holding;	/* key of the message in hand, or NULL */
	int64_t held_since; /* when it took that message */
	unsigned long acked, retried, failed, requeued;
	char why[700]; /* last REPORT_DOWN text */
};

#define POOL_NODES_MAX 16 /* broker nodes counted apart in metrics */

struct pool {
	const struct queue_conf *q;
	struct slot **slots;
	int nslots, cap;
	int active;	     /* slots not retiring */
	unsigned char *used; /* used[n]: a slot not retiring is number n */
	int nused;
	unsigned long done, retried, failed, requeued, restarts;
	struct histogram durations;
	uint64_t cpu_ms; /* handlers' CPU time, summed over messages */
	struct {
		char *node; /* "host:port" */
		unsigned long n;
	} conns[POOL_NODES_MAX];
	bool paused;	      /* by warrenctl; kept across reloads */
	char last_error[800]; /* logged once per change */
	bool recovery_told;   /* "consuming again" said for it */
	bool removed;	      /* dropped by a reload; goes when empty */
	struct ledger marks;  /* messages that outlived their workers */
	struct pool *next;
};

/* What status.c reads of the master. */
struct master_view {
	const char *path;
	const struct config *cf;
	struct pool *pools;
	bool ready, stopping;
};

const struct master_view *master_view(void);
/* Pause or resume queue name's workers; -1 if there is no such queue. */
int master_pause(const char *name, bool pause);

/* master.c: what reports.c needs of the worker table */
void slot_reported(struct slot *s); /* it said it consumes, or why not */
void slot_close_ctl(struct slot *s);
/* A command, code byte then optional text; never waits for the worker. */
void slot_send(struct slot *s, char cmd, const char *text);

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
char *status_json(void); /* caller frees */
char *status_metrics(void);
/* The "host:port" of broker node i, for labels; never the password. */
const char *status_node_name(int i);

#endif
