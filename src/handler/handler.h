/*
 * handler.h: running a handler for a message: exec or persistent, its
 * result and what it cost, when it is renewed, when it is slow.
 */
#ifndef WARREN_HANDLER_HANDLER_H
#define WARREN_HANDLER_HANDLER_H

#include "model/model.h"

/* ------------------------------------------------------------------ */
/* env.c: the environment a handler runs with (pure) */

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
/* result.c: a handler's result as it is read, bounded */

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

/* ------------------------------------------------------------------ */
/* handler.c: run one handler for one message */

struct handler;

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
/* renew.c: when a persistent handler is renewed between messages */

/* One worker's limits, spread from its queue's (0: none). */
struct renew {
	int max_messages;
	int64_t max_age_ms;
	long max_rss_kb;
};

enum renew_reason { RENEW_NONE, RENEW_MESSAGES, RENEW_RSS, RENEW_AGE };

/* Worker number worker's limits from q's max_messages, max_age, max_rss. */
void renew_init(struct renew *r, const struct queue_conf *q, int worker);
/* Whether a handler that has answered handled messages, run age_ms and
 * holds rss_kb (-1: unknown) is due for renewal, and why (pure). */
enum renew_reason renew_due(const struct renew *r, int handled, int64_t age_ms,
			    long rss_kb);
/* The reason in words, for the log line of the renewal. */
void renew_words(const struct renew *r, enum renew_reason why, int handled,
		 int64_t age_ms, long rss_kb, char *buf, size_t len);
/* pid's resident memory in KiB, -1 with errno if it cannot be read. */
long renew_rss_kb(pid_t pid);

/* ------------------------------------------------------------------ */
/* slow.c: queue.slow, a log line for a handler still running past it */

/* monotonic ms at which a handler started at started is slow; 0: off */
int64_t slow_deadline(int64_t started, int slow);
/* pid's kernel wait channel, as slow_wchan_text; "unknown" if hidden. */
void slow_wchan(pid_t pid, char *buf, size_t len);
/* The log line: message id, elapsed time, slow, pid and wchan (pure). */
void slow_words(char *buf, size_t len, const char *message_id, pid_t pid,
		int64_t elapsed_ms, int slow, const char *wchan);

#endif
