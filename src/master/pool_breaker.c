/*
 * pool_breaker.c: the master's side of queue.breaker. Feeds each pool's
 * outcomes to its breaker (breaker.c), pauses and resumes the pool's
 * workers as it opens and closes (the commands warrenctl pause uses), and
 * sends the one probe of a half-open breaker to an idle worker.
 */
#include "config.h"

#include <stdio.h>
#include <syslog.h>

#include "pool.h"

bool pool_held(const struct pool *p)
{
	return p->paused || breaker_holds(&p->breaker);
}

/* Every worker of p stops, or starts again, consuming. */
static void tell_all(struct pool *p, char cmd)
{
	for (int i = 0; i < p->nslots; i++)
		slot_command(p->slots[i], cmd);
}

static enum breaker_event event_of(char report)
{
	switch (report) {
	case REPORT_ACK:
		return BREAKER_EV_SUCCESS;
	case REPORT_RETRY:
	case REPORT_FAILED:
		return BREAKER_EV_FAILURE;
	case REPORT_TEMPFAIL:
		return BREAKER_EV_TEMPFAIL;
	default:
		return BREAKER_EV_NONE;
	}
}

void breaker_report(struct slot *s, char report)
{
	struct pool *p = s->pool;
	struct breaker *b = &p->breaker;
	const struct breaker_conf *c = &p->q->breaker;
	bool probe = b->probing && b->probe_worker == s->number;

	if (!c->on)
		return;
	if (probe && event_of(report) == BREAKER_EV_NONE) {
		breaker_probe_lost(b); /* it never ran: another probe */
		return;
	}
	switch (breaker_event(b, c, event_of(report), now_ms())) {
	case BREAKER_OPENED:
		log_warnx("queue %s: circuit breaker open (%s by worker %d): "
			  "not consuming for %d s, then one probe message",
			  p->q->name,
			  report == REPORT_TEMPFAIL ? "a temporary failure"
			  : probe		    ? "the probe failed"
				  : "failed attempts in a row",
			  s->number, b->cooldown_ms / 1000);
		if (!p->paused)
			tell_all(p, COMMAND_PAUSE);
		break;
	case BREAKER_CLOSED_NOW:
		log_info("queue %s: circuit breaker closed: the probe "
			 "succeeded, consuming again",
			 p->q->name);
		if (!p->paused)
			tell_all(p, COMMAND_RESUME);
		break;
	default:
		break;
	}
}

/* An idle worker of p that may take the probe, or NULL. */
static struct slot *probe_slot(struct pool *p)
{
	for (int i = 0; i < p->nslots; i++) {
		struct slot *s = p->slots[i];

		if (s->pid > 0 && !s->retiring && s->state == REPORT_PAUSED)
			return s;
	}
	return NULL;
}

/* The probe's worker is gone without an outcome: another probe. */
static void check_probe(struct pool *p)
{
	struct breaker *b = &p->breaker;

	if (!b->probing)
		return;
	for (int i = 0; i < p->nslots; i++)
		if (p->slots[i]->number == b->probe_worker &&
		    p->slots[i]->pid > 0 && !p->slots[i]->retiring)
			return;
	breaker_probe_lost(b);
}

static void tick_one(struct pool *p, int64_t now)
{
	struct breaker *b = &p->breaker;
	struct slot *s;

	if (!p->q->breaker.on) {
		/* a reload took the breaker away: nothing holds the pool */
		if (breaker_holds(b)) {
			*b = (struct breaker){0};
			if (!p->paused)
				tell_all(p, COMMAND_RESUME);
		}
		return;
	}
	check_probe(p);
	if (breaker_tick(b, now) != BREAKER_PROBE || p->paused)
		return;
	if ((s = probe_slot(p)) == NULL)
		return; /* asked again at the next turn */
	b->probing = true;
	b->probe_worker = s->number;
	log_debug("queue %s: circuit breaker half-open: worker %d takes one "
		  "message",
		  p->q->name, s->number);
	slot_command(s, COMMAND_PROBE);
}

void breakers_tick(void)
{
	int64_t now = now_ms();

	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		if (!p->removed)
			tick_one(p, now);
}

int64_t breakers_next_timer(void)
{
	int64_t next = 0, now = now_ms(), t;

	for (struct pool *p = pool_first(); p != NULL; p = p->next) {
		if (p->removed || (t = breaker_next(&p->breaker, now)) < 0)
			continue;
		if (next == 0 || now + t < next)
			next = now + t;
	}
	return next;
}
