/*
 * elastic.c: how many workers a pool wants now, and why, from its floor
 * and ceiling, its busy and idle workers and the ready count a worker
 * last saw (pure: unit-tested as it is). Grows while every worker is busy
 * and messages wait, at most doubling once a second; shrinks by idle
 * workers only, so no message in hand is ever given back. Master only.
 */
#include "config.h"

#include <stdio.h>

#include "pool.h"
#include "master/master.h"

#define GROW_EVERY_MS 1000

static int ceiling(const struct elastic_in *in)
{
	return in->max_workers > in->workers ? in->max_workers : in->workers;
}

/* Idle workers that may go: above the floor, idle long enough. */
static int may_go(const struct elastic_in *in, bool now)
{
	int n = 0;

	for (int i = 0; i < in->nidle; i++)
		if (now || in->now - in->idle_since[i] >= in->idle_timeout_ms)
			n++;
	return n < in->active - in->workers ? n : in->active - in->workers;
}

/* Every worker busy, messages waiting, room to grow. */
static bool backlog(const struct elastic_in *in)
{
	return !in->paused && in->ready > 0 && in->active > 0 &&
	       in->busy >= in->active;
}

static void grow(const struct elastic_in *in, struct elastic_out *out)
{
	int add = in->active; /* doubling */

	if (add > in->ready)
		add = (int)in->ready;
	out->target = in->active;
	if (in->now - in->grown_at >= GROW_EVERY_MS)
		out->target += add;
	if (out->target > ceiling(in))
		out->target = ceiling(in);
	snprintf(out->why, sizeof(out->why), "scaling up: %ld ready, all busy",
		 in->ready);
}

static void shrink(const struct elastic_in *in, struct elastic_out *out)
{
	int n = may_go(in, in->floor_now);

	out->target = in->active - (n > 0 ? n : 0);
	if (in->floor_now)
		snprintf(out->why, sizeof(out->why),
			 "scaling down to %d: idle workers go now, busy ones "
			 "once done",
			 in->workers);
	else if (n > 0)
		snprintf(out->why, sizeof(out->why),
			 "scaling down: %d idle for %d s", n,
			 in->idle_timeout_ms / 1000);
	else if (backlog(in))
		snprintf(out->why, sizeof(out->why),
			 "at max_workers: %ld ready, all busy", in->ready);
	else
		snprintf(out->why, sizeof(out->why),
			 "holding %d above the minimum: %d busy; idle ones go "
			 "after %d s",
			 in->active - in->workers, in->busy,
			 in->idle_timeout_ms / 1000);
}

/* At the floor, or at the ceiling with nowhere to grow. */
static void steady(const struct elastic_in *in, struct elastic_out *out)
{
	out->target = in->active;
	if (ceiling(in) == in->workers)
		snprintf(out->why, sizeof(out->why), "fixed at %d",
			 in->workers);
	else if (backlog(in))
		snprintf(out->why, sizeof(out->why),
			 "at max_workers: %ld ready, all busy", in->ready);
	else
		snprintf(out->why, sizeof(out->why), "at the minimum");
}

void elastic_decide(const struct elastic_in *in, struct elastic_out *out)
{
	if (in->active < in->workers) {
		out->target = in->workers;
		snprintf(out->why, sizeof(out->why),
			 "starting workers: below the minimum of %d",
			 in->workers);
	} else if (in->active > ceiling(in)) {
		out->target = in->active - in->nidle > ceiling(in)
				  ? in->active - in->nidle
				  : ceiling(in);
		snprintf(out->why, sizeof(out->why),
			 in->floor_now
			     ? "scaling down to %d: idle workers go "
			       "now, busy ones once done"
			     : "above max_workers = %d: idle workers go",
			 ceiling(in));
	} else if (!in->floor_now && backlog(in) && in->active < ceiling(in)) {
		grow(in, out);
	} else if (in->active > in->workers) {
		shrink(in, out);
	} else {
		steady(in, out);
	}
}
