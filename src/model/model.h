/*
 * model.h: what a message is: deliveries, field values, outcomes, marks,
 * trace context.
 */
#ifndef WARREN_MODEL_MODEL_H
#define WARREN_MODEL_MODEL_H

#include "config/conf.h"

/* ------------------------------------------------------------------ */
/* fields.c: AMQP field values as plain data, rendered as text for the
 * handler's environment */

enum field_kind {
	FIELD_VOID,	 /* 'V': no value */
	FIELD_BOOL,	 /* 't' */
	FIELD_INT,	 /* signed integers of any width */
	FIELD_UINT,	 /* unsigned integers of any width */
	FIELD_FLOAT,	 /* 'f': single precision, in v.d */
	FIELD_DOUBLE,	 /* 'd' */
	FIELD_DECIMAL,	 /* 'D': v.dec.value / 10^v.dec.scale */
	FIELD_STRING,	 /* 'S': long string */
	FIELD_BYTES,	 /* 'x': byte array */
	FIELD_TIMESTAMP, /* 'T': Unix seconds, in v.u */
	FIELD_ARRAY,	 /* 'A': v.list, keys unused */
	FIELD_TABLE,	 /* 'F': v.list, each item keyed */
};

struct field {
	enum field_kind kind;
	const char *key; /* within a table; may hold any byte */
	size_t key_len;
	union {
		bool b;
		int64_t i;
		uint64_t u;
		double d;
		struct {
			uint8_t scale;
			int32_t value;
		} dec;
		struct {
			const char *bytes;
			size_t len;
		} s;
		struct {
			const struct field *items;
			int n;
		} list;
	} v;
};

/*
 * f's value as SPEC.md shows it to a handler: strings and bytes as they
 * are, numbers in decimal, booleans true/false, timestamps as Unix
 * seconds, arrays and tables as compact JSON, void as "". Returns a
 * NUL-terminated copy the caller frees, its length in *len (the value
 * itself may hold NUL bytes).
 */
char *field_text(const struct field *f, size_t *len);

/* ------------------------------------------------------------------ */
/* delivery.c: a received message, independent of the AMQP library */

struct header {
	char *name;
	char *value;  /* string or integer rendered as text */
	size_t len;   /* value length; a value may hold NUL */
	bool integer; /* an AMQP integer, value in decimal */
};

struct delivery {
	uint64_t tag;
	bool redelivered;
	char *exchange;
	char *routing_key;
	/* properties; NULL when unset */
	char *message_id;
	char *correlation_id;
	char *reply_to;
	char *content_type;
	char *content_encoding;
	char *type;
	char *app_id;
	char *timestamp; /* decimal Unix seconds */
	char *priority;	 /* decimal */
	char *expiration;
	char *user_id;
	struct header *headers;
	int nheaders;
	void *body;
	size_t body_len;
	void *amqp;		   /* amqp/'s own copy of the message */
	void (*amqp_free)(void *); /* frees amqp, which owns body */
	int64_t received;	   /* now_ms() when it arrived */
	char *key;		   /* delivery_key(), set by amqp/ */
	char *undecodable;	   /* why its properties could not be read */
	size_t body_over; /* its announced size, when over max_body: body is
			   * then a mapped spool file, or NULL (unkept) */
	char *unkept;	  /* why such a body could not be kept, or NULL */
};

void delivery_free(struct delivery *d);
/*
 * What identifies a message across its redeliveries: "id:", its
 * message_id, ":" and a hash of its routing key and body (two messages
 * that share an id are still two), or "sum:" and the hash when it has no
 * id. Caller frees.
 */
char *delivery_key(const struct delivery *d);
/* The message_id in a delivery_key(), or NULL. Caller frees. */
char *delivery_key_id(const char *key);
/*
 * How long d waited, in ms, from its AMQP timestamp (Unix seconds) to
 * now_real_ms (CLOCK_REALTIME): -1 when it has none, or one no clock of
 * this era would give; 0 when the timestamp is ahead of now.
 */
int64_t delivery_wait_ms(const struct delivery *d, int64_t now_real_ms);
/* A header's value, or NULL. */
const struct header *delivery_header(const struct delivery *d,
				     const char *name);
/* ------------------------------------------------------------------ */
/* outcome.c: what a handler's result means for its message (pure) */

enum outcome_kind {
	OUTCOME_ACK,	  /* handled: ack */
	OUTCOME_RETRY,	  /* failed, attempts left: retry later */
	OUTCOME_FAILED,	  /* failed for good: park or reject */
	OUTCOME_REQUEUED, /* never ran: requeue, back off */
};

/* A persistent handler's word on a message (its status line). */
enum answer_kind {
	ANSWER_OK,	 /* "ok": ack */
	ANSWER_RETRY,	 /* "retry", or no valid answer: a failed attempt */
	ANSWER_FAIL,	 /* "fail": failed for good, like exit 65 */
	ANSWER_TEMPFAIL, /* "tempfail": a dependency is down (breaker); else
			  * as "retry" */
};

struct handler_result {
	int wait_status; /* from waitpid(), valid when started */
	bool started;	 /* false: exec failed */
	bool timed_out;
	bool
	    consumer_timeout; /* stopped before the broker's consumer_timeout */
	int timeout;	      /* seconds, for the reason text */
	bool answered;	      /* persistent mode: answer and reason decide, */
	enum answer_kind answer; /* not wait_status */
	char reason[64];

	bool cpu_limited; /* stopped by limits.cpu (cpu_limit seconds) */
	int cpu_limit;
	/* what the message cost, where it could be measured (cost.c) */
	bool has_cpu, has_rss;
	long cpu_ms;	 /* user + system CPU time of the handler */
	long max_rss_kb; /* its peak resident set size */
};

struct outcome {
	enum outcome_kind kind;
	char reason[64]; /* "exit 3", "signal 9", "timeout 30s" */
	int delay;	 /* OUTCOME_RETRY: seconds to wait */
};

/* A message over max_body (MiB) is not run: failed for good, its reason
 * "body N bytes over max_body M MiB" (and why its body is not kept). */
struct outcome outcome_oversize(const struct delivery *d, int max_body);
struct outcome outcome_of(const struct handler_result *r, int attempt,
			  const struct retry_conf *rc);
/*
 * r for a persistent handler that ended holding a message: answered with
 * a failed attempt whose reason is "exit N" or "signal N".
 */
void result_died(struct handler_result *r, int wait_status);
/* seconds before retry number N (N = 1 after the first attempt) */
int retry_delay(const struct retry_conf *rc, int n);
const char *outcome_name(enum outcome_kind k);
/*
 * When to stop a handler whose message arrived at received (monotonic
 * ms) so that it is settled before a consumer_timeout of ct_ms: leaves a
 * margin (a tenth, 1 to 60 s) for settling and *grace_ms (at most
 * kill_grace s, at most a third of the rest) between SIGTERM and SIGKILL.
 */
int64_t consumer_deadline(int64_t received, int ct_ms, int kill_grace,
			  int *grace_ms);

/* Whether r is a temporary failure (exit 75, or the answer tempfail). */
bool outcome_tempfail(const struct handler_result *r);

/* ------------------------------------------------------------------ */
/* ledger.c: marks on messages that outlive the workers holding them */

#define LEDGER_MAX 1024 /* marks per pool; the oldest go first */
/* crashes holding a message before it is parked */
#define LEDGER_DEATHS_MAX 2

struct mark {
	char *key;	 /* delivery_key() */
	int deaths;	 /* workers that crashed holding it */
	int lost;	 /* attempts the broker took back */
	int pending;	 /* an outcome known but not applied: kind + 1, or 0 */
	int attempt;	 /* the attempt that outcome is of */
	int delay;	 /* its retry delay */
	char reason[64]; /* the pending outcome's, or the last take-back's */
};

struct ledger {
	struct mark *marks;
	int n, cap;
};

struct mark *ledger_find(const struct ledger *l, const char *key);
/* The mark of key, made (zeroed) if there is none. */
struct mark *ledger_add(struct ledger *l, const char *key);
void ledger_forget(struct ledger *l, const char *key);
void ledger_free(struct ledger *l);
void ledger_copy(struct ledger *dst, const struct ledger *src);

/* ------------------------------------------------------------------ */
/* trace.c: W3C trace context of a message, checked and bounded */

#define TRACE_HEADER_MAX 512 /* traceparent: versions after 00 may grow */
#define TRACESTATE_MAX 512   /* W3C: what every vendor must pass on */
#define BAGGAGE_MAX 8192     /* W3C baggage: the limit on the whole header */

struct trace {
	const char *traceparent; /* into the delivery's headers, or NULL */
	const char *tracestate;	 /* only with a valid traceparent */
	const char *baggage;
	char trace_id[33]; /* 32 hex digits of traceparent, or "" */
};
/* A well-formed traceparent (W3C level 1): version, ids not all zero. */
bool traceparent_valid(const char *v, size_t n);
/* d's trace context: each header only when valid, printable ASCII and
 * within its bound; left out otherwise. */
void trace_of(const struct delivery *d, struct trace *t);

#endif
