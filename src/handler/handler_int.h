/*
 * handler_int.h: what the files of src/handler/ share (spawning, output
 * streams, the persistent frame protocol) and the pure parsers their unit
 * tests reach; included only there and by tests/unit.
 */
#ifndef WARREN_HANDLER_HANDLER_INT_H
#define WARREN_HANDLER_HANDLER_INT_H

#include "handler/handler.h"

struct rusage;

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

/* CPU time pid has used, ms, read from its CPU clock (which needs no
 * permission: fine for another user's process); -1 if gone. */
int64_t handler_cpu_ms(pid_t pid);

/* Signal the process group of a handler this worker started (of any
 * user). */
void handler_kill(pid_t group, int sig);

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

/* CPU ms of a rusage (user + system, its waited-for children included). */
long cost_rusage_ms(const struct rusage *ru);
/*
 * The CPU time in clock ticks (utime + stime + cutime + cstime) of a
 * /proc/PID/stat text of len bytes: the command name in parentheses may
 * hold spaces and parentheses of its own. -1 if the text is not one.
 */
long long cost_stat_ticks(const char *text, size_t len);
/* The value in kB of field name ("VmHWM") of a /proc/PID/status text; -1
 * when absent. */
long cost_status_kb(const char *text, const char *name);
/* Ticks to ms by sysconf(_SC_CLK_TCK). */
long cost_ticks_ms(long long ticks);

/* value spread by up to +-10% for worker number worker, the same for the
 * same worker every time; 0 stays 0, anything else stays >= 1 (pure). */
int64_t renew_spread(int64_t value, int worker);

/* The resident KiB of a /proc/PID/statm text, -1 if not one (pure). */
long renew_statm_kb(const char *text, long page_kb);

/* A wchan text of n bytes as one word for the log: "-" for "0" or
 * nothing (running), bytes outside printable ASCII as '?' (pure). */
void slow_wchan_text(const char *raw, size_t n, char *buf, size_t len);

#endif
