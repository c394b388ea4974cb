/*
 * scaler.c: sizes the master's pools a few times a second. Asks one
 * worker per pool to watch its queue's ready count (the master never
 * talks AMQP), applies elastic.c's decision (starting workers, retiring
 * idle ones only), and carries out warrenctl scale and restart (a rolling
 * restart: one worker at a time per pool, replaced between messages).
 * Master only; workers are started and retired through the master's ops.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "pool.h"
#include "master/master.h"

#define TICK_MS 250
#define READY_FRESH_MS 5000   /* warren_queue_messages: at most this old */
#define WATCH_ELASTIC_MS 1000 /* an elastic pool's watcher looks this often */
#define WATCH_STATIC_MS 2500  /* a fixed pool's, for the metric */

int scaler_floor(const struct pool *p)
{
	return p->sc.floor > 0 ? p->sc.floor : p->q->workers;
}

int scaler_ceiling(const struct pool *p)
{
	int f = scaler_floor(p);

	/* a fixed pool scaled stays fixed; an elastic one keeps its room */
	if (p->q->max_workers <= p->q->workers)
		return f;
	return p->q->max_workers > f ? p->q->max_workers : f;
}

long scaler_ready(const struct pool *p)
{
	if (p->sc.ready_at == 0 || now_ms() - p->sc.ready_at > READY_FRESH_MS)
		return -1;
	return p->sc.ready;
}

/* Connected and between messages. */
static bool idle(const struct slot *s)
{
	return s->pid > 0 && s->holding == NULL &&
	       (s->state == REPORT_CONSUMING || s->state == REPORT_PAUSED);
}

/* Idle, or down and waiting to be started again: may go at once. */
static bool may_retire(const struct slot *s)
{
	return !s->retiring && (idle(s) || (s->pid == 0 && !s->gated));
}

/* Ask a connected worker to watch the queue when no one has lately. */
static void watch(struct pool *p, int64_t now)
{
	int ms = scaler_ceiling(p) > scaler_floor(p) ? WATCH_ELASTIC_MS
						     : WATCH_STATIC_MS;
	int64_t stale = 2 * ms + 500;
	struct record r;

	record_init(&r, RECORD_COMMAND, COMMAND_WATCH); /* ms 0: stop */
	if (ms != p->sc.watch_ms) {
		for (int i = 0; p->sc.watch_ms > 0 && i < p->nslots; i++)
			slot_send(p->slots[i], &r);
		p->sc.watch_ms = ms;
		p->sc.watch_asked = 0;
	}
	if (now - p->sc.ready_at <= stale || now - p->sc.watch_asked <= stale)
		return;
	for (int k = 0; k < p->nslots; k++) {
		struct slot *s = p->slots[(p->sc.watch_next + k) % p->nslots];

		if (s->retiring || s->pid <= 0 || s->state == 0)
			continue;
		r.u.ms = ms;
		slot_send(s, &r);
		p->sc.watch_asked = now;
		p->sc.watcher = s->number;
		p->sc.watch_next = (s->index + 1) % p->nslots;
		return;
	}
}

/* Longest idle first; the watcher last, it would have to be replaced. */
static int retire_order(const void *a, const void *b)
{
	const struct slot *x = *(struct slot *const *)a,
			  *y = *(struct slot *const *)b;
	int wx = x->number == x->pool->sc.watcher,
	    wy = y->number == y->pool->sc.watcher;

	if (wx != wy)
		return wx - wy;
	if (x->idle_since != y->idle_since)
		return x->idle_since < y->idle_since ? -1 : 1;
	return y->number - x->number;
}

/* Retire n of p's idle (or down) workers, the longest idle first. */
static void retire_idle(struct pool *p, int n, const struct scaler_ops *ops)
{
	struct slot **v = xcalloc((size_t)p->nslots + 1, sizeof(*v));
	int k = 0;

	for (int i = 0; i < p->nslots; i++)
		if (may_retire(p->slots[i]))
			v[k++] = p->slots[i];
	qsort(v, (size_t)k, sizeof(*v), retire_order);
	for (int i = 0; i < k && i < n; i++)
		ops->retire(v[i]);
	free(v);
}

/* The decision's inputs, from p's slots; *idle_since the caller frees. */
static void inputs(const struct pool *p, int64_t now, struct elastic_in *in,
		   int64_t **idle_since)
{
	int64_t *v = xcalloc((size_t)p->nslots + 1, sizeof(*v));

	*in =
	    (struct elastic_in){scaler_floor(p),
				scaler_ceiling(p),
				p->sc.floor_now,
				pool_held(p), /* paused, or its breaker open */
				0,
				0,
				scaler_ready(p),
				now,
				p->sc.grown_at,
				p->q->idle_timeout * 1000,
				v,
				0};
	for (int i = 0; i < p->nslots; i++) {
		const struct slot *s = p->slots[i];

		if (s->retiring)
			continue;
		in->active++;
		if (s->state == REPORT_BUSY || s->holding != NULL)
			in->busy++;
		else if (may_retire(s))
			v[in->nidle++] = s->idle_since;
	}
	*idle_since = v;
}

/* Start or retire workers to elastic.c's target; said when it moves. */
static void size(struct pool *p, int64_t now, const struct scaler_ops *ops)
{
	struct elastic_in in;
	struct elastic_out out;
	int64_t *idle_since;

	inputs(p, now, &in, &idle_since);
	elastic_decide(&in, &out);
	free(idle_since);
	if (out.target != p->sc.target && out.target != in.active)
		log_info("queue %s: %d -> %d workers, %s", p->q->name,
			 in.active, out.target, out.why);
	p->sc.target = out.target;
	snprintf(p->sc.why, sizeof(p->sc.why), "%s", out.why);
	if (out.target > in.active && in.active >= in.workers)
		p->sc.grown_at = now;
	for (int i = in.active; i < out.target; i++)
		ops->start(p);
	if (out.target < in.active)
		retire_idle(p, in.active - out.target, ops);
	if (p->sc.floor_now && p->active <= scaler_floor(p))
		p->sc.floor_now = false;
}

/*
 * A rolling restart's next step, once the last one is done (its old
 * worker gone, its new one consuming): an idle worker of the old
 * generation if there is one, else a busy one, which finishes its
 * message first.
 */
static void roll(struct pool *p, const struct scaler_ops *ops)
{
	struct slot *pick = NULL;
	int old = 0;

	if (!p->sc.rolling)
		return;
	for (int i = 0; i < p->nslots; i++) {
		const struct slot *s = p->slots[i];

		if (s->pid > 0 && (s->retiring || s->state == 0))
			return; /* a step under way */
		if (s->retiring || s->gen == p->sc.gen)
			continue;
		old++;
		if (s->pid > 0 && (pick == NULL || (idle(s) && !idle(pick))))
			pick = p->slots[i];
	}
	if (old == 0) {
		log_info("queue %s: restart done, %d worker%s replaced",
			 p->q->name, p->sc.rolled,
			 p->sc.rolled == 1 ? "" : "s");
		p->sc.rolling = false;
		return;
	}
	if (pick == NULL)
		return; /* only down ones left: they start anew */
	ops->retire(pick);
	ops->start(p);
	p->sc.rolled++;
}

int64_t scaler_tick(const struct scaler_ops *ops)
{
	int64_t now = now_ms();

	for (struct pool *p = pool_first(); p != NULL; p = p->next) {
		if (p->removed)
			continue;
		watch(p, now);
		roll(p, ops);
		size(p, now, ops);
	}
	return now + TICK_MS;
}

int scaler_scale(const char *name, int n)
{
	struct pool *p = pool_find(name);

	if (p == NULL)
		return -1;
	p->sc.floor = n;
	p->sc.floor_now = p->active > n;
	log_info("queue %s: scaled to %d worker%s by warrenctl (the "
		 "configuration says %d)",
		 name, n, n == 1 ? "" : "s", p->q->workers);
	return 0;
}

int scaler_restart(const char *name)
{
	struct pool *p = pool_find(name);

	if (p == NULL)
		return -1;
	scaler_reset(p);
	p->sc.gen++;
	p->sc.rolling = true;
	p->sc.rolled = 0;
	log_info("queue %s: rolling restart by warrenctl, one worker at a "
		 "time",
		 name);
	return 0;
}

void scaler_reset(struct pool *p)
{
	p->sc.floor = 0;
	p->sc.floor_now = false;
}
