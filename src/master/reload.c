/*
 * reload.c: what a reload changes, decided from the running and the new
 * configuration alone (pure): for each running pool whether it keeps its
 * workers, rolls them or drains and goes, and which queues are new. The
 * master applies the plan (master.c). Master only.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "master/master.h"

#define SAME_STR(x, y)                                                         \
	((x) == NULL ? (y) == NULL : (y) != NULL && !strcmp(x, y))

/* Whether workers connected under a may go on under b. */
static bool broker_same(const struct broker_conf *a,
			const struct broker_conf *b)
{
	if (a->nurls != b->nurls || a->heartbeat != b->heartbeat ||
	    a->connect_timeout != b->connect_timeout ||
	    a->consumer_timeout != b->consumer_timeout ||
	    a->secret != b->secret) /* a rotated password: log in again */
		return false;
	for (int i = 0; i < a->nurls; i++)
		if (strcmp(a->urls[i], b->urls[i]) != 0)
			return false;
	return SAME_STR(a->password_file, b->password_file) &&
	       SAME_STR(a->tls.ca_cert, b->tls.ca_cert) &&
	       SAME_STR(a->tls.cert, b->tls.cert) &&
	       SAME_STR(a->tls.key, b->tls.key) &&
	       a->tls.verify_peer == b->tls.verify_peer &&
	       a->tls.verify_hostname == b->tls.verify_hostname;
}

static bool running(const char *name, const struct queue_conf *const *run,
		    int nrun)
{
	for (int i = 0; i < nrun; i++)
		if (strcmp(run[i]->name, name) == 0)
			return true;
	return false;
}

struct reload_plan *reload_plan(const struct config *old,
				const struct config *ncf,
				const struct queue_conf *const *run, int nrun)
{
	struct reload_plan *pl = xcalloc(1, sizeof(*pl));

	pl->broker_changed = !broker_same(&old->broker, &ncf->broker) ||
			     old->shutdown_timeout != ncf->shutdown_timeout;
	pl->consumer_timeout_changed =
	    old->broker.consumer_timeout != ncf->broker.consumer_timeout;
	pl->n = nrun;
	pl->pools = xcalloc((size_t)nrun + 1, sizeof(*pl->pools));
	for (int i = 0; i < nrun; i++) {
		const struct queue_conf *nq = config_queue(ncf, run[i]->name);

		pl->pools[i].nq = nq;
		if (nq == NULL)
			pl->pools[i].step = RELOAD_REMOVE;
		else if (pl->broker_changed ||
			 !queue_conf_same_but_workers(run[i], nq))
			pl->pools[i].step = RELOAD_ROLL;
		else
			pl->pools[i].step = RELOAD_KEEP;
	}
	pl->added = xcalloc((size_t)ncf->nqueues + 1, sizeof(*pl->added));
	for (int i = 0; i < ncf->nqueues; i++)
		if (!running(ncf->queues[i].name, run, nrun))
			pl->added[pl->nadded++] = &ncf->queues[i];
	return pl;
}

void reload_plan_free(struct reload_plan *pl)
{
	if (pl == NULL)
		return;
	free(pl->pools);
	free(pl->added);
	free(pl);
}
