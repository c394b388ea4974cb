/*
 * base.h: what every program needs: logging, memory and strings, JSON,
 * the event loop and timers, systemd, users and identity.
 */
#ifndef WARREN_BASE_BASE_H
#define WARREN_BASE_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>

#define EX_CONFIG_STATUS 78   /* sysexits.h EX_CONFIG */
#define EX_TEMPFAIL_STATUS 75 /* sysexits.h EX_TEMPFAIL: try again later */
#define EX_DATAERR_STATUS 65  /* sysexits.h EX_DATAERR */
#define EX_USAGE_STATUS 64    /* sysexits.h EX_USAGE */

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
/* stderr lines from log_hold() to log_release() go in one write(2) */
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
/* timers.c: deadlines owned by modules, merged by the loop (pure) */

#define TIMERS_MAX 16
/* When an owner is next due (monotonic ms), 0: not armed. */
typedef int64_t timer_next_fn(void *arg);
typedef void timer_run_fn(void *arg, int64_t now);
struct timers {
	struct timer_owner {
		const char *name;
		timer_next_fn *next;
		timer_run_fn *run;
		void *arg;
	} v[TIMERS_MAX];
	int n;
};
void timers_add(struct timers *t, const char *name, timer_next_fn *next,
		timer_run_fn *run, void *arg);
int64_t timers_next(const struct timers *t); /* the earliest, 0: none */
/* ms to wait for the earliest: -1 if none is armed, 0 if one is due */
int timers_wait_ms(const struct timers *t, int64_t now);
/* Due owners run once each, in order (NULL run: a wake only): count */
int timers_run(struct timers *t, int64_t now);

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
/* users.c, identity.c: users and groups (plain libc); switching a
 * handler to them (identity.c: the only user of libcap-ng) */

/* Who a queue's handlers run as (users.c, identity.c). */
struct identity {
	bool set; /* queue.user given: switch to it */
	uid_t uid;
	gid_t gid;
	gid_t *groups; /* supplementary: the user's, from the group database */
	int ngroups;
};

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

#endif
