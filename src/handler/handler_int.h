/*
 * handler_int.h: what the files of src/handler/ share (spawning, output
 * streams, the persistent frame protocol, what a message cost) and the
 * pure parsers their unit tests reach; included only there and by
 * tests/unit.
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

/* cost.c: what a handler cost, from wait4()'s rusage or /proc/PID */

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

/* value spread by up to +-10% for worker number worker, the same for the
 * same worker every time; 0 stays 0, anything else stays >= 1 (pure). */
int64_t renew_spread(int64_t value, int worker);

#define RENEW_RESTART_FIRST_MS 250 /* the second quick end in a row waits */
#define RENEW_RESTART_MAX_MS 10000 /* and the backoff stops growing here */
/* The restart delay after failures ends in a row: the first at once. */
int renew_restart_delay(int failures);

/* The resident KiB of a /proc/PID/statm text, -1 if not one (pure). */
long renew_statm_kb(const char *text, long page_kb);

/* A wchan text of n bytes as one word for the log: "-" for "0" or
 * nothing (running), bytes outside printable ASCII as '?' (pure). */
void slow_wchan_text(const char *raw, size_t n, char *buf, size_t len);

#endif
