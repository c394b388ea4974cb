/*
 * handler.c: one run of a queue's command for one message, once spawned
 * (spawn.c): feeds the body to its stdin, has its output logged
 * (stream.c), enforces its deadline, reaps it, and makes sure nothing of
 * it outlives the message.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <syslog.h>
#include <unistd.h>

#include "handler/handler_int.h"

struct handler {
	pid_t pid;
	int in_fd;
	const unsigned char *body;
	size_t body_len, body_off;
	struct stream out, err;
	int64_t deadline; /* timeout, or 0 */
	int64_t kill_at;  /* SIGKILL due, or 0 */
	int grace;
	int timeout;
	int64_t ct_deadline; /* stop before the broker's consumer_timeout */
	int ct_grace_ms;
	int ct_seconds;
	bool timed_out;
	bool ct_timed_out; /* the consumer_timeout deadline stopped it */
	bool exited;
	int status;
	int cpu_limit;	      /* limits.cpu in seconds, 0: none */
	int64_t cpu_ms;	      /* its CPU time, once reaped */
	struct rusage ru;     /* from wait4(), once exited */
	struct result result; /* stdout, when it is the message's result */
};

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* The soft RLIMIT_NOFILE handlers start with; 0: leave it. */
static void feed(struct handler *h);

struct handler *handler_start(const struct queue_conf *q, char **env,
			      const void *body, size_t len, char *errbuf,
			      size_t errlen)
{
	struct spawned sp;
	struct handler *h;

	if (handler_spawn(q, env, &sp, errbuf, errlen) != 0)
		return NULL;
	h = xcalloc(1, sizeof(*h));
	h->pid = sp.pid;
	h->in_fd = sp.in;
	stream_init(&h->out, sp.out, "stdout", false);
	stream_init(&h->err, sp.err, "stderr", true);
	h->body = body;
	h->body_len = len;
	h->timeout = q->timeout;
	h->grace = q->kill_grace;
	h->cpu_limit = q->limits.cpu;
	if (q->timeout > 0)
		h->deadline = now_ms() + (int64_t)q->timeout * 1000;
	feed(h); /* a small body fits the pipe: no wait for POLLOUT */
	return h;
}

pid_t handler_pid(const struct handler *h)
{
	return h->pid;
}

int handler_pollfds(struct handler *h, struct pollfd *pfd)
{
	int n = 0;

	if (h->in_fd >= 0) {
		pfd[n].fd = h->in_fd;
		pfd[n++].events = POLLOUT;
	}
	if (h->out.fd >= 0) {
		pfd[n].fd = h->out.fd;
		pfd[n++].events = POLLIN;
	}
	if (h->err.fd >= 0) {
		pfd[n].fd = h->err.fd;
		pfd[n++].events = POLLIN;
	}
	return n;
}

/* Write as much of the body as the pipe takes; EOF when all is written. */
static void feed(struct handler *h)
{
	while (h->in_fd >= 0) {
		ssize_t n;

		if (h->body_off == h->body_len) {
			close_fd(&h->in_fd);
			return;
		}
		n = write(h->in_fd, h->body + h->body_off,
			  h->body_len - h->body_off);
		if (n > 0) {
			h->body_off += (size_t)n;
		} else if (n == -1 && errno == EINTR) {
			continue;
		} else if (n == -1 && errno == EAGAIN) {
			return;
		} else {
			/* EPIPE: the handler does not read stdin; fine */
			close_fd(&h->in_fd);
			return;
		}
	}
}

void handler_io(struct handler *h, const struct pollfd *pfd, int n,
		const struct log_fields *lf)
{
	for (int i = 0; i < n; i++) {
		if (pfd[i].revents == 0)
			continue;
		if (pfd[i].fd == h->in_fd)
			feed(h);
		else if (pfd[i].fd == h->out.fd)
			stream_drain(&h->out, lf);
		else if (pfd[i].fd == h->err.fd)
			stream_drain(&h->err, lf);
	}
}

int64_t handler_cpu_ms(pid_t pid)
{
	struct timespec ts;
	clockid_t clk;

	/* no permission asked: works for a handler of another user */
	if (clock_getcpuclockid(pid, &clk) != 0 || clock_gettime(clk, &ts) != 0)
		return -1;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool handler_reaped(pid_t pid, int *status, struct rusage *ru)
{
	siginfo_t si;

	/* look without reaping, so the group id stays ours while we kill */
	si.si_pid = 0;
	if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == -1 ||
	    si.si_pid == 0)
		return false;
	/* whatever the handler left running in its group goes with it */
	handler_kill(pid, SIGKILL);
	return wait4(pid, status, 0, ru) == pid;
}

bool handler_reap(struct handler *h)
{
	if (!h->exited && handler_reaped(h->pid, &h->status, &h->ru)) {
		h->exited = true;
		h->cpu_ms =
		    (h->ru.ru_utime.tv_sec + h->ru.ru_stime.tv_sec) * 1000LL +
		    (h->ru.ru_utime.tv_usec + h->ru.ru_stime.tv_usec) / 1000;
	}
	return h->exited;
}

/*
 * Whether RLIMIT_CPU ended it: SIGXCPU at the soft limit, or SIGKILL at
 * the hard one (for a handler that caught SIGXCPU) that we did not send.
 */
static bool cpu_limited(const struct handler *h)
{
	if (h->cpu_limit == 0 || h->timed_out || !WIFSIGNALED(h->status))
		return false;
	if (WTERMSIG(h->status) == SIGXCPU)
		return true;
	return WTERMSIG(h->status) == SIGKILL &&
	       h->cpu_ms >= (int64_t)h->cpu_limit * 1000;
}

static void stop_ms(struct handler *h, int grace_ms)
{
	if (h->exited || h->kill_at != 0)
		return;
	handler_kill(h->pid, SIGTERM);
	handler_kill(h->pid, SIGCONT);
	h->kill_at = now_ms() + grace_ms;
}

void handler_stop(struct handler *h, int grace)
{
	stop_ms(h, grace * 1000);
}

void handler_limit(struct handler *h, int64_t at, int grace_ms, int seconds)
{
	h->ct_deadline = at;
	h->ct_grace_ms = grace_ms;
	h->ct_seconds = seconds;
}

int handler_next_timer(struct handler *h)
{
	int64_t next = 0, now = now_ms();

	if (h->exited)
		return -1;
	if (h->deadline != 0 && !h->timed_out)
		next = h->deadline;
	if (h->ct_deadline != 0 && !h->timed_out &&
	    (next == 0 || h->ct_deadline < next))
		next = h->ct_deadline;
	if (h->kill_at != 0 && (next == 0 || h->kill_at < next))
		next = h->kill_at;
	if (next == 0)
		return -1;
	if (next - now > INT_MAX)
		return INT_MAX;
	return next <= now ? 0 : (int)(next - now);
}

void handler_timers(struct handler *h)
{
	int64_t now = now_ms();

	if (h->exited)
		return;
	if (h->deadline != 0 && !h->timed_out && now >= h->deadline) {
		h->timed_out = true;
		handler_stop(h, h->grace);
	}
	if (h->ct_deadline != 0 && !h->timed_out && now >= h->ct_deadline) {
		h->timed_out = true;
		h->ct_timed_out = true;
		stop_ms(h, h->ct_grace_ms);
	}
	if (h->kill_at != 0 && now >= h->kill_at) {
		handler_kill(h->pid, SIGKILL);
		h->kill_at = 0;
		h->deadline = 0;
	}
}

void handler_finish(struct handler *h, struct handler_result *r,
		    const struct log_fields *lf)
{
	/*
	 * The group is gone: what it wrote is in the pipes, at most a pipe
	 * buffer each, so one drain reaches EOF. Only a process that left
	 * the group could keep a pipe open; its output is not waited for.
	 */
	if (h->out.fd >= 0)
		stream_drain(&h->out, lf);
	if (h->err.fd >= 0)
		stream_drain(&h->err, lf);
	stream_flush(&h->out, lf);
	stream_flush(&h->err, lf);
	close_fd(&h->in_fd);
	close_fd(&h->out.fd);
	close_fd(&h->err.fd);
	r->started = true;
	r->wait_status = h->status;
	r->timed_out = h->timed_out;
	r->timeout = h->timeout;
	r->cpu_limited = cpu_limited(h);
	r->cpu_limit = h->cpu_limit;
	cost_of_rusage(r, &h->ru);
	if (h->ct_timed_out) {
		r->consumer_timeout = true;
		r->timeout = h->ct_seconds;
	}
}

void handler_capture(struct handler *h)
{
	h->out.capture = &h->result;
	result_append(&h->result, "", 0); /* an empty result is one too */
}

void handler_take_result(struct handler *h, struct result *r)
{
	*r = h->result;
	memset(&h->result, 0, sizeof(h->result));
}

const char *handler_stderr_tail(const struct handler *h)
{
	return h->err.tail;
}

void handler_free(struct handler *h)
{
	if (h == NULL)
		return;
	if (!h->exited) {
		handler_kill(h->pid, SIGKILL);
		waitpid(h->pid, &h->status, 0);
	}
	close_fd(&h->in_fd);
	close_fd(&h->out.fd);
	close_fd(&h->err.fd);
	result_clear(&h->result);
	free(h);
}
