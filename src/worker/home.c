/*
 * home.c: which broker node a worker belongs on: worker N starts at node
 * (N - 1) mod nodes, and one that fell back to another node looks home
 * between messages, going back (by exiting, to be respawned at once) when
 * its node takes connections again.
 */
#include "config.h"

#include <stdio.h>
#include <unistd.h>

#include "worker/worker_int.h"

/* Connect, home first; else report why and exit. */
void home_connect(struct worker *w)
{
	char name[600], err[512], host[256];
	int status;

	/* worker N starts at node (N - 1) mod nodes: pools spread */
	w->home = (w->number - 1) % w->cf->broker.nurls;
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "?");
	host[sizeof(host) - 1] = '\0';
	snprintf(name, sizeof(name), "warrend %s/%d on %s", w->q->name,
		 w->number, host);
	/* the workers of one node fall back to different nodes */
	w->mq = mq_connect(&w->cf->broker, name, w->home,
			   (w->number - 1) / w->cf->broker.nurls, &w->node,
			   &status, err, sizeof(err));
	if (w->mq == NULL)
		report_and_exit(w,
				status == MQ_FAIL_LOGIN ? WORKER_EXIT_LOGIN
							: WORKER_EXIT_CONNECT,
				err);
}

/*
 * A worker that fell back to another node goes home once its node takes
 * connections again: between messages, by exiting to be respawned at once
 * (the new one tries home first).
 */
static int64_t probe_interval(const struct worker *w)
{
	/* a node that takes TCP but not us: look less and less often */
	return (int64_t)HOME_PROBE_MS
	       << (w->home_moves < 6 ? w->home_moves : 6);
}

void home_probe(struct worker *w)
{
	if (w->node == w->home || w->d != NULL || w->retiring ||
	    now_ms() < w->next_probe)
		return;
	w->next_probe = now_ms() + probe_interval(w);
	if (mq_probe_home(w->mq, 1000) != 0)
		return;
	if (w->home_moves == 0)
		log_info("node %d of broker.url is back: moving to it",
			 w->home + 1);
	else
		log_debug("node %d of broker.url takes connections again: "
			  "moving to it",
			  w->home + 1);
	w->exit_status = WORKER_EXIT_HOME;
	consume_stop(w, false);
}

void home_started(struct worker *w, int home_moves)
{
	w->home_moves = home_moves;
	w->next_probe = now_ms() + probe_interval(w);
	if (w->node != w->home)
		/* a mute home node: said at the first fall back only */
		(w->home_moves == 0 ? log_info : log_debug)(
		    "consuming %s from node %d of broker.url (its own, "
		    "%d, is down)",
		    w->q->name, w->node + 1, w->home + 1);
	else
		log_info("%s %s",
			 w->paused ? "paused, not consuming" : "consuming",
			 w->q->name);
}
