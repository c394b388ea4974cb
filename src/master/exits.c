/*
 * exits.c: a worker's end. Reaps every exited child, reads a dead
 * worker's last reports, counts a crash against the message it held (the
 * ledger), kills what is left of its handler's process group, and says
 * why it ended: respawned with backoff, at once when it went home, or
 * not at all when it was retiring. Master only.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "pool.h"
#include "master/master.h"

#define STAYED_UP_MS 30000 /* a worker up this long resets backoff */

/* A worker died holding a message: the pool counts it against that one. */
static void count_death(struct slot *s, int st)
{
	struct mark *k;

	if (s->holding == NULL)
		return;
	if (supervise_crashed(st)) {
		k = ledger_add(&s->pool->marks, s->holding);
		if (k->deaths < RECORD_COUNT_MAX) /* what a record carries */
			k->deaths++;
		if (k->deaths == LEDGER_DEATHS_MAX)
			log_warnx("queue %s: %d workers died holding message "
				  "%s; the next worker to get it parks it",
				  s->pool->q->name, k->deaths, s->holding);
		reports_tell_mark(s->pool, k);
	}
	free(s->holding);
	s->holding = NULL;
}

/*
 * Kill a dead worker's handler group g, if any of its processes is ours:
 * they are given to us (PR_SET_CHILD_SUBREAPER) when the worker dies. A
 * group none of whose processes is our child may be gone, its id taken
 * by a stranger's new group since: the worker reaped its handler before
 * it could report so.
 */
static void kill_group(const struct identity *id, pid_t g)
{
	siginfo_t si;

	if (g <= 0)
		return;
	si.si_pid = 0;
	if (waitid(P_PGID, (id_t)g, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
		identity_kill(id, -g, SIGKILL);
	else
		log_debug("handler group %ld: none of it left", (long)g);
}

/* s's worker ended with wait status st; stopping: warrend is. */
static void on_exit_of(struct slot *s, int st, bool stopping)
{
	struct pool *p = s->pool;
	char words[800];

	/* its last words first: outcome counts, handler group, reason */
	if (s->ctl >= 0)
		reports_read(s);
	spawn_exited(s);
	count_death(s, st);
	reports_slot_gone(s);
	/* a worker that died mid-message leaves no part of its handler */
	if (s->state != REPORT_BUSY)
		s->handler = 0;
	s->state = 0;
	kill_group(&p->q->id, s->handler);
	s->handler = 0;
	/* a persistent handler lives between messages too */
	kill_group(&p->q->id, s->group);
	s->group = 0;
	if (s->retiring || stopping || p->removed) {
		log_debug("worker %s/%d stopped", p->q->name, s->number);
		slot_remove(s);
		return;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_HOME) {
		/* between messages, by choice: back at once, no backoff */
		s->home_moves++;
		spawn_schedule(s, now_ms());
		return;
	}
	slot_reported(s);
	s->unreachable =
	    WIFEXITED(st) && (WEXITSTATUS(st) == WORKER_EXIT_CONNECT ||
			      WEXITSTATUS(st) == WORKER_EXIT_LOGIN);
	if (now_ms() - s->started >= STAYED_UP_MS) {
		s->failures = 0;
		p->last_error[0] = '\0'; /* a new episode */
	}
	s->failures++;
	supervise_exit_words(s, st, words, sizeof(words));
	if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_EXIT_TAKEN_BACK) {
		/* already said once, by taken_back() */
		log_debug("worker %s/%d %s", p->q->name, s->number, words);
	} else if (strcmp(words, p->last_error) != 0) {
		p->recovery_told = false;
		log_warnx("worker %s/%d %s; respawning with backoff",
			  p->q->name, s->number, words);
		snprintf(p->last_error, sizeof(p->last_error), "%s", words);
	} else {
		log_debug("worker %s/%d %s (again)", p->q->name, s->number,
			  words);
	}
	spawn_schedule(s, now_ms() + spawn_backoff_ms(s->failures));
}

void exits_reap(bool stopping)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		struct slot *s = spawn_slot_of(pid);

		if (s != NULL)
			on_exit_of(s, st, stopping);
	}
	if (pid == -1 && errno != ECHILD)
		log_warn("waitpid");
	reconfigure_gc();
}
