/*
 * persistent.c: a queue's handler kept alive across messages (mode =
 * "persistent"): started once per worker, fed one frame per message on
 * its stdin, read one status line per frame from its stdout, restarted
 * when it dies or misbehaves, and renewed between messages once
 * max_messages, max_rss or max_age says so.
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
#include <syslog.h>
#include <unistd.h>

#include "handler/handler_int.h"

#define CLOSE_STEP_MS 100 /* persistent_close looks this often */
#define STDERR_LAG_MS                                                          \
	2 /* a message's stderr is read at its answer,                         \
	   * or after this long */

struct persistent {
	const struct queue_conf *q;
	char **env; /* its own: PATH, queue.environment, queue, worker */
	pid_t pid;  /* 0: not running */
	int in_fd, out_fd;
	bool in_shut; /* its stdin is closed at its end (EPIPE) */
	struct stream err;
	struct answer_in in; /* its stdout, split */
	struct result res;   /* the message's result, from a "result" line */
	bool res_given;	     /* a "result" line came for the message in hand */
	/* the message in hand */
	bool busy;     /* a frame is given, no result yet */
	bool answered; /* its answer is in r */
	bool done;     /* r is its result, not yet taken */
	bool cost_due; /* answered: its cost is read by persistent_cost() */
	bool err_due;  /* answered: its stderr is read by persistent_stderr() */
	struct handler_result r;
	struct frame_out out; /* its frame, as far as written */
	int64_t handed_at;    /* when the frame was handed over, or 0 */
	int64_t deadline;     /* timeout, or 0 */
	int64_t ct_deadline;
	int ct_grace_ms, ct_seconds;
	bool timed_out, ct_timed_out;
	int64_t cpu_at;	   /* its CPU clock (ms) when it got the message */
	int64_t cpu_check; /* next look at it, or 0 */
	bool cpu_limited;  /* limits.cpu stopped it */
	/* the process */
	int64_t kill_at;    /* SIGKILL due, or 0 */
	bool stopping;	    /* asked to go: its end is no news */
	int handled;	    /* messages answered since it started */
	int failures;	    /* ends not asked for, no answer in between */
	int64_t restart_at; /* 0: none due */
	bool closed;	    /* persistent_close(): never again */
	bool reap;	    /* a SIGCHLD came: see whether it ended */
	char broken[512];   /* why a restart could not run it, or "" */
	bool told_exit, told_backoff, told_chatter, told_garbage;
	struct meter meter; /* what the message in hand costs */
	pid_t gone_pid;	    /* the last process reaped, and its rusage */
	struct rusage gone_ru;
	/* renewal between messages (renew.c) */
	struct renew renew; /* this worker's spread limits */
	int64_t born;	    /* when the running process started */
	bool told_renew_rss;
};

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* ------------------------------------------------------------------ */
/* the process */

struct persistent *persistent_new(const struct queue_conf *q, int worker)
{
	struct persistent *p = xcalloc(1, sizeof(*p));

	p->q = q;
	p->env = handler_env_base(q, worker);
	renew_init(&p->renew, q, worker);
	p->in_fd = p->out_fd = -1;
	stream_init(&p->err, -1, "stderr", true);
	return p;
}

int persistent_start(struct persistent *p, char *err, size_t errlen)
{
	struct spawned sp;

	if (p->pid != 0)
		return 0;
	p->restart_at = 0;
	if (handler_spawn(p->q, p->env, &sp, err, errlen) != 0)
		return -1;
	p->pid = sp.pid;
	p->in_fd = sp.in;
	p->out_fd = sp.out;
	p->in_shut = false;
	stream_init(&p->err, sp.err, "stderr", true);
	memset(&p->in, 0, sizeof(p->in));
	p->handled = 0;
	p->stopping = false;
	p->kill_at = 0;
	p->meter.next.pid = 0;
	p->born = now_ms();
	log_debug("handler started (pid %ld)", (long)p->pid);
	return 0;
}

void persistent_sigchld(struct persistent *p)
{
	p->reap = true;
}

pid_t persistent_pid(const struct persistent *p)
{
	return p->pid;
}

/* Tell the group to go: SIGTERM now, SIGKILL grace_ms later. */
static void signal_group(struct persistent *p, int grace_ms)
{
	if (p->pid == 0 || p->kill_at != 0)
		return;
	handler_kill(p->pid, SIGTERM);
	handler_kill(p->pid, SIGCONT);
	p->kill_at = now_ms() + grace_ms;
}

/* Ask it to go: its end, when it comes, is no news. */
static void stop_group(struct persistent *p, int grace_ms)
{
	p->stopping = true;
	signal_group(p, grace_ms);
}

/* Between messages, by plan: EOF on its stdin, SIGKILL after kill_grace. */
static void retire(struct persistent *p)
{
	p->stopping = true;
	close_fd(&p->in_fd);
	if (p->kill_at == 0)
		p->kill_at = now_ms() + (int64_t)p->q->kill_grace * 1000;
}

/* It misbehaved: stop it, and count that against its restarts. */
static void misbehaved(struct persistent *p)
{
	if (!p->stopping)
		p->failures++;
	stop_group(p, p->q->kill_grace * 1000);
}

/* r's cost, from the meter. */
static void cost_end(struct persistent *p)
{
	meter_end(&p->meter, p->pid, p->gone_pid, &p->gone_ru, &p->r);
}

void persistent_cost(struct persistent *p, struct handler_result *r)
{
	if (!p->cost_due)
		return;
	p->cost_due = false;
	cost_end(p);
	if (r == NULL)
		return;
	r->has_cpu = p->r.has_cpu;
	r->cpu_ms = p->r.cpu_ms;
	r->has_rss = p->r.has_rss;
	r->max_rss_kb = p->r.max_rss_kb;
}

/* The message in hand has its result in r (and its cost, unless due). */
static void finish_message(struct persistent *p)
{
	if (!p->cost_due)
		cost_end(p);
	p->busy = false;
	p->done = true;
	frame_out_clear(&p->out);
	p->deadline = p->ct_deadline = p->cpu_check = 0;
}

/*
 * Between messages: a handler past its max_messages, max_rss or max_age
 * gets EOF and is started anew, once per renewal said at info. A planned
 * end: no failure, no backoff, and the next message waits for the new
 * process.
 */
static void maybe_renew(struct persistent *p)
{
	int64_t age = now_ms() - p->born;
	long rss = -1;
	enum renew_reason why;
	char words[160];

	if (p->pid == 0 || p->stopping || p->busy)
		return;
	if (p->renew.max_rss_kb > 0 && (rss = renew_rss_kb(p->pid)) < 0) {
		(p->told_renew_rss ? log_debug : log_info)(
		    "cannot read /proc/%ld/statm of the handler (%s): max_rss "
		    "is not checked",
		    (long)p->pid, strerror(errno));
		p->told_renew_rss = true;
	}
	why = renew_due(&p->renew, p->handled, age, rss);
	if (why == RENEW_NONE)
		return;
	renew_words(&p->renew, why, p->handled, age, rss, words, sizeof(words));
	persistent_cost(p, NULL); /* while the process is there to read */
	log_info("renewing the handler (pid %ld): %s", (long)p->pid, words);
	retire(p);
}

/* The answer and the whole frame are both through: the message is done. */
static void maybe_answered(struct persistent *p)
{
	if (!p->busy || !p->answered || p->out.off < frame_out_len(&p->out))
		return;
	/* its cost and the rest of its stderr are read once the ack is
	 * out: not between the answer and the ack, where the next message
	 * waits for it */
	p->cost_due = p->err_due = true;
	finish_message(p);
	p->handled++;
	p->failures = 0;
	maybe_renew(p);
}

/* Write what the pipe takes of the frame. */
static void write_frame(struct persistent *p)
{
	if (p->busy && p->in_fd >= 0 && !p->in_shut &&
	    frame_out_write(p->in_fd, &p->out) < 0) {
		/* EPIPE: it closed its stdin (or is ending) and can take no
		 * more; its end tells the story. The fd stays for untaken()
		 * to look into. */
		p->in_shut = true;
		signal_group(p, p->q->kill_grace * 1000);
		return;
	}
	maybe_answered(p);
}

/* A frame has reached the handler: its time starts. */
/* limits.cpu counts per message: from here, on its CPU clock. */
#define CPU_STEP_MS 100

static void hand_over(struct persistent *p)
{
	if (p->q->limits.cpu > 0) {
		p->cpu_at = handler_cpu_ms(p->pid);
		p->cpu_check = now_ms() + CPU_STEP_MS;
	}
	if (p->meter.cur.pid != p->pid)
		meter_begin(&p->meter, p->pid);
	if (p->deadline == 0 && p->q->timeout > 0)
		p->deadline = now_ms() + (int64_t)p->q->timeout * 1000;
	p->handed_at = now_ms();
	write_frame(p);
}

void persistent_stderr(struct persistent *p, const struct log_fields *lf)
{
	if (!p->err_due)
		return;
	p->err_due = false;
	if (p->err.fd >= 0)
		stream_drain(&p->err, lf);
	stream_flush(&p->err, lf);
}

int persistent_send(struct persistent *p, char **env, const void *body,
		    size_t len, char *err, size_t errlen)
{
	persistent_stderr(p, NULL);
	persistent_cost(p, NULL); /* a message's cost nobody asked for */
	frame_out_set(&p->out, env, body, len);
	p->busy = true;
	p->answered = p->done = false;
	p->timed_out = p->ct_timed_out = p->cpu_limited = false;
	p->deadline = p->ct_deadline = p->cpu_check = 0;
	p->meter.cur.pid = 0;
	memset(&p->r, 0, sizeof(p->r));
	result_clear(&p->res);
	p->res_given = false;
	p->err.tail_len = 0;
	p->err.tail[0] = '\0';
	if (p->broken[0] == '\0' && p->pid == 0 && p->restart_at == 0 &&
	    !p->closed)
		persistent_start(p, p->broken, sizeof(p->broken));
	if (p->broken[0] != '\0') {
		snprintf(err, errlen, "%s", p->broken);
		p->busy = false;
		return -1;
	}
	if (p->pid != 0 && !p->stopping)
		hand_over(p);
	return 0;
}

void persistent_limit(struct persistent *p, int64_t at, int grace_ms,
		      int seconds)
{
	p->ct_deadline = at;
	p->ct_grace_ms = grace_ms;
	p->ct_seconds = seconds;
}

/*
 * One line from its stdout (NULL: one too long to be an answer). A bad
 * answer fails the attempt; any line when none is due is out of step.
 * Either way the handler is restarted.
 */
static void on_line(struct persistent *p, const char *line, size_t len)
{
	if (p->stopping)
		return; /* on its way out: nothing it says counts */
	if (!p->busy || p->answered) {
		(p->told_chatter ? log_debug : log_warnx)(
		    "handler wrote to stdout when no answer was due: "
		    "restarting it (stdout carries answers only)");
		p->told_chatter = true;
		misbehaved(p);
		return;
	}
	if (line != NULL && !p->res_given &&
	    result_head_parse(line, len, &p->in.result_left)) {
		/* the result's bytes follow, then the answer line */
		p->res_given = true;
		result_clear(&p->res);
		result_append(&p->res, "", 0);
		return;
	}
	if (line == NULL || !answer_parse(line, len, &p->r)) {
		answer_bad(&p->r);
		(p->told_garbage ? log_debug : log_warnx)(
		    "handler's answer is not \"ok\", \"retry\", \"fail\" "
		    "or \"tempfail\": "
		    "the attempt fails, the handler is restarted");
		p->told_garbage = true;
		finish_message(p);
		misbehaved(p);
		return;
	}
	p->answered = true;
	maybe_answered(p);
}

/* Read its stdout; lines are answers. */
static void read_answers(struct persistent *p)
{
	char buf[4096];
	const char *data;
	size_t len;

	for (int rounds = 0; p->out_fd >= 0 && rounds < 16; rounds++) {
		ssize_t n = read(p->out_fd, buf, sizeof(buf));

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return;
		if (n <= 0) {
			/* it cannot answer any more (or is ending): its
			 * end tells the story */
			close_fd(&p->out_fd);
			signal_group(p, p->q->kill_grace * 1000);
			p->reap = true;
			return;
		}
		for (size_t off = 0;;) {
			enum answer_event e = answer_in_next(
			    &p->in, buf, (size_t)n, &off, &data, &len);

			if (e == ANSWER_IN_NONE)
				break;
			if (e == ANSWER_IN_RESULT)
				result_append(&p->res, data, len);
			else
				on_line(p, e == ANSWER_IN_LINE ? data : NULL,
					e == ANSWER_IN_LINE ? len : 0);
		}
		if ((size_t)n < sizeof(buf))
			return; /* all there was; poll says when more comes */
	}
}

static void schedule_restart(struct persistent *p, const char *how)
{
	int delay = renew_restart_delay(p->failures);

	if (p->closed)
		return;
	p->restart_at = now_ms() + delay;
	if (delay == 0)
		return;
	/* said once per worker; each restart after at debug */
	(p->told_backoff ? log_debug : log_warnx)(
	    "handler keeps ending (%s): restarting it in %d ms, backing off "
	    "up to %d s",
	    how, delay, RENEW_RESTART_MAX_MS / 1000);
	p->told_backoff = true;
}

/* The message in hand ran out of time (timeout or consumer_timeout). */
static void finish_timed_out(struct persistent *p)
{
	memset(&p->r, 0, sizeof(p->r));
	p->r.started = p->r.timed_out = true;
	p->r.timeout = p->q->timeout;
	if (p->ct_timed_out) {
		p->r.consumer_timeout = true;
		p->r.timeout = p->ct_seconds;
	}
	p->r.cpu_limited = p->cpu_limited;
	p->r.cpu_limit = p->q->limits.cpu;
	finish_message(p);
}

/*
 * At its exit: true when it read not one byte of the frame in hand, which
 * still fills its stdin pipe (it ended between messages while the next
 * was being written). That frame goes to the next process, at no cost.
 */
static bool untaken(struct persistent *p)
{
	if (!p->busy || p->timed_out)
		return false;
	return frame_out_untaken(p->in_fd, &p->out);
}

/* It has exited with status: settle what it held, plan the next one. */
static void on_exit_of(struct persistent *p, int status,
		       const struct log_fields *lf)
{
	struct handler_result died = {0};
	char how[64];
	bool kept, held;

	if (p->out_fd >= 0)
		read_answers(p); /* an answer may precede its exit */
	if (p->err.fd >= 0)
		stream_drain(&p->err, lf);
	kept = untaken(p);
	held = p->busy && !kept;
	close_fd(&p->in_fd);
	close_fd(&p->out_fd);
	close_fd(&p->err.fd);
	p->pid = 0;
	p->kill_at = 0;
	cost_proc_release();
	result_died(&died, status);
	snprintf(how, sizeof(how), "%s", died.reason);
	if (kept) {
		p->out.off = 0;
		p->deadline = 0;
	} else if (held && p->timed_out) {
		finish_timed_out(p);
	} else if (held) {
		p->r = died;
		finish_message(p);
	}
	if (held) {
		log_debug("handler ended holding a message: %s", how);
	} else if (p->stopping) {
		log_debug("handler ended: %s", how);
	} else {
		(p->told_exit ? log_debug : log_warnx)(
		    "handler exited between messages (%s): restarting it", how);
		p->told_exit = true;
	}
	if (!p->stopping)
		p->failures++;
	p->stopping = false;
	schedule_restart(p, how);
}

/* Its deadlines: timeout and consumer_timeout stop it, grace kills it. */
static void run_timers(struct persistent *p)
{
	int64_t now = now_ms();

	if (p->busy && !p->timed_out && p->deadline != 0 &&
	    now >= p->deadline) {
		p->timed_out = true;
		misbehaved(p);
	}
	if (p->busy && !p->timed_out && p->ct_deadline != 0 &&
	    now >= p->ct_deadline) {
		p->timed_out = p->ct_timed_out = true;
		if (!p->stopping)
			p->failures++;
		stop_group(p, p->ct_grace_ms);
	}
	if (p->busy && !p->timed_out && p->cpu_check != 0 && p->pid != 0 &&
	    now >= p->cpu_check) {
		int64_t used = handler_cpu_ms(p->pid) - p->cpu_at;

		p->cpu_check = now + CPU_STEP_MS;
		if (p->cpu_at >= 0 && used >= p->q->limits.cpu * 1000LL) {
			p->timed_out = p->cpu_limited = true;
			misbehaved(p);
		}
	}
	if (p->busy && p->timed_out && p->pid == 0)
		finish_timed_out(p); /* it waited for a restart that was late */
	if (!p->busy && p->renew.max_age_ms > 0 && p->pid != 0 &&
	    !p->stopping && now - p->born >= p->renew.max_age_ms)
		maybe_renew(p); /* aged while idle */
	if (p->kill_at != 0 && now >= p->kill_at && p->pid != 0) {
		handler_kill(p->pid, SIGKILL);
		p->kill_at = 0;
	}
}

/*
 * A message's stderr is read when its answer comes, just before it, not
 * line by line as it is written: a handler that logs a line and then
 * answers wakes the worker once, not twice. A handler that writes for
 * longer than STDERR_LAG_MS before it answers is read as it writes (its
 * pipe never fills).
 */
static bool stderr_waits(const struct persistent *p)
{
	return p->busy && p->handed_at != 0 && p->pid != 0 &&
	       now_ms() < p->handed_at + STDERR_LAG_MS;
}

int persistent_pollfds(struct persistent *p, struct pollfd *pfd)
{
	int n = 0;

	if (p->in_fd >= 0 && !p->in_shut && p->busy &&
	    p->out.off < frame_out_len(&p->out) && !p->stopping) {
		pfd[n].fd = p->in_fd;
		pfd[n++].events = POLLOUT;
	}
	if (p->out_fd >= 0) {
		pfd[n].fd = p->out_fd;
		pfd[n++].events = POLLIN;
	}
	if (p->err.fd >= 0 && !stderr_waits(p)) {
		pfd[n].fd = p->err.fd;
		pfd[n++].events = POLLIN;
	}
	return n;
}

int persistent_serve(struct persistent *p, const struct pollfd *pfd, int n,
		     const struct log_fields *lf, char *err, size_t errlen)
{
	int status;

	for (int i = 0; i < n; i++) {
		if (pfd[i].revents == 0)
			continue;
		if (pfd[i].fd == p->in_fd) {
			write_frame(p);
		} else if (pfd[i].fd == p->out_fd) {
			read_answers(p);
		} else if (pfd[i].fd == p->err.fd)
			stream_drain(&p->err, lf);
	}
	run_timers(p);
	/* waitid only when it may have ended: not a call every message */
	if (p->pid != 0 && (p->reap || p->out_fd < 0 || p->err.fd < 0)) {
		p->reap = false;
		if (handler_reaped(p->pid, &status, &p->gone_ru)) {
			p->gone_pid = p->pid;
			on_exit_of(p, status, lf);
		}
	}
	if (p->pid == 0 && p->restart_at != 0 && now_ms() >= p->restart_at &&
	    persistent_start(p, p->broken, sizeof(p->broken)) != 0)
		p->restart_at = 0;
	if (p->broken[0] != '\0') {
		snprintf(err, errlen, "%s", p->broken);
		return -1;
	}
	if (p->busy && p->pid != 0 && !p->stopping && p->out.off == 0)
		hand_over(p); /* a frame that waited for a restart */
	return 0;
}

bool persistent_result(struct persistent *p, struct handler_result *r,
		       const struct log_fields *lf)
{
	if (!p->done)
		return false;
	p->done = false;
	*r = p->r;
	if (!p->err_due)
		stream_flush(&p->err, lf);
	return true;
}

void persistent_take_result(struct persistent *p, struct result *r)
{
	*r = p->res;
	memset(&p->res, 0, sizeof(p->res));
}

const char *persistent_stderr_tail(const struct persistent *p)
{
	return p->err.tail;
}

int persistent_next_timer(const struct persistent *p)
{
	int64_t next = 0, now = now_ms();

	if (p->busy && !p->timed_out && p->deadline != 0)
		next = p->deadline;
	if (p->busy && !p->timed_out && p->ct_deadline != 0 &&
	    (next == 0 || p->ct_deadline < next))
		next = p->ct_deadline;
	if (p->busy && !p->timed_out && p->cpu_check != 0 && p->pid != 0 &&
	    (next == 0 || p->cpu_check < next))
		next = p->cpu_check;
	if (p->kill_at != 0 && (next == 0 || p->kill_at < next))
		next = p->kill_at;
	if (stderr_waits(p) &&
	    (next == 0 || p->handed_at + STDERR_LAG_MS < next))
		next = p->handed_at + STDERR_LAG_MS;
	if (!p->busy && p->renew.max_age_ms > 0 && p->pid != 0 &&
	    !p->stopping && !p->closed &&
	    (next == 0 || p->born + p->renew.max_age_ms < next))
		next = p->born + p->renew.max_age_ms;
	if (p->pid == 0 && p->restart_at != 0 &&
	    (next == 0 || p->restart_at < next))
		next = p->restart_at;
	if (p->pid != 0 && p->stopping && p->kill_at == 0 &&
	    (next == 0 || now + CLOSE_STEP_MS < next))
		next = now + CLOSE_STEP_MS; /* SIGKILLed: look for its end */
	if (next == 0)
		return -1;
	if (next - now > INT_MAX)
		return INT_MAX;
	return next <= now ? 0 : (int)(next - now);
}

void persistent_stop(struct persistent *p, int grace)
{
	stop_group(p, grace * 1000);
}

void persistent_close(struct persistent *p, const struct log_fields *lf)
{
	p->closed = true;
	p->restart_at = 0;
	if (p->pid != 0)
		retire(p);
	while (p->pid != 0) {
		struct pollfd pfd[3];
		int n = persistent_pollfds(p, pfd), t;
		char err[8];

		t = persistent_next_timer(p);
		if (t < 0 || t > CLOSE_STEP_MS)
			t = CLOSE_STEP_MS;
		if (poll(pfd, (nfds_t)n, t) == -1 && errno != EINTR)
			break;
		persistent_serve(p, pfd, n, lf, err, sizeof(err));
	}
	stream_flush(&p->err, lf);
}

void persistent_free(struct persistent *p)
{
	if (p == NULL)
		return;
	if (p->pid != 0) {
		handler_kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
	}
	close_fd(&p->in_fd);
	close_fd(&p->out_fd);
	close_fd(&p->err.fd);
	cost_proc_release();
	frame_out_clear(&p->out);
	result_clear(&p->res);
	env_free(p->env);
	free(p);
}
