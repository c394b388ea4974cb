/*
 * worker_int.h: what the worker's files share: settling, replies, and the
 * worker's state with the files of its loop.
 */
#ifndef WARREN_WORKER_WORKER_INT_H
#define WARREN_WORKER_WORKER_INT_H

#include "worker/worker.h"

/* ------------------------------------------------------------------ */
/* settle.c: ack, retry copy, parking or reject of a handled message */

#define SETTLE_DECLARED_MAX 64 /* side queues remembered as declared */
#define SETTLE_SAID_MAX 16     /* causes already explained in the log */

enum settle_phase {
	SETTLE_BEGIN,	 /* outcome known, nothing done yet */
	SETTLE_COPY,	 /* a copy is due (waits while blocked) */
	SETTLE_CONFIRM,	 /* the copy is out, its confirm awaited */
	SETTLE_FINISHED, /* the original is acked, nacked or rejected */
};

enum settle_state {
	SETTLE_DONE, /* settled: report and let go of the message */
	SETTLE_WAIT, /* call again on a later turn */
	SETTLE_LOST, /* the connection failed: the broker has it back */
};

/* One worker's settling: the message in hand, and what it learnt. */
struct settler {
	struct mq *mq;
	const struct queue_conf *q;
	struct delivery *d; /* the worker's; not freed here */
	int attempt;
	struct outcome o;
	char tail[4097];	 /* stderr tail for parking */
	long cpu_ms, max_rss_kb; /* the handler's cost for parking, or -1 */
	enum settle_phase phase;
	int64_t deadline;   /* confirm due */
	int64_t abandon_at; /* shutdown: a published copy's confirm until */
	bool rejected;	    /* nacked without requeue */
	bool redeclared;    /* a copy came back unrouted once already */
	char *declared[SETTLE_DECLARED_MAX];
	int ndeclared;
	char said[SETTLE_SAID_MAX][160];
	int nsaid;
	bool reply;   /* queue.reply and a reply_to: answer it */
	bool replied; /* the reply is out (confirmed with the copy) */
	bool unspent; /* requeued by the breaker: its attempt not spent (on a
		       * quorum queue, by a copy: a requeue would count) */
	struct result result; /* the body of an ok reply */
};

void settle_init(struct settler *s, struct mq *m, const struct queue_conf *q);
void settle_free(struct settler *s);
/* Settle d, which was attempt number attempt, by o; r (or NULL) says
 * what its handler cost, for a parked copy's headers. */
void settle_start(struct settler *s, struct delivery *d, int attempt,
		  const struct outcome *o, const char *tail,
		  const struct handler_result *r);
/* The handler's result, for the reply (s owns r's buffer now). */
void settle_result(struct settler *s, struct result *r);
/* Take the next steps that do not wait; s->o is the final outcome. */
enum settle_state settle_run(struct settler *s);
/* ms until settle_run has something to do, -1 if only frames can tell */
int settle_next_timer(const struct settler *s);
/* Shutdown while a copy waits: give the original back, unless the copy
 * is confirmed already (then settle_run() acks it) or, published, may
 * still be (ABANDON_GRACE_MS more). Whether it did. */
bool settle_abandon(struct settler *s);
/* The outcome line of the log, with the message's fields. */
void settle_log(const struct settler *s, const struct handler_result *r,
		int64_t started);

/* ------------------------------------------------------------------ */
/* replies.c: the reply that carries a handler's result back to a
 * message's reply_to (queue.reply) */

/* Whether queue q answers d: reply on, and d names a reply_to. */
bool reply_due(const struct queue_conf *q, const struct delivery *d);
/* An acked message whose result went past RESULT_MAX fails for good. */
void reply_check_result(struct outcome *o, bool too_large);
/*
 * Publish d's reply (confirmed like the copies, never mandatory: a
 * requester gone is no error): ok with body, or failed with reason and
 * an empty body. 0 once on its way.
 */
int reply_publish(struct mq *m, const struct delivery *d, bool ok,
		  const char *reason, const void *body, size_t len);

/* ------------------------------------------------------------------ */
/* Inside a worker process: its state, shared by worker.c and the files
 * below it (report.c, consume.c, message.c, command.c, home.c, wake.c). */
struct worker {
	const struct config *cf;
	const struct queue_conf *q;
	int number;
	int ctl; /* control socket to the master */
	int sigfd;
	struct mq *mq;
	struct delivery *d;   /* the message in hand */
	struct handler *h;    /* its handler, while it runs */
	struct persistent *p; /* persistent mode: the handler it keeps */
	pid_t told_group;     /* p's process group as the master knows it */
	struct handler_result r;
	bool settling;	    /* the handler is done, its outcome being applied */
	bool replaying;	    /* that outcome came from the master's mark */
	bool told_prefetch; /* a message given back from the prefetch */
	struct settler set;
	struct ledger marks; /* the master's notes on messages */
	int ct_ms;	     /* consumer_timeout in force */
	bool blocked;	     /* told the master the broker blocks us */
	int home, node;	     /* the broker node it belongs on, and is on */
	int64_t next_probe;  /* when to see whether home is back */
	int home_moves;	     /* earlier moves home that fell back again */
	int attempt;
	int64_t started;
	int64_t ran_ms;	    /* how long its handler ran, -1 if it did not */
	int64_t wait_ms;    /* from its timestamp to its start, -1: unknown */
	int64_t slow_at;    /* queue.slow: when to say it is slow, 0: not */
	int64_t service_at; /* busy: read the socket by then (heartbeats) */
	bool paused;	    /* warrenctl paused the queue: not consuming */
	bool probing;	    /* the breaker's probe: one message, then pause */
	bool tempfail;	 /* the message in hand goes back unspent (breaker) */
	bool resume_due; /* resumed while busy: consume once it is settled */
	bool retiring;	 /* finish the current message, then exit */
	bool stopping;	 /* shutdown: shutdown_timeout applies */
	int64_t stop_deadline;
	int64_t drain_until; /* retiring: waits this long for cancel-ok */
	int watch_ms;	     /* the master's watcher: ready count this often */
	int64_t next_watch;
	int exit_status;
	bool stop_killed;     /* the handler was stopped by the shutdown */
	struct timers timers; /* its deadlines (wake.c) */
};

/* report.c: what the worker tells the master (record.c encodes it) */
void report_record(struct worker *w, const struct record *r);
void report_kind(struct worker *w, char kind); /* a kind with no fields */
/* An outcome: run, CPU and wait ms, -1 each when unknown (all when it
 * did not run). */
void report_outcome(struct worker *w, char kind, int64_t ran_ms, int64_t cpu_ms,
		    int64_t wait_ms);
void report_text(struct worker *w, char kind, const char *text);
/* REPORT_DOWN with why, then exit with status. */
void report_and_exit(struct worker *w, int status, const char *why)
    __attribute__((noreturn));
void report_pending(struct worker *w);	 /* an outcome the broker kept */
void report_consuming(struct worker *w); /* C or Z, and on which node */
void report_group(struct worker *w);	 /* a kept handler's, if changed */
void report_holding(struct worker *w);	 /* the key of the message */

/* consume.c: whether the worker consumes */
void consume_resume(struct worker *w); /* basic.consume again */
/* Stop taking messages (shutdown: shutdown_timeout applies), finish the
 * one in hand. */
void consume_stop(struct worker *w, bool shutdown);
void consume_pause(struct worker *w, bool pause); /* warrenctl pause */
void consume_probe(struct worker *w); /* the breaker's: one message */

/* message.c: the message in hand, from delivery to settled */
void message_read(struct worker *w);   /* the broker's side: deliveries */
void message_settle(struct worker *w); /* the next steps of settling */
bool message_running(const struct worker *w); /* a handler works on it */
void message_limit(struct worker *w);	      /* before the consumer_timeout */
/* The handler's side of a turn: output, timers, its end. */
void message_serve(struct worker *w, struct pollfd *pfd, int nh);
void message_check_slow(struct worker *w); /* queue.slow passed */

/* command.c: the master's commands */
void command_read(struct worker *w);	/* all that came; exits at EOF */
void command_wait_go(struct worker *w); /* before connecting */

/* wake.c: the deadlines the loop's poll waits for */
void wake_init(struct worker *w);
int wake_poll_ms(const struct worker *w); /* 0: news now, -1: none */

/* home.c: the broker node the worker belongs on */
void home_connect(struct worker *w); /* or report_and_exit() */
void home_started(struct worker *w, int home_moves);
void home_probe(struct worker *w); /* away and idle: is home back? */

#endif
