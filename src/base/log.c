/*
 * log.c: warren's one logging path. Records go to journald natively when
 * stderr is the journal, else one line each on stderr. Workers tag every
 * record with their queue and number.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "base/base.h"

/* a handler line of 4096 bytes, every byte escaped as \xNN, and more */
#define LOG_MSG_MAX (4096 * 4 + 1024)

static const char *log_ident = "warrend";
static bool log_debug_on;
static journal_sender *log_journal; /* NULL: lines on stderr */
static const char *log_queue;
static int log_worker;
static long log_pid;	   /* cached: set again in each worker */
static char log_trace[33]; /* TRACE_ID of the message in hand, or "" */
static bool log_holding;
static char log_held[PIPE_BUF]; /* whole lines, written at log_release */
static size_t log_held_len;

void log_init(const char *ident, bool debug)
{
	log_ident = ident;
	log_debug_on = debug;
	log_pid = (long)getpid();
}

void log_to_journal(journal_sender *send)
{
	log_journal = send;
}

void log_set_worker(const char *queue, int number)
{
	log_queue = queue;
	log_worker = number;
	log_pid = (long)getpid();
}

void log_set_trace(const char *trace_id)
{
	snprintf(log_trace, sizeof(log_trace), "%s",
		 trace_id != NULL ? trace_id : "");
}

/* buf's n bytes on stderr in one write(2). */
static void put_stderr(const char *buf, size_t n)
{
	while (write(STDERR_FILENO, buf, n) == -1 && errno == EINTR)
		;
}

void log_hold(void)
{
	log_holding = true;
}

void log_release(void)
{
	log_holding = false;
	if (log_held_len > 0)
		put_stderr(log_held, log_held_len);
	log_held_len = 0;
}

/* A line for stderr: kept while held (the lines before it go first
 * when it does not fit, or when it is an error: one may end the
 * process), else written at once. */
static void put_line(int prio, const char *line, size_t n)
{
	if (log_held_len > 0 &&
	    (log_held_len + n > sizeof(log_held) || prio <= LOG_ERR)) {
		put_stderr(log_held, log_held_len);
		log_held_len = 0;
	}
	if (!log_holding || n > sizeof(log_held) || prio <= LOG_ERR) {
		put_stderr(line, n);
		return;
	}
	memcpy(log_held + log_held_len, line, n);
	log_held_len += n;
}

static const char *prio_name(int prio)
{
	switch (prio) {
	case LOG_DEBUG:
		return "debug";
	case LOG_INFO:
		return "info";
	case LOG_NOTICE:
		return "notice";
	case LOG_WARNING:
		return "warning";
	default:
		return "error";
	}
}

#define MAX_FIELDS 16
#define FIELD_LEN 1024 /* names and ids are AMQP short strings: <= 255 */

static void emit_journal(int prio, const struct log_fields *f, const char *msg)
{
	char buf[MAX_FIELDS][FIELD_LEN];
	const char *fields[MAX_FIELDS];
	int n = 0;

#define ADD(...)                                                               \
	do {                                                                   \
		snprintf(buf[n], FIELD_LEN, __VA_ARGS__);                      \
		fields[n] = buf[n];                                            \
		n++;                                                           \
	} while (0)
	ADD("SYSLOG_IDENTIFIER=%s", log_ident);
	if (log_queue != NULL) {
		ADD("WARREN_QUEUE=%s", log_queue);
		ADD("WARREN_WORKER=%d", log_worker);
	}
	if (log_trace[0] != '\0')
		ADD("TRACE_ID=%s", log_trace);
	if (f != NULL) {
		if (f->message_id != NULL)
			ADD("WARREN_MESSAGE_ID=%s", f->message_id);
		if (f->outcome != NULL)
			ADD("WARREN_OUTCOME=%s", f->outcome);
		if (f->exit_status >= 0)
			ADD("WARREN_EXIT_STATUS=%d", f->exit_status);
		if (f->duration_ms >= 0)
			ADD("WARREN_DURATION_MS=%ld", f->duration_ms);
		if (f->stream != NULL)
			ADD("WARREN_STREAM=%s", f->stream);
		if (f->cpu_ms >= 0)
			ADD("WARREN_CPU_MS=%ld", f->cpu_ms);
		if (f->max_rss_kb >= 0)
			ADD("WARREN_MAX_RSS_KB=%ld", f->max_rss_kb);
	}
#undef ADD
	log_journal(prio, msg, fields, n);
}

/*
 * A newline or other control byte in a message id or the like would forge
 * a record on a line-based log: shown as \xNN instead, in place.
 */
static void escape_controls(char *msg, size_t cap)
{
	char out[LOG_MSG_MAX];
	size_t o = 0, i;

	for (i = 0; msg[i] != '\0'; i++)
		if (((unsigned char)msg[i] < 0x20 && msg[i] != '\t') ||
		    msg[i] == 0x7f)
			break;
	if (msg[i] == '\0')
		return; /* the usual case: nothing to do */
	for (i = 0; msg[i] != '\0' && o + 5 < sizeof(out); i++) {
		unsigned char c = (unsigned char)msg[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = '\0';
	snprintf(msg, cap, "%s", out);
}

static void vlog(int prio, const struct log_fields *f, const char *fmt,
		 va_list ap)
{
	char msg[LOG_MSG_MAX], line[LOG_MSG_MAX + 600];
	char who[300] = "";
	int n;

	if (prio == LOG_DEBUG && !log_debug_on)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_journal != NULL) {
		emit_journal(prio, f, msg);
		return;
	}
	if (log_queue != NULL)
		snprintf(who, sizeof(who), "%s/%d: ", log_queue, log_worker);
	/*
	 * One write(2) per line (or per held batch of whole lines), so that
	 * lines of several processes never mix: dprintf would write in 4 KiB
	 * pieces. O_APPEND files and pipes
	 * take a write whole (pipes up to PIPE_BUF; longer lines may still
	 * interleave there, which is why handler lines are split at 4 KiB).
	 */
	escape_controls(msg, sizeof(msg));
	n = snprintf(line, sizeof(line), "%s[%ld]: %s: %s%s\n", log_ident,
		     log_pid, prio_name(prio), who, msg);
	if (n > (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 1;
	put_line(prio, line, (size_t)n);
}

void log_fields(int prio, const struct log_fields *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(prio, f, fmt, ap);
	va_end(ap);
}

static void vlog_errno(int prio, int saved, const char *fmt, va_list ap)
{
	char msg[LOG_MSG_MAX];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_fields(prio, NULL, "%s: %s", msg, strerror(saved));
}

void log_warn(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	vlog_errno(LOG_WARNING, saved, fmt, ap);
	va_end(ap);
	errno = saved;
}

void log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_WARNING, NULL, fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_INFO, NULL, fmt, ap);
	va_end(ap);
}

void log_debug(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_DEBUG, NULL, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	vlog_errno(LOG_ERR, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}
