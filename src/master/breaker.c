/*
 * breaker.c: a pool's circuit breaker as a pure state machine. Closed, it
 * counts failed attempts in a row; an exit 75 (or that many failures)
 * opens it for a cooldown; then it is half-open until one probe message
 * decides: success closes it, failure opens it again with the cooldown
 * doubled, up to ten times the configured one.
 */
#include "config.h"

#include <sys/wait.h>

#include "master/master.h"

#define COOLDOWN_GROWTH_MAX 10

static enum breaker_move open_for(struct breaker *b, int cooldown_ms,
				  int64_t now)
{
	b->state = BREAKER_OPEN;
	b->cooldown_ms = cooldown_ms;
	b->until = now + cooldown_ms;
	b->streak = 0;
	b->probing = false;
	b->probe_worker = 0;
	b->openings++;
	return BREAKER_OPENED;
}

/* Opened again after a failed probe: twice the last cooldown, capped. */
static enum breaker_move reopen(struct breaker *b, const struct breaker_conf *c,
				int64_t now)
{
	int64_t next = (int64_t)b->cooldown_ms * 2;
	int64_t cap = (int64_t)c->cooldown * 1000 * COOLDOWN_GROWTH_MAX;

	if (next > cap)
		next = cap;
	return open_for(b, (int)next, now);
}

enum breaker_move breaker_event(struct breaker *b, const struct breaker_conf *c,
				enum breaker_event ev, int64_t now)
{
	if (!c->on || ev == BREAKER_EV_NONE)
		return BREAKER_STAY;
	switch (b->state) {
	case BREAKER_CLOSED:
		if (ev == BREAKER_EV_SUCCESS) {
			b->streak = 0;
			return BREAKER_STAY;
		}
		if (ev == BREAKER_EV_TEMPFAIL)
			return open_for(b, c->cooldown * 1000, now);
		b->streak++;
		if (c->failures > 0 && b->streak >= c->failures)
			return open_for(b, c->cooldown * 1000, now);
		return BREAKER_STAY;
	case BREAKER_OPEN:
		/* messages that were running when it opened: no news */
		return BREAKER_STAY;
	case BREAKER_HALF_OPEN:
		if (ev == BREAKER_EV_SUCCESS) {
			b->state = BREAKER_CLOSED;
			b->streak = 0;
			b->probing = false;
			b->probe_worker = 0;
			b->cooldown_ms = 0;
			return BREAKER_CLOSED_NOW;
		}
		return reopen(b, c, now);
	}
	return BREAKER_STAY;
}

enum breaker_move breaker_tick(struct breaker *b, int64_t now)
{
	if (b->state == BREAKER_OPEN && now >= b->until) {
		b->state = BREAKER_HALF_OPEN;
		b->probing = false;
	}
	if (b->state == BREAKER_HALF_OPEN && !b->probing)
		return BREAKER_PROBE;
	return BREAKER_STAY;
}

void breaker_probe_lost(struct breaker *b)
{
	if (b->state == BREAKER_HALF_OPEN) {
		b->probing = false;
		b->probe_worker = 0;
	}
}

bool breaker_holds(const struct breaker *b)
{
	return b->state != BREAKER_CLOSED;
}

int64_t breaker_next(const struct breaker *b, int64_t now)
{
	if (b->state == BREAKER_OPEN)
		return b->until > now ? b->until - now : 0;
	/* half-open: the probe's worker is found at a report, not a timer */
	return -1;
}

const char *breaker_state_name(enum breaker_state s)
{
	switch (s) {
	case BREAKER_CLOSED:
		return "closed";
	case BREAKER_OPEN:
		return "open";
	case BREAKER_HALF_OPEN:
		return "half-open";
	}
	return "?";
}
