/*
 * meter.c: what each message costs a persistent handler (CPU time, peak
 * resident memory), read from /proc/PID between messages. One stat
 * reading a message in the usual case: the peak is read (status) and
 * reset (clear_refs) only after the process took a page fault, the one
 * way its memory grows.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <syslog.h>

#include "handler/handler_int.h"

/* A /proc reading failed: said once per worker, at info (a handler of
 * another user under ProtectProc=invisible is hidden from us). */
static void unknown(bool *told, const char *what, pid_t pid)
{
	(*told ? log_debug : log_info)(
	    "cannot read /proc/%ld of the handler (%s): its %s per message is "
	    "left out of the log, metrics and parked headers",
	    (long)pid, strerror(errno), what);
	*told = true;
}

/* The peak is measured from here: reset to the resident set of s. */
static void reset_peak(struct meter *m, struct meter_mark *k,
		       const struct proc_sample *s)
{
	k->peak = s->rss_kb >= 0 && cost_peak_reset(k->pid) == 0;
	if (!k->peak && s->rss_kb >= 0)
		unknown(&m->told_rss, "peak memory", k->pid);
	k->base_kb = s->rss_kb;
}

void meter_begin(struct meter *m, pid_t pid)
{
	struct proc_sample s;

	if (m->next.pid == pid) {
		/* it has waited for this frame since, at no cost */
		m->cur = m->next;
		m->next.pid = 0;
		return;
	}
	m->next.pid = 0;
	m->cur.pid = pid;
	m->cur.peak = false;
	if (cost_proc_sample(pid, &s) != 0) {
		m->cur.ticks = -1;
		unknown(&m->told_cpu, "CPU time", pid);
		return;
	}
	m->cur.ticks = s.ticks;
	m->cur.faults = s.faults;
	reset_peak(m, &m->cur, &s);
}

/*
 * The peak of the message now ending, of the running process whose
 * reading is s: with no fault since its start, the resident set then
 * (which the reset made the peak); else VmHWM, and the peak is reset for
 * the next message. Also when the set shrank: the next peak starts lower.
 */
static void end_peak(struct meter *m, const struct proc_sample *s,
		     struct handler_result *r)
{
	struct meter_mark *k = &m->next;
	long kb = m->cur.base_kb;

	k->peak = m->cur.peak;
	k->base_kb = m->cur.base_kb;
	if (!m->cur.peak)
		return;
	if (s->faults != m->cur.faults &&
	    (kb = cost_proc_peak_kb(k->pid)) < 0) {
		k->peak = false;
		return;
	}
	r->max_rss_kb = kb;
	r->has_rss = true;
	if (s->faults != m->cur.faults || s->rss_kb < m->cur.base_kb)
		reset_peak(m, k, s);
}

void meter_end(struct meter *m, pid_t running, pid_t gone,
	       const struct rusage *gone_ru, struct handler_result *r)
{
	struct proc_sample s;

	r->has_cpu = r->has_rss = false;
	if (m->cur.pid == 0 || m->cur.ticks < 0) {
		m->cur.pid = 0;
		return;
	}
	if (m->cur.pid == running) {
		if (cost_proc_sample(running, &s) == 0) {
			r->cpu_ms = cost_ticks_ms(s.ticks - m->cur.ticks);
			r->has_cpu = s.ticks >= m->cur.ticks;
			/* the next message starts from here */
			m->next.pid = running;
			m->next.ticks = s.ticks;
			m->next.faults = s.faults;
			end_peak(m, &s, r);
		}
	} else if (m->cur.pid == gone) {
		long ms = cost_rusage_ms(gone_ru) - cost_ticks_ms(m->cur.ticks);

		r->cpu_ms = ms > 0 ? ms : 0;
		r->has_cpu = true;
	}
	m->cur.pid = 0;
}
