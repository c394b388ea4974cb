/*
 * reconfigure.c: SIGHUP. Loads the file anew, keeps the running
 * configuration when it is bad, else applies the plan reload.c makes
 * (pools kept, rolled, removed or added) and sizes the pools again; the
 * earlier configurations live on while a pool points into them. Master
 * only.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "pool.h"
#include "master/master.h"

struct cf_gen {
	struct config *cf;
	struct cf_gen *next;
};

static struct {
	const char *path;
	struct config *cf;  /* the running configuration */
	struct cf_gen *old; /* earlier ones, kept for their pools */
} rc;

void reconfigure_init(const char *path, struct config *cf)
{
	rc.path = path;
	rc.cf = cf;
	pool_table_set(path, cf);
}

/* Free earlier configurations that no pool points into any more. */
static void configs_gc(void)
{
	struct cf_gen **gp = &rc.old;

	while (*gp != NULL) {
		struct cf_gen *g = *gp;

		if (!pool_config_in_use(g->cf)) {
			*gp = g->next;
			config_free(g->cf);
			free(g);
		} else {
			gp = &g->next;
		}
	}
}

/* Free removed pools whose last worker has gone, and their configs. */
void reconfigure_gc(void)
{
	pools_gc();
	configs_gc();
}

/* A password file others can read is said at start and every reload. */
void reconfigure_warn_exposed(const struct config *cf)
{
	char why[600];

	if (config_password_exposed(cf, why, sizeof(why)))
		log_warnx("%s", why);
}

/* The running pools (not removed), in table order; caller frees. */
static struct pool **running_pools(int *n)
{
	struct pool **v;
	int k = 0;

	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		k++;
	v = xcalloc((size_t)k + 1, sizeof(*v));
	*n = 0;
	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		if (!p->removed)
			v[(*n)++] = p;
	return v;
}

/* The plan's steps for the running pools run[], and its new queues. */
static void apply_plan(const struct reload_plan *pl, struct pool **run)
{
	for (int i = 0; i < pl->n; i++) {
		struct pool *p = run[i];

		switch (pl->pools[i].step) {
		case RELOAD_REMOVE:
			log_info("queue %s removed: its workers drain and stop",
				 p->q->name);
			p->removed = true;
			spawn_retire_all(p);
			break;
		case RELOAD_ROLL:
			log_info("queue %s changed: rolling its workers",
				 p->q->name);
			spawn_retire_all(p);
			p->q = pl->pools[i].nq;
			break;
		case RELOAD_KEEP:
			p->q = pl->pools[i].nq;
			break;
		}
		scaler_reset(p); /* warrenctl scale lasts until a reload */
	}
	for (int i = 0; i < pl->nadded; i++) {
		log_info("queue %s added", pl->added[i]->name);
		pool_new(pl->added[i]);
	}
}

/* A plan for the running pools from the running configuration to ncf. */
static struct reload_plan *plan_for(const struct config *ncf,
				    struct pool ***run)
{
	const struct queue_conf **qs;
	struct reload_plan *pl;
	int n;

	*run = running_pools(&n);
	qs = xcalloc((size_t)n + 1, sizeof(*qs));
	for (int i = 0; i < n; i++)
		qs[i] = (*run)[i]->q;
	pl = reload_plan(rc.cf, ncf, qs, n);
	free(qs);
	return pl;
}

bool reconfigure(void (*listeners)(const struct config *cf,
				   const struct config *old))
{
	char err[1024];
	struct config *ncf;
	struct cf_gen *g;
	struct reload_plan *pl;
	struct pool **run;

	notify_reloading();
	log_info("reloading %s", rc.path);
	ncf = config_load(rc.path, err, sizeof(err));
	if (ncf != NULL && identity_check(ncf, err, sizeof(err)) != 0) {
		config_free(ncf);
		ncf = NULL;
	}
	if (ncf == NULL) {
		log_fields(LOG_ERR, NULL,
			   "%s; keeping the running configuration", err);
		notify_ready();
		return false;
	}
	reconfigure_warn_exposed(ncf);
	mq_preload_ca(&ncf->broker);
	pl = plan_for(ncf, &run);
	/* a new consumer_timeout: the broker may have been changed too */
	if (pl->consumer_timeout_changed)
		reports_consumer_timeout_reset();
	apply_plan(pl, run);
	free(run);
	reload_plan_free(pl);
	g = xcalloc(1, sizeof(*g));
	g->cf = rc.cf;
	g->next = rc.old;
	rc.old = g;
	rc.cf = ncf;
	pool_table_set(rc.path, ncf);
	listeners(ncf, g->cf);
	spawn_gate_close();
	for (struct pool *p = pool_first(); p != NULL; p = p->next)
		if (!p->removed)
			spawn_resize(p);
	spawn_gate_open();
	reconfigure_gc();
	return true;
}

void reconfigure_free(void)
{
	struct cf_gen *g, *gn;

	for (g = rc.old; g != NULL; g = gn) {
		gn = g->next;
		config_free(g->cf);
		free(g);
	}
	rc.old = NULL;
	config_free(rc.cf);
	rc.cf = NULL;
}
