/*
 * supervise.c: the supervisor's pure decisions: how long a dead worker
 * waits before it is started again, whether its death was a crash, which
 * workers retire first, and why a worker ended, in words. Master only;
 * no system calls, so unit-tested as they are.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include "pool.h"
#include "master/master.h"

#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 60000

int supervise_backoff_ms(int failures, long rnd)
{
	int64_t d;

	if (rnd < 0)
		rnd = -rnd;
	/* the first respawn spreads too: after a broker restart every
	 * worker dies at once, and would all come back in one instant */
	if (failures <= 1)
		return failures == 1 ? 100 + (int)(rnd % 901) : 0;
	d = (int64_t)BACKOFF_FIRST_MS
	    << (failures - 2 > 16 ? 16 : failures - 2);
	if (d > BACKOFF_MAX_MS)
		d = BACKOFF_MAX_MS;
	/* jitter: between half and all of it, so pools do not march */
	return (int)(d / 2 + rnd % (d / 2 + 1));
}

/* SIGKILL is what operators and the OOM killer send, and says nothing of
 * a message; nor do the stop signals. */
bool supervise_crashed(int st)
{
	if (WIFSIGNALED(st))
		return WTERMSIG(st) != SIGKILL && WTERMSIG(st) != SIGTERM &&
		       WTERMSIG(st) != SIGINT && WTERMSIG(st) != SIGHUP;
	return WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_FATAL;
}

/* Busy ones last: a busy worker is never retired while an idle one is. */
int supervise_retire_order(const void *a, const void *b)
{
	const struct slot *x = *(struct slot *const *)a,
			  *y = *(struct slot *const *)b;
	bool bx = x->state == REPORT_BUSY, by = y->state == REPORT_BUSY;

	if (bx != by)
		return bx ? 1 : -1;
	return y->number - x->number;
}

void supervise_exit_words(const struct slot *s, int st, char *buf, size_t len)
{
	if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(st));
	else if (s->why[0] != '\0')
		snprintf(buf, len, "%s: %s",
			 worker_exit_reason(WEXITSTATUS(st)), s->why);
	else
		snprintf(buf, len, "%s (exit %d)",
			 worker_exit_reason(WEXITSTATUS(st)), WEXITSTATUS(st));
}
