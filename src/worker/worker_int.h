/*
 * worker_int.h: what the worker's files share: settling and replies.
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
	int64_t deadline; /* confirm due */
	bool rejected;	  /* nacked without requeue */
	bool redeclared;  /* a copy came back unrouted once already */
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
 * is confirmed already (then settle_run() acks it). Whether it did. */
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

#endif
