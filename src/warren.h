/*
 * warren.h: types and prototypes shared by warrend and warren-submit,
 * grouped by the file that defines them.
 */
#ifndef WARREN_H
#define WARREN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>

#define EX_CONFIG_STATUS 78  /* sysexits.h EX_CONFIG */
#define EX_DATAERR_STATUS 65 /* sysexits.h EX_DATAERR */
#define EX_USAGE_STATUS 64   /* sysexits.h EX_USAGE */

/* ------------------------------------------------------------------ */
/* config.c: the configuration file, parsed into plain structs */

enum queue_type { QUEUE_CLASSIC, QUEUE_QUORUM };
enum queue_mode {
	MODE_EXEC,	 /* one handler process per message */
	MODE_PERSISTENT, /* one long-lived handler per worker, framed stdin */
};

struct tls_conf {
	char *ca_cert;
	char *cert;
	char *key;
	bool verify_peer;
	bool verify_hostname;
};

struct broker_conf {
	char **urls; /* at least one */
	int nurls;
	int heartbeat;	      /* seconds, 0 = off */
	int connect_timeout;  /* seconds per node: TCP, TLS, handshake */
	int consumer_timeout; /* seconds the broker lets a delivery go unacked
			       */
	char *password_file;  /* NULL if unset */
	uint64_t secret; /* a hash of its password: a reload sees a change */
	struct tls_conf tls;
};

struct retry_conf {
	int attempts;	/* attempts in all, >= 1 */
	int delay;	/* seconds before the first retry */
	double backoff; /* multiplier per further retry */
	int max_delay;	/* cap, seconds */
};

/* Who a queue's handlers run as (identity.c). */
struct identity {
	bool set; /* queue.user given: switch to it */
	uid_t uid;
	gid_t gid;
	gid_t *groups; /* supplementary: the user's, from the group database */
	int ngroups;
};

/* queue.limits: per handler process, 0 = none */
struct limits_conf {
	int memory;    /* MiB of address space, RLIMIT_AS */
	int cpu;       /* seconds of CPU time */
	int processes; /* RLIMIT_NPROC, counted over the user */
	int files;     /* RLIMIT_NOFILE */
};

/* One of queue.arguments, typed as given at declare (topology.c). */
enum qarg_kind { QARG_INT, QARG_BOOL, QARG_STR };
struct qarg {
	char *name;
	enum qarg_kind kind;
	long long i; /* QARG_INT */
	bool b;	     /* QARG_BOOL */
	char *s;     /* QARG_STR */
};

/* A queue.bind section: the exchange and the queue's keys on it. */
struct bind_conf {
	char *exchange;
	char *type;  /* direct, topic, fanout, headers */
	char **keys; /* NULL-terminated, at least one */
	int nkeys;
};

/* queue.breaker: off unless its section is given */
struct breaker_conf {
	bool on;
	int cooldown; /* seconds the pool pauses at the first opening */
	int failures; /* failed attempts in a row that open it, 0: exit 75 only
		       */
};

struct queue_conf {
	char *name;
	char *file; /* the file that defines it: the main one or an include */
	int line;   /* where the section starts, for messages */
	int workers;
	int max_workers;  /* elastic above workers (scaler.c), else = workers */
	int idle_timeout; /* seconds an extra worker may idle before it goes */
	char **command;	  /* NULL-terminated argv */
	int ncommand;
	int prefetch;
	int timeout; /* seconds, 0 = none */
	int kill_grace;
	bool durable;
	enum queue_type type;
	struct retry_conf retry;
	bool park;
	char **environment; /* NULL-terminated "NAME=value" */
	int nenvironment;
	char *workdir;
	enum queue_mode mode;
	int max_messages; /* persistent: restart after this many, 0 = never */
	bool reply;	  /* answer messages that have reply_to (replies.c) */
	struct breaker_conf breaker;
	int max_rss; /* persistent: restart above this many MiB, 0 = never */
	int max_age; /* persistent: restart after this many s, 0 = never */
	int slow;    /* seconds: log a handler still running past it */

	/* containment (identity.c): NULL user: warrend's own */
	char *user;
	char *group;	    /* NULL: the user's primary group */
	int user_line;	    /* where user is set, for messages */
	struct identity id; /* user and group, looked up at load */
	struct limits_conf limits;

	/* topology (topology.c) */
	bool declare;	   /* false: passive check only */
	struct qarg *args; /* queue.arguments */
	int nargs;
	struct bind_conf *binds;
	int nbinds;
	int delivery_limit; /* quorum: x-delivery-limit */
};

struct config {
	char *path;
	struct broker_conf broker;
	int shutdown_timeout;
	char *control_socket; /* "" when off */
	char *metrics_listen; /* "ADDRESS:PORT", "" when off */
	struct queue_conf *queues;
	int nqueues;
};

/*
 * Parse and validate PATH. On success returns a config the caller frees
 * with config_free(). On failure returns NULL and writes "FILE:LINE: what"
 * into err.
 */
struct config *config_load(const char *path, char *err, size_t errlen);
void config_free(struct config *cf);
const struct queue_conf *config_queue(const struct config *cf,
				      const char *name);
/*
 * Print to out a "FILE:LINE: warning: ..." line for each setting that is
 * valid but risky (a queue timeout of 0, or not below consumer_timeout);
 * returns how many.
 */
int config_warnings(const struct config *cf, FILE *out);
/* true, with words in buf, when broker.password_file is world-readable */
bool config_password_exposed(const struct config *cf, char *buf, size_t len);
/* true when two queue configurations differ only in their worker count */
bool queue_conf_same_but_workers(const struct queue_conf *a,
				 const struct queue_conf *b);

/* ------------------------------------------------------------------ */
/* identity.c: users, groups and capabilities; the only user of libcap-ng */

/* A user (name, or decimal uid) and its primary group; -1 if unknown. */
int identity_user(const char *user, uid_t *uid, gid_t *gid);
/* A group (name, or decimal gid); -1 if unknown. */
int identity_group(const char *group, gid_t *gid);
/*
 * Resolve user (NULL: none, id->set false) and group (NULL: the user's
 * primary group) with the user's supplementary groups. 0, or -1 with
 * words in err. Free with identity_free().
 */
int identity_lookup(const char *user, const char *group, struct identity *id,
		    char *err, size_t errlen);
void identity_free(struct identity *id);
bool identity_same(const struct identity *a, const struct identity *b);
/* true when this process is root or holds CAP_SETUID and CAP_SETGID */
bool identity_can_switch(void);
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
/* What identity_enter() failed at. */
enum identity_failure {
	ID_SETGROUPS = 1,
	ID_SETGID,
	ID_SETUID,
	ID_VERIFY, /* the ids read back are not the ones set */
	ID_NO_NEW_PRIVS,
	ID_CAPS,
};
/*
 * In a handler's child before exec; async-signal-safe (raw system calls,
 * no allocation: fine after vfork). Switches to id when it is set and not
 * warrend's own (supplementary groups, gid, uid; the bounding set emptied
 * when allowed), checks the switch, sets no_new_privs with a user, and
 * leaves a handler that is not root no capability. 0, or an
 * identity_failure with errno set.
 */
int identity_enter(const struct identity *id);
/*
 * kill(target, sig) of a handler's process or group (target < 0) that
 * runs as id: when warrend is not root but holds CAP_SETUID, sent with
 * the handler's uid as the effective one for the moment. As kill(2).
 */
int identity_kill(const struct identity *id, pid_t target, int sig);
/* Words for an identity_failure. */
const char *identity_step(int step);

/* ------------------------------------------------------------------ */
/* log.c: one line per event on stderr, or native journald records */

/* Structured fields attached to a record; unset ones are NULL / -1. */
struct log_fields {
	const char *message_id;
	const char *outcome;
	int exit_status;
	long duration_ms;
	const char *stream;
	long cpu_ms;	 /* the handler's CPU time for the message */
	long max_rss_kb; /* its peak resident memory, KiB */
};
#define LOG_FIELDS_INIT                                                        \
	{                                                                      \
		NULL, NULL, -1, -1, NULL, -1, -1                               \
	}

void log_init(const char *ident, bool debug);
/* Records go to the journal through send (notify.c's journal_send, when
 * stderr is the journal), not as lines on stderr. Only warrend does this:
 * the tools need no libsystemd. */
typedef int journal_sender(int prio, const char *message, const char **fields,
			   int nfields);
void log_to_journal(journal_sender *send);
/* Identify this process as worker NUMBER of QUEUE in every record. */
void log_set_worker(const char *queue, int number);
/* TRACE_ID on every record from now on, until NULL (the message's end). */
void log_set_trace(const char *trace_id);
/* Lines for stderr from log_hold() on are kept, up to PIPE_BUF bytes, and
 * written together at log_release(): the lines of one message in one
 * write(2), still whole. Journal records go at once. */
void log_hold(void);
void log_release(void);
void log_fields(int prio, const struct log_fields *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

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
/* json.c: JSON texts, built and read; the only user of json-c */

struct json; /* a JSON value */

struct json *json_new_object(void);
struct json *json_new_array(void);
struct json *json_string(const char *s); /* NULL s: JSON null */
struct json *json_string_len(const char *bytes, size_t len);
struct json *json_int(int64_t v);
struct json *json_uint(uint64_t v);
struct json *json_double(double v);
/* v, written as text (which must be JSON for v) */
struct json *json_double_text(double v, const char *text);
struct json *json_new_bool(bool v);
/* Set o[key] = v (v NULL: null); o takes v. */
void json_set(struct json *o, const char *key, struct json *v);
/* Append v to array a; a takes v. */
void json_push(struct json *a, struct json *v);
/* Compact text of v, caller frees; v stays. */
char *json_text(const struct json *v);
void json_free(struct json *v);
/* Parse text; NULL when it is not JSON. */
struct json *json_parse(const char *text);
/* whether object o has key (its value may be null) */
bool json_has(const struct json *o, const char *key);
/* o[key], NULL when absent or o not an object; owned by o */
const struct json *json_get(const struct json *o, const char *key);
/* Its value: a string (NULL if not one), number, boolean. */
const char *json_str(const struct json *v);
int64_t json_num(const struct json *v);
double json_real(const struct json *v);
bool json_true(const struct json *v);
bool json_is_null(const struct json *v);
/* An array's length (0 if not one) and item i. */
int json_len(const struct json *a);
const struct json *json_at(const struct json *a, int i);

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
/* "WARREN_HEADER_" + NAME upper-cased, [^A-Z0-9] -> '_'; caller frees. */
char *env_name_of_header(const char *name);
/*
 * The handler's environment: PATH, the queue's environment, the WARREN_*
 * variables. Values holding NUL are left out. NULL-terminated; free with
 * env_free().
 */
char **handler_env(const struct queue_conf *q, int worker, int attempt,
		   const struct delivery *d);
/* A persistent handler's own environment: PATH, the queue's environment,
 * WARREN_QUEUE and WARREN_WORKER. Free with env_free(). */
char **handler_env_base(const struct queue_conf *q, int worker);
void env_free(char **env);
/* Linux refuses to exec with one environment string longer than this */
#define ENV_ENTRY_MAX 131072
/* Headers handler_env() leaves out as too large for the environment. */
int env_too_large(const struct delivery *d);

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

/* ------------------------------------------------------------------ */
/* ledger.c: marks on messages that outlive the workers holding them */

#define LEDGER_MAX 1024 /* marks per pool; the oldest go first */
#define LEDGER_DEATHS_MAX                                                      \
	2 /* crashes holding a message before it is parked                     \
	   */

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
/* A mark as one line of text for the control socket, and back: a line
 * with no deaths and nothing lost forgets the key. 0, or -1 if malformed. */
int ledger_encode(const struct mark *k, char *buf, size_t len);
int ledger_apply(struct ledger *l, const char *text);

/* ------------------------------------------------------------------ */
/* amqp/: the AMQP layer (the only user of rabbitmq-c and OpenSSL) */

#include "amqp/mq.h"

/* ------------------------------------------------------------------ */
/* cost.c: what a handler cost: CPU time and peak memory, from wait4()'s
 * rusage or from /proc/PID of a running process */

struct rusage;

/* r's cost from a reaped handler's rusage: user + system CPU in ms,
 * ru_maxrss in KiB. */
void cost_of_rusage(struct handler_result *r, const struct rusage *ru);
/* CPU ms of a rusage (user + system, its waited-for children included). */
long cost_rusage_ms(const struct rusage *ru);
/*
 * The CPU time in clock ticks (utime + stime + cutime + cstime) of a
 * /proc/PID/stat text of len bytes: the command name in parentheses may
 * hold spaces and parentheses of its own. -1 if the text is not one.
 */
long long cost_stat_ticks(const char *text, size_t len);
/* One reading of /proc/PID/stat: CPU ticks as cost_stat_ticks, page
 * faults (minflt + majflt: how a process's memory grows), resident set
 * in KiB (-1 when the text stops before it). */
struct proc_sample {
	long long ticks;
	unsigned long long faults;
	long rss_kb;
};
/* text's sample into s: 0, or -1 if the text is not a stat line. */
int cost_stat_parse(const char *text, size_t len, struct proc_sample *s);
/* The value in kB of field name ("VmHWM") of a /proc/PID/status text; -1
 * when absent. */
long cost_status_kb(const char *text, const char *name);
/* Ticks to ms by sysconf(_SC_CLK_TCK). */
long cost_ticks_ms(long long ticks);
/*
 * Of a running process: its stat sample (-1, errno set, if /proc/PID/stat
 * cannot be read: gone, or hidden by hidepid / ProtectProc), its peak RSS
 * in KiB since the last cost_peak_reset (-1 likewise), and that reset
 * (/proc/PID/clear_refs "5"; -1 with errno if refused).
 */
int cost_proc_sample(pid_t pid, struct proc_sample *s);
long cost_proc_peak_kb(pid_t pid);
int cost_peak_reset(pid_t pid);
/* /proc/PID/statm into buf, NUL-terminated: its length, or -1 (errno). */
ssize_t cost_proc_statm(pid_t pid, char *buf, size_t len);
/* The files those read stay open for the next message of the same pid;
 * this closes them (call it once that process is reaped). */
void cost_proc_release(void);

/* ------------------------------------------------------------------ */
/* replies.c: a handler's result, and the reply that carries it back to a
 * message's reply_to (queue.reply) */

#define RESULT_MAX (16 << 20) /* bytes of a result, at most */

/* A result as it is read: at most RESULT_MAX bytes kept. */
struct result {
	char *buf; /* NULL until a byte (or an empty result) is kept */
	size_t len, cap;
	bool too_large; /* more than RESULT_MAX bytes came: buf is cut */
};

/* Append n bytes of p, keeping at most RESULT_MAX. */
void result_append(struct result *r, const void *p, size_t n);
void result_clear(struct result *r);
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

/* Whether r is a temporary failure (exit 75, or the answer tempfail). */
bool breaker_tempfail(const struct handler_result *r);
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
/* handler.c: run one handler for one message */

struct handler;

#define HANDLER_LINE_MAX 4096 /* longer lines of output are split */
#define HANDLER_TAIL_MAX 4096 /* stderr kept for parking */

/* A handler's output pipe, logged line by line, control bytes escaped. */
struct stream {
	int fd; /* -1 once at EOF */
	const char *name;
	char line[HANDLER_LINE_MAX];
	size_t len;
	bool split; /* the last piece ended at the bound */
	unsigned long logged, dropped;
	bool keep_tail;		/* keep the last bytes in tail */
	struct result *capture; /* keep every byte here instead of logging */
	char tail[HANDLER_TAIL_MAX + 1];
	size_t tail_len;
};

void stream_init(struct stream *s, int fd, const char *name, bool keep_tail);
/* Log the complete lines that can be read now; false at EOF (fd closed). */
bool stream_drain(struct stream *s, const struct log_fields *lf);
/* Log a partial last line and how many lines were not logged; the count
 * of lines logged starts again (it is per message). */
void stream_flush(struct stream *s, const struct log_fields *lf);

/* A started command: its pid (and process group), its pipes. */
struct spawned {
	pid_t pid;
	int in, out, err; /* non-blocking, close-on-exec */
};

/*
 * Start q's command with env as SPEC.md says a handler runs: own process
 * group, fds 0-2 only, signals reset, the nofile limit, q's workdir. -1
 * with words in err when it cannot be run (a configuration problem).
 */
int handler_spawn(const struct queue_conf *q, char **env, struct spawned *sp,
		  char *err, size_t errlen);
/* Once pid has exited: kill what is left of its group, reap it into
 * *status (and its resource usage into *ru, unless NULL) and return
 * true; false while it runs. */
bool handler_reaped(pid_t pid, int *status, struct rusage *ru);
/* 0 when q's command is an executable file and its workdir a directory */
int handler_check(const struct queue_conf *q, char *err, size_t errlen);
/* The soft fd limit handlers get: warrend's own, before it raised it. */
void handler_set_nofile(unsigned long soft);
/* Start queue q's command with env, the body queued for its stdin. */
struct handler *handler_start(const struct queue_conf *q, char **env,
			      const void *body, size_t len, char *err,
			      size_t errlen);
/* fds to poll and their events; returns how many were written (<= 3) */
int handler_pollfds(struct handler *h, struct pollfd *pfd);
/* Act on poll results for the fds handler_pollfds gave. */
void handler_io(struct handler *h, const struct pollfd *pfd, int n,
		const struct log_fields *lf);
/* Reap if exited; true once the handler has exited. */
bool handler_reap(struct handler *h);
/* Stop the handler's process group: SIGTERM now, SIGKILL after grace. */
void handler_stop(struct handler *h, int grace);
/*
 * A second deadline, at monotonic ms at: there the group gets SIGTERM and
 * grace_ms later SIGKILL, and the attempt fails as "consumer_timeout
 * <seconds>s". Set again to move it.
 */
void handler_limit(struct handler *h, int64_t at, int grace_ms, int seconds);
/* ms until the next deadline (timeout, kill), -1 if none */
int handler_next_timer(struct handler *h);
/* Run timers: timeout -> SIGTERM, grace over -> SIGKILL. */
void handler_timers(struct handler *h);
pid_t handler_pid(const struct handler *h);
/* CPU time pid has used, ms, read from its CPU clock (which needs no
 * permission: fine for another user's process); -1 if gone. */
int64_t handler_cpu_ms(pid_t pid);
/* Signal the process group of a handler this worker started (of any
 * user). */
void handler_kill(pid_t group, int sig);
/* Drain remaining output, kill leftovers of its group, fill r. */
void handler_finish(struct handler *h, struct handler_result *r,
		    const struct log_fields *lf);
/* Last bytes of stderr kept for parking (NUL-terminated). */
const char *handler_stderr_tail(const struct handler *h);
/* Keep its stdout as the message's result instead of logging it. */
void handler_capture(struct handler *h);
/* That result (the caller owns r's buffer afterwards). */
void handler_take_result(struct handler *h, struct result *r);
void handler_free(struct handler *h);

/* ------------------------------------------------------------------ */
/* renew.c: when a persistent handler is renewed between messages */

/* One worker's limits, spread from its queue's (0: none). */
struct renew {
	int max_messages;
	int64_t max_age_ms;
	long max_rss_kb;
};

enum renew_reason { RENEW_NONE, RENEW_MESSAGES, RENEW_RSS, RENEW_AGE };

/* value spread by up to +-10% for worker number worker, the same for the
 * same worker every time; 0 stays 0, anything else stays >= 1 (pure). */
int64_t renew_spread(int64_t value, int worker);
/* Worker number worker's limits from q's max_messages, max_age, max_rss. */
void renew_init(struct renew *r, const struct queue_conf *q, int worker);
/* Whether a handler that has answered handled messages, run age_ms and
 * holds rss_kb (-1: unknown) is due for renewal, and why (pure). */
enum renew_reason renew_due(const struct renew *r, int handled, int64_t age_ms,
			    long rss_kb);
/* The reason in words, for the log line of the renewal. */
void renew_words(const struct renew *r, enum renew_reason why, int handled,
		 int64_t age_ms, long rss_kb, char *buf, size_t len);
/* The resident KiB of a /proc/PID/statm text, -1 if not one (pure). */
#define RENEW_RESTART_FIRST_MS 250 /* the second quick end in a row waits */
#define RENEW_RESTART_MAX_MS 10000 /* and the backoff stops growing here */
/* The restart delay after failures ends in a row: the first at once. */
int renew_restart_delay(int failures);
long renew_statm_kb(const char *text, long page_kb);
/* pid's resident memory in KiB, -1 with errno if it cannot be read. */
long renew_rss_kb(pid_t pid);

/* ------------------------------------------------------------------ */
/* slow.c: queue.slow, a log line for a handler still running past it */

/* monotonic ms at which a handler started at started is slow; 0: off */
int64_t slow_deadline(int64_t started, int slow);
/* A wchan text of n bytes as one word for the log: "-" for "0" or
 * nothing (running), bytes outside printable ASCII as '?' (pure). */
void slow_wchan_text(const char *raw, size_t n, char *buf, size_t len);
/* pid's kernel wait channel, as slow_wchan_text; "unknown" if hidden. */
void slow_wchan(pid_t pid, char *buf, size_t len);
/* The log line: message id, elapsed time, slow, pid and wchan (pure). */
void slow_words(char *buf, size_t len, const char *message_id, pid_t pid,
		int64_t elapsed_ms, int slow, const char *wchan);

/* ------------------------------------------------------------------ */
/* persistent.c: one long-lived handler per worker (mode = "persistent") */

struct persistent;

/* Worker number's handler of q, not started yet. */
struct persistent *persistent_new(const struct queue_conf *q, int worker);
/* Start it if it is not running; -1 with words in err if it cannot be
 * run (a configuration problem, as in exec mode). */
int persistent_start(struct persistent *p, char *err, size_t errlen);
/* Its process group, 0 while none runs (report it to the master). */
/* The worker got SIGCHLD: the handler may have ended. */
void persistent_sigchld(struct persistent *p);
pid_t persistent_pid(const struct persistent *p);
/*
 * Give it a message: env as handler_env() built it (its WARREN_* entries
 * are the frame's metadata), body kept until persistent_result() says it
 * is done. Written as the pipe takes it; -1 as persistent_start().
 */
int persistent_send(struct persistent *p, char **env, const void *body,
		    size_t len, char *err, size_t errlen);
/* As handler_limit(), for the message in hand. */
void persistent_limit(struct persistent *p, int64_t at, int grace_ms,
		      int seconds);
/* fds to poll, busy or not (<= 3) */
int persistent_pollfds(struct persistent *p, struct pollfd *pfd);
/*
 * Every turn of the worker's loop: I/O on the fds persistent_pollfds
 * gave, deadlines, its exit, its restart (at once, or with backoff when
 * it keeps ending). -1 with words in err when a restart cannot run it.
 */
int persistent_serve(struct persistent *p, const struct pollfd *pfd, int n,
		     const struct log_fields *lf, char *err, size_t errlen);
/*
 * The cost (CPU time, peak memory) of the message persistent_result()
 * gave, into r's cost fields, if it was answered and its cost not read
 * yet: read from /proc only now, so that a caller can ack first. NULL r:
 * read it, for nobody.
 */
void persistent_cost(struct persistent *p, struct handler_result *r);
/* Likewise what an answered message wrote on stderr up to now: logged
 * with lf, and into its tail, only now. */
void persistent_stderr(struct persistent *p, const struct log_fields *lf);
/* Once per message, when it is done: its result into r. */
bool persistent_result(struct persistent *p, struct handler_result *r,
		       const struct log_fields *lf);
/* Its result (a "result" line's body, or none: buf NULL); the caller
 * owns r's buffer afterwards. */
void persistent_take_result(struct persistent *p, struct result *r);
/* The message's stderr, its last bytes (for parking). */
const char *persistent_stderr_tail(const struct persistent *p);
/* ms until persistent_serve has a timer to run, -1 if none */
int persistent_next_timer(const struct persistent *p);
/* Shutdown: SIGTERM its group now, SIGKILL after grace seconds. */
void persistent_stop(struct persistent *p, int grace);
/* Between messages, at the worker's end: EOF on its stdin, then wait for
 * it kill_grace seconds and SIGKILL it. Blocks; logs its last words. */
void persistent_close(struct persistent *p, const struct log_fields *lf);
/* Kill its group at once and free p. */
void persistent_free(struct persistent *p);

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
/* worker.c: one worker process */

/* Worker -> master report codes, one byte each on the control socket. */
enum report {
	REPORT_CONSUMING = 'C',
	REPORT_BUSY = 'B',
	REPORT_ACK = 'a',
	REPORT_RETRY = 'r',
	REPORT_FAILED = 'f',
	REPORT_REQUEUED = 'q',
	REPORT_DOWN = 'D',	 /* lost or could not get its connection */
	REPORT_HOLDING = 'H',	 /* + key: a message taken in hand */
	REPORT_TAKEN_BACK = 'L', /* + "MS\tKEY": the broker's consumer_timeout
				  * took it back */
	REPORT_BLOCKED = 'P',	 /* + reason: the broker blocks publishing */
	REPORT_UNBLOCKED = 'U',
	REPORT_PENDING = 'O',  /* + "KIND\tATTEMPT\tDELAY\tREASON\tKEY": an
				* outcome the lost connection kept from it */
	REPORT_PAUSED = 'Z',   /* + like C: connected, not consuming */
	REPORT_GROUP = 'G',    /* + pid: its persistent handler's process
				* group, alive across messages ("0": none) */
	REPORT_TEMPFAIL = 't', /* + like a: put back unspent (breaker) */
	REPORT_SLOW = 'S',     /* the handler in hand ran past queue.slow */
	REPORT_READY = 'N',    /* + count: the queue's ready messages */
};

/* Master -> worker commands on the control socket. */
enum command {
	COMMAND_RETIRE = 'R',		/* finish the current message, exit */
	COMMAND_STOP = 'S',		/* shutdown: shutdown_timeout applies */
	COMMAND_CONSUMER_TIMEOUT = 'T', /* + ms: the broker's, shorter */
	COMMAND_MARK = 'M',		/* + ledger_encode() text */
	COMMAND_PAUSE = 'Z',		/* stop consuming after this message */
	COMMAND_RESUME = 'G',		/* consume again */
	COMMAND_GO = 'A',		/* a new worker may connect now */
	COMMAND_PROBE = 'P', /* paused by the breaker: take one message */
	COMMAND_WATCH = 'W', /* + ms: report REPORT_READY this often, 0: stop */
};

/* Worker exit statuses, telling the master why. */
enum worker_exit {
	WORKER_EXIT_OK = 0,	     /* retired or stopped */
	WORKER_EXIT_FATAL = 1,	     /* unexpected error */
	WORKER_EXIT_CONNECT = 10,    /* could not connect / lost it */
	WORKER_EXIT_LOGIN = 11,	     /* refused login */
	WORKER_EXIT_DECLARE = 12,    /* could not declare or consume */
	WORKER_EXIT_HANDLER = 13,    /* handler could not start */
	WORKER_EXIT_MASTER = 14,     /* master went away */
	WORKER_EXIT_TAKEN_BACK = 15, /* the broker's consumer_timeout hit */
	WORKER_EXIT_HOME = 16,	     /* its own node is back: respawn now */
};

#define HOME_PROBE_MS 5000 /* a worker on a fallback node looks home */

/* What a new worker starts from. */
struct worker_start {
	const struct config *cf;
	const struct queue_conf *q;
	int number;
	int ctl;		    /* its end of the control socket */
	const struct ledger *marks; /* the pool's, copied */
	int consumer_timeout_ms;    /* the broker's once proven shorter */
	int home_moves;		    /* moves home that did not stay there */
	bool paused;		    /* its queue is paused: do not consume */
};

/* Runs in the forked child; never returns. */
void worker_main(const struct worker_start *ws) __attribute__((noreturn));
const char *worker_exit_reason(int status);

/* ------------------------------------------------------------------ */
/* replay.c: warrenctl's failed and replay, straight to the broker */

struct replay_opts {
	const char *conf;  /* the configuration file */
	const char *queue; /* QUEUE; its parked messages are QUEUE.failed */
	long limit;	   /* messages at most (replayed, for replay); 0: all */
	bool json;	   /* failed: JSON instead of a table */
	const char *reason; /* replay: only reasons containing it, or NULL */
};

/* warrenctl failed: list QUEUE.failed, leaving it as it was. Exit status. */
int replay_list(const struct replay_opts *o);
/* warrenctl replay: move parked messages back to QUEUE. Exit status. */
int replay_run(const struct replay_opts *o);
/* Text safe for a terminal: control bytes become '?', cut to at most max
 * bytes (at a UTF-8 boundary, "..." marking the cut). Caller frees. */
char *ctl_printable(const char *s, size_t len, size_t max);

/* ------------------------------------------------------------------ */
/* evloop.c: the master's epoll set, a callback per fd */

struct ev;
typedef void ev_fn(void *arg, uint32_t events);

int ev_init(void); /* the epoll fd, -1 on failure */
int ev_fd(void);
/* Watch fd for events (EPOLLIN...); NULL on failure (said). */
struct ev *ev_add(int fd, uint32_t events, ev_fn *fn, void *arg);
int ev_mod(struct ev *e, uint32_t events);
/* Stop watching; call before closing the fd. NULL is fine. */
void ev_del(struct ev *e);
/* Wait up to timeout_ms (-1: no limit) and run the callbacks of ready fds. */
int ev_wait(int timeout_ms);

/* ------------------------------------------------------------------ */
/* timerq.c: a min-heap of timers (pure) */

struct timer {
	int64_t at;
	void *p;
};

struct timerq {
	struct timer *v;
	int n, cap;
};

void timerq_push(struct timerq *q, int64_t at, void *p);
/* The earliest timer, or NULL. */
const struct timer *timerq_peek(const struct timerq *q);
void timerq_pop(struct timerq *q);
void timerq_free(struct timerq *q);

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

#define CONTROL_SOCKET_DEFAULT "/run/warren/warrend.sock"

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
/* master.c: the supervisor */

int master_run(const char *path, struct config *cf);

/* ------------------------------------------------------------------ */
/* notify.c: the only user of libsystemd's notify and journal APIs */

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_status(const char *status);
void notify_watchdog(void);
/* watchdog interval in ms when systemd asks for pings, else 0 */
long notify_watchdog_ms(void);
/* true when stderr is connected to the journal */
bool journal_is_stderr(void);
int journal_send(int prio, const char *message, const char **fields,
		 int nfields);

/* ------------------------------------------------------------------ */
/* include.c: the files of `include`'s glob patterns */

#define INCLUDE_MAX_FILES 4096

/*
 * The files that the glob PATTERNS match: each pattern's matches sorted
 * by name (strcmp), the patterns in the order given, a file matched twice
 * listed once. A relative pattern is taken from the directory of BASE (the
 * including file). A pattern that matches nothing, or whose directory does
 * not exist, adds nothing. Returns a NULL-terminated list to free with
 * include_free(), or NULL with what went wrong in err (which names the
 * pattern, not the file and line: the caller knows those).
 */
char **include_expand(char *const *patterns, int npatterns, const char *base,
		      char *err, size_t errlen);
void include_free(char **files);

/* ------------------------------------------------------------------ */
/* util.c */

/* monotonic milliseconds */
int64_t now_ms(void);
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);
int set_nonblock(int fd);
/* All of f, NUL-terminated (it may hold NULs of its own); caller frees. */
char *read_all(FILE *f, size_t *len);
/* "IPv4:PORT" or "[IPv6]:PORT" as a socket address; -1 if not one. */
struct sockaddr_storage;
int parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *len);
/* Length of the well-formed UTF-8 sequence at s (n bytes left), or 0. */
size_t utf8_seq(const unsigned char *s, size_t n);
/* Block SIGCHLD, SIGTERM, SIGINT, SIGHUP; return a signalfd reading them. */
int signal_fd(void);

/* ------------------------------------------------------------------ */
/* topology.c: queue arguments, bindings and declare; pure checks */

/*
 * Parse "NAME=VALUE" (queue.arguments) into a: an integer, true/false, else
 * a string (always a string for the arguments RabbitMQ reads as strings).
 * 0, or -1 with words in err. Free with qarg_free().
 */
int qarg_parse(const char *text, struct qarg *a, char *err, size_t errlen);
/* What warrend -t can tell of a known argument's value: 0, or -1 and err. */
int qarg_check(const struct qarg *a, char *err, size_t errlen);
const struct qarg *qarg_find(const struct qarg *args, int n, const char *name);
void qarg_free(struct qarg *a);
/* direct, topic, fanout or headers */
bool exchange_type_known(const char *type);
/* A bind section's exchange name, a key: 0, or -1 with words in err. */
int exchange_name_check(const char *name, char *err, size_t errlen);
int routing_key_check(const char *key, char *err, size_t errlen);
/* true when a and b ask the same of the broker (declare, args, binds) */
bool topology_same(const struct queue_conf *a, const struct queue_conf *b);
void topology_free(struct queue_conf *q);

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

/* ------------------------------------------------------------------ */
/* death.c: a message the broker dead-lettered, from its x-death header */

struct death {
	char *reason;	/* "delivery_limit", "rejected", "expired", "maxlen" */
	char *queue;	/* where it was dead-lettered from, or NULL */
	long long time; /* Unix seconds, or -1 */
};
/* The latest dead-lettering of d: 0 and x (free with death_free), or -1
 * when d has no readable x-death. */
int death_of(const struct delivery *d, struct death *x);
void death_free(struct death *x);

/* ------------------------------------------------------------------ */
/* meter.c: what each message costs a persistent handler, from /proc */

/* A process read at a message's start (or a message's end). */
struct meter_mark {
	pid_t pid;		   /* the process read, 0: none */
	long long ticks;	   /* its CPU ticks then, -1: unknown */
	unsigned long long faults; /* its page faults then */
	bool peak;		   /* its peak was reset to base_kb then */
	long base_kb;
};
struct meter {
	struct meter_mark cur;	/* the start of the message in hand */
	struct meter_mark next; /* the last one's end: the next one's start */
	bool told_cpu, told_rss;
};
/* The message handed to pid starts: its readings, unless the last
 * message's end of the same pid serves. */
void meter_begin(struct meter *m, pid_t pid);
/*
 * The message ends: r's CPU time and peak RSS (has_cpu, has_rss), of
 * the process still running, or from the rusage of the one reaped (CPU
 * only: its ru_maxrss spans its whole life).
 */
void meter_end(struct meter *m, pid_t running, pid_t gone,
	       const struct rusage *gone_ru, struct handler_result *r);

/* ------------------------------------------------------------------ */
/* persistent_proto.c: the wire protocol with a persistent handler */

/*
 * Frame protocol (warren-handler(7)), pure. frame_escape writes v with
 * "\\" for backslash and "\\n" for newline into out (room for 2 * n),
 * returning its length. frame_header is "warren N LEN\n" and a
 * NAME=VALUE line for each WARREN_* entry of env and its TRACEPARENT,
 * TRACESTATE and BAGGAGE, escaped; caller frees,
 * its length in *len. answer_parse reads one status line (no newline):
 * "ok", "retry", "fail" or "tempfail", optionally a space and a reason; it
 * fills r's answered, answer and reason (the reason cut to fit, control bytes
 * as
 * '?', or the word itself) and is false for anything else.
 */
size_t frame_escape(const char *v, size_t n, char *out);
char *frame_header(char *const *env, size_t body_len, size_t *len);
bool answer_parse(const char *line, size_t len, struct handler_result *r);
/* "result LEN" (LEN decimal, no leading zero, at most RESULT_MAX): the
 * length of the result body that follows it, in *size. */
bool result_head_parse(const char *line, size_t len, size_t *size);
/* r for an answer that is not one: the attempt fails, "bad answer". */
void answer_bad(struct handler_result *r);

/* A frame on its way to the handler's stdin. */
struct frame_out {
	char *head; /* "warren N LEN\n" and the metadata lines; owned */
	size_t head_len;
	const unsigned char *body; /* the delivery's, not owned */
	size_t body_len;
	size_t off; /* bytes of head and body written */
};
size_t frame_out_len(const struct frame_out *f);
/* Write what fd takes of f: 1 once all is written, 0 when the pipe is
 * full (poll for POLLOUT), -1 with errno (EPIPE: it reads no more). */
int frame_out_write(int fd, struct frame_out *f);
/* Free the head; f is empty again. */
void frame_out_clear(struct frame_out *f);
/* f is the frame of body (len bytes, kept by the caller) with env's
 * metadata, nothing of it written yet. */
void frame_out_set(struct frame_out *f, char *const *env, const void *body,
		   size_t len);
/* Once its reader has ended: true when it took not one byte of f, which
 * still fills its stdin pipe fd (FIONREAD). */
bool frame_out_untaken(int fd, const struct frame_out *f);

#define ANSWER_LINE_MAX 1024 /* a longer status line is garbage */

/* The handler's stdout, split into lines and result bytes. */
struct answer_in {
	char line[ANSWER_LINE_MAX];
	size_t len;
	bool line_done;	    /* line was returned: the next call clears it */
	size_t result_left; /* bytes of a "result LEN" still to come */
};
enum answer_event {
	ANSWER_IN_NONE,	  /* buf is used up */
	ANSWER_IN_LINE,	  /* a whole line, without its newline */
	ANSWER_IN_LONG,	  /* a line too long to be an answer: garbage */
	ANSWER_IN_RESULT, /* bytes of a result */
};
/*
 * The next piece of buf[*off, n), *off moved past it: a line or result
 * bytes in *data and *len (a line stays valid until the next call). Set
 * result_left after a "result LEN" line and its bytes come next.
 */
enum answer_event answer_in_next(struct answer_in *a, const char *buf, size_t n,
				 size_t *off, const char **data, size_t *len);

#endif
