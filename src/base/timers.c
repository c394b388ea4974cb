/*
 * timers.c: the deadlines a loop waits for, each owned by one module: the
 * loop asks each owner when it is next due and runs those due, instead of
 * merging every module's deadline by hand (pure).
 */
#include "config.h"

#include <limits.h>

#include "base/base.h"

void timers_add(struct timers *t, const char *name, timer_next_fn *next,
		timer_run_fn *run, void *arg)
{
	if (t->n == TIMERS_MAX)
		fatal("timers: more than %d (%s)", TIMERS_MAX, name);
	t->v[t->n++] = (struct timer_owner){name, next, run, arg};
}

int64_t timers_next(const struct timers *t)
{
	int64_t next = 0;

	for (int i = 0; i < t->n; i++) {
		int64_t at = t->v[i].next(t->v[i].arg);

		if (at > 0 && (next == 0 || at < next))
			next = at;
	}
	return next;
}

int timers_wait_ms(const struct timers *t, int64_t now)
{
	int64_t next = timers_next(t);

	if (next == 0)
		return -1;
	if (next <= now)
		return 0;
	return next - now > INT_MAX ? INT_MAX : (int)(next - now);
}

int timers_run(struct timers *t, int64_t now)
{
	int ran = 0;

	for (int i = 0; i < t->n; i++) {
		int64_t at = t->v[i].next(t->v[i].arg);

		if (at > 0 && at <= now) {
			/* NULL: the loop's turn does the work, at every turn */
			if (t->v[i].run != NULL)
				t->v[i].run(t->v[i].arg, now);
			ran++;
		}
	}
	return ran;
}
