/*
 * spawn.c: starting a handler process. vfork, then in the child, before
 * execve: its own process group, default signals, queue.limits, the
 * handler's identity, fds 0-2 only and its workdir; what failed comes
 * back on a report pipe. Also the checks that the command can start.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handler/handler_int.h"

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
