/*
 * handler.c: one run of a queue's command for one message. Spawns it in
 * its own process group with a clean environment and fds 0-2 only, feeds
 * the body to its stdin, logs its output line by line, enforces its
 * deadline, and makes sure nothing of it outlives the message.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <syslog.h>
#include <unistd.h>

#include "handler/handler_int.h"

#define LOG_LINES_MAX                                                          \
	10000 /* per stream and message; the rest is                           \
	       * counted, so a flood cannot drown the log */

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

/* What the child could not do, on its report pipe (none: it exec'd). */
struct spawn_failure {
	int step; /* 0 execve, -1 workdir, -2 limits, else identity_enter's */
	int err;  /* errno */
};
#define STEP_WORKDIR -1
#define STEP_LIMITS -2

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* The soft RLIMIT_NOFILE handlers start with; 0: leave it. */
static rlim_t nofile_soft;

void handler_set_nofile(unsigned long soft)
{
	nofile_soft = (rlim_t)soft;
}

/* Who this worker's handlers run as: its queue's (one per worker). */
static const struct identity *kill_as;

void handler_kill(pid_t group, int sig)
{
	static const struct identity none;

	identity_kill(kill_as != NULL ? kill_as : &none, -group, sig);
}

/* Signals the worker ignores (SIGPIPE, and any it was born ignoring). */
static int ignored[NSIG];
static int nignored = -1;

static void scan_ignored(void)
{
	struct sigaction sa;

	nignored = 0;
	for (int sig = 1; sig < NSIG; sig++)
		if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
			ignored[nignored++] = sig;
}

/* queue.limits as rlimits; in the child, before its identity changes. */
static int set_limits(const struct queue_conf *q)
{
	const struct limits_conf *l = &q->limits;
	struct rlimit rl;

	if (l->memory > 0) {
		rl.rlim_cur = rl.rlim_max = (rlim_t)l->memory << 20;
		if (setrlimit(RLIMIT_AS, &rl) == -1)
			return -1;
	}
	/* persistent: per message, by the worker (RLIMIT_CPU counts a life) */
	if (l->cpu > 0 && q->mode == MODE_EXEC) {
		/* SIGXCPU at cpu; SIGKILL for one that catches it */
		rl.rlim_cur = (rlim_t)l->cpu;
		rl.rlim_max =
		    rl.rlim_cur + (q->kill_grace > 0 ? q->kill_grace : 1);
		if (setrlimit(RLIMIT_CPU, &rl) == -1)
			return -1;
	}
	if (l->processes > 0) {
		rl.rlim_cur = rl.rlim_max = (rlim_t)l->processes;
		if (setrlimit(RLIMIT_NPROC, &rl) == -1)
			return -1;
	}
	if (l->files > 0) {
		rl.rlim_cur = rl.rlim_max = (rlim_t)l->files;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			return -1;
	}
	return 0;
}

static void __attribute__((noreturn)) child_fail(int report, int step)
{
	struct spawn_failure f = {step, errno};

	(void)!write(report, &f, sizeof(f));
	_exit(127);
}

/*
 * In the vfork child, until exec: it shares the worker's memory, so only
 * raw system calls, no allocation and no stdio. Signals the worker ignores
 * go back to default (an ignored signal survives exec), the mask is
 * emptied (so is a blocked one), fds above 2 close at exec.
 */
static void __attribute__((noreturn))
child(const struct queue_conf *q, char **env, pid_t parent, int in, int out,
      int err, int report)
{
	sigset_t all;
	int step;

	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	for (int i = 0; i < nignored; i++)
		signal(ignored[i], SIG_DFL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	if (nofile_soft != 0 && q->limits.files == 0) {
		/* what warrend was given, not what it raised for itself:
		 * select() in a handler breaks above 1024 */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
			rl.rlim_cur = nofile_soft;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	if (set_limits(q) == -1)
		child_fail(report, STEP_LIMITS);
	if ((step = identity_enter(&q->id)) != 0)
		child_fail(report, step);
	/* a change of uid cleared it */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	if (dup2(in, 0) == -1 || dup2(out, 1) == -1 || dup2(err, 2) == -1)
		child_fail(report, 0);
	/* everything above 2, including fds of libraries, goes at exec */
	if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) ==
	    -1) {
		for (int fd = 3; fd < 1024; fd++)
			if (fd != report)
				close(fd);
	}
	if (chdir(q->workdir) == -1)
		child_fail(report, STEP_WORKDIR);
	execve(q->command[0], q->command, env);
	child_fail(report, 0);
}

static void feed(struct handler *h);

/*
 * vfork, not fork: copying the worker's address space for every message
 * cost more CPU than the handler /bin/cat itself. We resume once the child
 * has exec'd or exited, its process group set up either way. Kept apart
 * so that no caller's variable lives across the vfork.
 */
static pid_t spawn(const struct queue_conf *q, char **env, pid_t parent, int in,
		   int out, int err, int report)
{
	pid_t pid = vfork();

	if (pid == 0)
		child(q, env, parent, in, out, err, report);
	return pid;
}

void stream_init(struct stream *s, int fd, const char *name, bool keep_tail)
{
	s->fd = fd;
	s->name = name;
	s->len = 0;
	s->split = false;
	s->logged = s->dropped = 0;
	s->keep_tail = keep_tail;
	s->tail_len = 0;
	s->tail[0] = '\0';
}

/* A script's "#!" interpreter must exist too, or execve fails. */
static int check_interpreter(const char *name, const char *path, char *err,
			     size_t errlen)
{
	char head[256], *p, *end;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd == -1)
		return 0; /* execute-only: execve will tell */
	n = read(fd, head, sizeof(head) - 1);
	close(fd);
	if (n < 2 || head[0] != '#' || head[1] != '!')
		return 0;
	head[n] = '\0';
	for (p = head + 2; *p == ' ' || *p == '\t'; p++)
		;
	end = p + strcspn(p, " \t\r\n");
	if (*end == '\0' && n == sizeof(head) - 1)
		return 0; /* longer than we read: let execve judge */
	*end = '\0';
	if (*p != '/' || access(p, X_OK) == 0)
		return 0;
	snprintf(err, errlen, "cannot run %s: interpreter %s: %s", name, p,
		 strerror(errno));
	return -1;
}

int handler_check(const struct queue_conf *q, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct stat st;

	errno = 0;
	if (stat(q->workdir, &st) == -1 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "workdir %s: %s", q->workdir,
			 errno ? strerror(errno) : "not a directory");
		return -1;
	}
	if (q->command[0][0] == '/')
		snprintf(path, sizeof(path), "%s", q->command[0]);
	else
		snprintf(path, sizeof(path), "%s/%s", q->workdir,
			 q->command[0]);
	errno = 0;
	if (stat(path, &st) == -1 || !S_ISREG(st.st_mode) ||
	    access(path, X_OK) == -1) {
		snprintf(err, errlen, "cannot run %s: %s", q->command[0],
			 errno ? strerror(errno) : "not a regular file");
		return -1;
	}
	return check_interpreter(q->command[0], path, err, errlen);
}

/* Why the child could not be run, in words. */
static void spawn_words(const struct queue_conf *q,
			const struct spawn_failure *f, char *buf, size_t len)
{
	if (f->step == STEP_WORKDIR)
		snprintf(buf, len, "workdir %s: %s", q->workdir,
			 strerror(f->err));
	else if (f->step == STEP_LIMITS)
		snprintf(buf, len, "cannot run %s: setting limits: %s",
			 q->command[0], strerror(f->err));
	else if (f->step != 0)
		snprintf(buf, len, "cannot run %s as user %s: %s: %s",
			 q->command[0], q->user ? q->user : "(own)",
			 identity_step(f->step), strerror(f->err));
	else
		snprintf(buf, len, "cannot run %s: %s", q->command[0],
			 strerror(f->err));
}

int handler_spawn(const struct queue_conf *q, char **env, struct spawned *sp,
		  char *errbuf, size_t errlen)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
	int rep[2] = {-1, -1};
	pid_t parent = getpid();
	struct spawn_failure f;
	ssize_t n;

	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) ||
	    pipe2(err, O_CLOEXEC) || pipe2(rep, O_CLOEXEC)) {
		snprintf(errbuf, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	if (nignored < 0)
		scan_ignored();
	kill_as = &q->id;
	sp->pid = spawn(q, env, parent, in[0], out[1], err[1], rep[1]);
	if (sp->pid == -1) {
		snprintf(errbuf, errlen, "vfork: %s", strerror(errno));
		goto fail;
	}
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&err[1]);
	close_fd(&rep[1]);
	/* EOF: exec succeeded; else what failed */
	do
		n = read(rep[0], &f, sizeof(f));
	while (n == -1 && errno == EINTR);
	close_fd(&rep[0]);
	if (n == sizeof(f)) {
		waitpid(sp->pid, NULL, 0);
		spawn_words(q, &f, errbuf, errlen);
		goto fail;
	}
	sp->in = in[1];
	sp->out = out[0];
	sp->err = err[0];
	set_nonblock(sp->in);
	set_nonblock(sp->out);
	set_nonblock(sp->err);
	return 0;
fail:
	close_fd(&in[0]);
	close_fd(&in[1]);
	close_fd(&out[0]);
	close_fd(&out[1]);
	close_fd(&err[0]);
	close_fd(&err[1]);
	close_fd(&rep[0]);
	close_fd(&rep[1]);
	return -1;
}

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

/* One line of output into the log, control bytes escaped. */
static void emit_line(struct stream *s, const struct log_fields *base)
{
	char esc[HANDLER_LINE_MAX * 4 + 1];
	struct log_fields lf = *base;
	size_t o = 0;

	if (s->logged >= LOG_LINES_MAX) {
		s->dropped++;
		s->len = 0;
		return;
	}
	s->logged++;
	for (size_t i = 0; i < s->len; i++) {
		unsigned char c = (unsigned char)s->line[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			snprintf(esc + o, 5, "\\x%02x", c);
			o += 4;
		} else {
			esc[o++] = (char)c;
		}
	}
	esc[o] = '\0';
	lf.stream = s->name;
	log_fields(LOG_INFO, &lf, "%s: %s: %s",
		   base->message_id ? base->message_id : "-", s->name, esc);
	s->len = 0;
}

static void keep_tail(struct stream *s, const char *buf, size_t n)
{
	if (n >= HANDLER_TAIL_MAX) {
		memcpy(s->tail, buf + n - HANDLER_TAIL_MAX, HANDLER_TAIL_MAX);
		s->tail_len = HANDLER_TAIL_MAX;
	} else {
		size_t keep = s->tail_len + n > HANDLER_TAIL_MAX
				  ? HANDLER_TAIL_MAX - n
				  : s->tail_len;

		memmove(s->tail, s->tail + s->tail_len - keep, keep);
		memcpy(s->tail + keep, buf, n);
		s->tail_len = keep + n;
	}
	s->tail[s->tail_len] = '\0';
}

bool stream_drain(struct stream *s, const struct log_fields *lf)
{
	char buf[65536];

	for (int rounds = 0; rounds < 16; rounds++) {
		ssize_t n = read(s->fd, buf, sizeof(buf));

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return true;
		if (n <= 0) {
			if (s->len > 0)
				emit_line(s, lf);
			close_fd(&s->fd);
			return false;
		}
		if (s->capture != NULL) {
			result_append(s->capture, buf, (size_t)n);
			continue;
		}
		if (s->keep_tail)
			keep_tail(s, buf, (size_t)n);
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				/* a line of exactly N pieces ends here */
				if (s->len > 0 || !s->split)
					emit_line(s, lf);
				s->split = false;
				continue;
			}
			s->line[s->len++] = buf[i];
			s->split = false;
			if (s->len == HANDLER_LINE_MAX) {
				emit_line(s, lf);
				s->split = true;
			}
		}
		/* a short read emptied the pipe: poll tells when more comes
		 * (not a read that would find nothing) */
		if ((size_t)n < sizeof(buf))
			return true;
	}
	return true; /* more may wait: poll comes back for it */
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

void stream_flush(struct stream *s, const struct log_fields *base)
{
	struct log_fields lf = *base;

	if (s->len > 0)
		emit_line(s, base);
	if (s->dropped > 0) {
		lf.stream = s->name;
		log_fields(LOG_WARNING, &lf,
			   "%s: %s: %lu more lines not logged",
			   base->message_id ? base->message_id : "-", s->name,
			   s->dropped);
	}
	s->logged = s->dropped = 0;
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
