/*
 * cost.c: what a handler cost its message: CPU time and peak resident
 * memory, from wait4()'s rusage once it has exited (exec mode), or from
 * /proc/PID/stat and /proc/PID/status while it runs (persistent mode).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "handler/handler_int.h"

long cost_rusage_ms(const struct rusage *ru)
{
	long long us =
	    (long long)ru->ru_utime.tv_sec * 1000000 + ru->ru_utime.tv_usec +
	    (long long)ru->ru_stime.tv_sec * 1000000 + ru->ru_stime.tv_usec;

	return (long)(us / 1000);
}

void cost_of_rusage(struct handler_result *r, const struct rusage *ru)
{
	r->cpu_ms = cost_rusage_ms(ru);
	r->max_rss_kb = ru->ru_maxrss; /* Linux: KiB */
	r->has_cpu = true;
	r->has_rss = ru->ru_maxrss > 0;
}

/* The unsigned number at *p (a field ending at a space, newline or the
 * end); -1 if there is none. */
static long long stat_field(const char **p, const char *end)
{
	char *next;
	long long v;

	errno = 0;
	v = strtoll(*p, &next, 10);
	if (next == *p || errno != 0 || v < 0 || next > end ||
	    (next < end && *next != ' ' && *next != '\n'))
		return -1;
	*p = next;
	return v;
}

static long page_kb(void)
{
	static long kb;

	if (kb <= 0)
		kb = sysconf(_SC_PAGESIZE) / 1024;
	return kb > 0 ? kb : 4;
}

int cost_stat_parse(const char *text, size_t len, struct proc_sample *s)
{
	const char *p, *end = text + len;

	/* "PID (COMM) STATE ...": COMM may hold anything, ")" included,
	 * so the name ends at the last ")" */
	for (p = end; p > text && p[-1] != ')'; p--)
		;
	if (p == text || memchr(text, '(', (size_t)(p - text)) == NULL)
		return -1;
	s->ticks = s->faults = 0;
	s->rss_kb = -1;
	/* from 3 (state) on: minflt 10, majflt 12, utime, stime, cutime,
	 * cstime 14-17 (needed); rss 24 (pages, where the text has it) */
	for (int field = 3; field <= 24; field++) {
		long long v;

		if (p == end && field > 17)
			return 0;
		if (p == end || *p != ' ')
			return -1;
		p++;
		if (field != 10 && field != 12 && field < 14) {
			while (p < end && *p != ' ')
				p++;
			continue;
		}
		if (field > 17 && field < 24) {
			while (p < end && *p != ' ' && *p != '\n')
				p++;
			continue;
		}
		if ((v = stat_field(&p, end)) < 0)
			return field > 17 ? 0 : -1;
		if (field < 14)
			s->faults += (unsigned long long)v;
		else if (field <= 17)
			s->ticks += v;
		else
			s->rss_kb = (long)(v * page_kb());
	}
	return 0;
}

long long cost_stat_ticks(const char *text, size_t len)
{
	struct proc_sample s;

	return cost_stat_parse(text, len, &s) == 0 ? s.ticks : -1;
}

long cost_status_kb(const char *text, const char *name)
{
	size_t n = strlen(name);

	for (const char *line = text; line != NULL && *line != '\0';) {
		const char *nl = strchr(line, '\n');

		if (strncmp(line, name, n) == 0 && line[n] == ':') {
			char *end;
			long v = strtol(line + n + 1, &end, 10);

			return end != line + n + 1 && v >= 0 &&
				       strncmp(end, " kB", 3) == 0
				   ? v
				   : -1;
		}
		line = nl != NULL ? nl + 1 : NULL;
	}
	return -1;
}

long cost_ticks_ms(long long ticks)
{
	static long hz;

	if (hz <= 0)
		hz = sysconf(_SC_CLK_TCK);
	if (hz <= 0)
		hz = 100;
	return (long)(ticks * 1000 / hz);
}

/*
 * The /proc files of one process stay open between messages: a read
 * from offset 0 makes the kernel write them anew, so a message costs one
 * pread each instead of open, read, read and close. cost_proc_release()
 * closes them once that process is gone (its pid may come again).
 */
enum { PROC_STAT, PROC_STATUS, PROC_CLEAR_REFS, PROC_STATM, PROC_FILES };
static const char *const proc_names[PROC_FILES] = {"stat", "status",
						   "clear_refs", "statm"};
static struct {
	pid_t pid;
	int fd[PROC_FILES]; /* -1: not open */
} open_proc = {0, {-1, -1, -1, -1}};

void cost_proc_release(void)
{
	for (int i = 0; i < PROC_FILES; i++)
		if (open_proc.fd[i] >= 0) {
			close(open_proc.fd[i]);
			open_proc.fd[i] = -1;
		}
	open_proc.pid = 0;
}

/* pid's /proc file which, opened on first use; -1 with errno. */
static int proc_fd(pid_t pid, int which)
{
	char path[64];

	if (open_proc.pid != pid) {
		cost_proc_release();
		open_proc.pid = pid;
	}
	if (open_proc.fd[which] >= 0)
		return open_proc.fd[which];
	snprintf(path, sizeof(path), "/proc/%ld/%s", (long)pid,
		 proc_names[which]);
	open_proc.fd[which] = open(
	    path, (which == PROC_CLEAR_REFS ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
	return open_proc.fd[which];
}

/* /proc/PID/NAME into buf, NUL-terminated; its length, or -1 (errno). */
static ssize_t read_proc(pid_t pid, int which, char *buf, size_t len)
{
	ssize_t n = 0, got = 0;
	int fd = proc_fd(pid, which), e;

	if (fd == -1)
		return -1;
	while ((size_t)got < len - 1 &&
	       ((n = pread(fd, buf + got, len - 1 - (size_t)got, got)) > 0 ||
		(n == -1 && errno == EINTR))) {
		if (n > 0)
			got += n;
		if (n > 0 && (size_t)got < len - 1)
			break; /* a short read: the kernel gave all there is */
	}
	e = errno;
	buf[got] = '\0';
	if (got == 0) {
		errno = n == 0 ? ESRCH : e; /* empty: the process is gone */
		return -1;
	}
	return got;
}

int cost_proc_sample(pid_t pid, struct proc_sample *s)
{
	char buf[1024];
	ssize_t n = read_proc(pid, PROC_STAT, buf, sizeof(buf));

	if (n < 0)
		return -1;
	if (cost_stat_parse(buf, (size_t)n, s) != 0) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

long cost_proc_peak_kb(pid_t pid)
{
	char buf[4096];
	long kb;

	if (read_proc(pid, PROC_STATUS, buf, sizeof(buf)) < 0)
		return -1;
	kb = cost_status_kb(buf, "VmHWM");
	if (kb < 0)
		errno = ESRCH; /* a zombie has no memory left to tell */
	return kb;
}

ssize_t cost_proc_statm(pid_t pid, char *buf, size_t len)
{
	return read_proc(pid, PROC_STATM, buf, len);
}

int cost_peak_reset(pid_t pid)
{
	int fd = proc_fd(pid, PROC_CLEAR_REFS);

	if (fd == -1)
		return -1;
	return pwrite(fd, "5", 1, 0) == 1 ? 0 : -1;
}
