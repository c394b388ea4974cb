/*
 * status.c: what the master tells about its workers: the JSON answer to
 * warrenctl status, and the Prometheus text of the metrics, both read
 * from the view of the worker table the master hands in. Master only.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"
#include "master/master.h"

static const char *state_name(const struct slot *s)
{
	if (s->pid == 0)
		return "down";
	switch (s->state) {
	case REPORT_CONSUMING:
		return "idle";
	case REPORT_BUSY:
		return "busy";
	case REPORT_PAUSED:
		return "paused";
	default:
		return "starting";
	}
}

static const char *const states[] = {"starting", "idle", "busy", "paused",
				     "down"};
#define NSTATES 5

static int state_index(const struct slot *s)
{
	const char *n = state_name(s);

	for (int i = 0; i < NSTATES; i++)
		if (strcmp(n, states[i]) == 0)
			return i;
	return 0;
}

static struct json *worker_json(const struct slot *s, int64_t now)
{
	struct json *w = json_new_object();
	char *id = s->holding != NULL ? delivery_key_id(s->holding) : NULL;

	json_set(w, "queue", json_string(s->pool->q->name));
	json_set(w, "number", json_int(s->number));
	json_set(w, "pid", json_int(s->pid));
	json_set(w, "state", json_string(state_name(s)));
	json_set(w, "retiring", json_new_bool(s->retiring));
	json_set(w, "message_id", json_string(id));
	free(id);
	json_set(w, "busy_ms",
		 s->holding != NULL ? json_int(now - s->held_since) : NULL);
	json_set(w, "acked", json_int((int64_t)s->acked));
	json_set(w, "retried", json_int((int64_t)s->retried));
	json_set(w, "failed", json_int((int64_t)s->failed));
	json_set(w, "requeued", json_int((int64_t)s->requeued));
	json_set(w, "node",
		 s->pid > 0 && s->node >= 0
		     ? json_string(pool_node_name(s->node))
		     : NULL);
	return w;
}

/* "breaker": its state (null without one), and the seconds left of an
 * open one's cooldown */
static void breaker_json(struct json *q, const struct pool *p)
{
	const struct breaker *b = &p->breaker;
	int64_t left = breaker_next(b, now_ms());

	json_set(q, "breaker",
		 p->q->breaker.on ? json_string(breaker_state_name(b->state))
				  : NULL);
	json_set(q, "breaker_seconds_left",
		 left >= 0 ? json_int((left + 999) / 1000) : NULL);
	json_set(q, "breaker_openings", json_int((int64_t)b->openings));
}

static struct json *queue_json(const struct pool *p)
{
	struct json *q = json_new_object();
	int count[NSTATES] = {0};

	for (int i = 0; i < p->nslots; i++)
		if (!p->slots[i]->retiring)
			count[state_index(p->slots[i])]++;
	json_set(q, "name", json_string(p->q->name));
	json_set(q, "workers", json_int(scaler_floor(p)));
	json_set(q, "max_workers", json_int(scaler_ceiling(p)));
	json_set(q, "target", json_int(p->sc.target));
	json_set(q, "scaling", json_string(p->sc.why[0] ? p->sc.why : NULL));
	json_set(q, "ready",
		 scaler_ready(p) >= 0 ? json_int(scaler_ready(p)) : NULL);
	json_set(q, "restarting", json_new_bool(p->sc.rolling));
	json_set(q, "paused", json_new_bool(p->paused));
	json_set(q, "starting", json_int(count[0]));
	json_set(q, "idle", json_int(count[1]));
	json_set(q, "busy", json_int(count[2]));
	json_set(q, "paused_workers", json_int(count[3]));
	json_set(q, "down", json_int(count[4]));
	json_set(q, "acked", json_int((int64_t)p->done));
	json_set(q, "retried", json_int((int64_t)p->retried));
	json_set(q, "failed", json_int((int64_t)p->failed));
	json_set(q, "requeued", json_int((int64_t)p->requeued));
	json_set(q, "restarts", json_int((int64_t)p->restarts));
	json_set(q, "cpu_seconds", json_double((double)p->cpu_ms / 1000.0));
	json_set(q, "last_error",
		 json_string(p->last_error[0] ? p->last_error : NULL));
	breaker_json(q, p);
	return q;
}

static int by_number(const void *a, const void *b)
{
	return (*(struct slot *const *)a)->number -
	       (*(struct slot *const *)b)->number;
}

char *status_json(const struct master_view *v)
{
	struct json *o = json_new_object(), *qs = json_new_array(),
		    *ws = json_new_array();
	int64_t now = now_ms();
	char *t;

	json_set(o, "ok", json_new_bool(true));
	json_set(o, "pid", json_int(getpid()));
	json_set(o, "config", json_string(v->path));
	json_set(o, "ready", json_new_bool(v->ready));
	json_set(o, "stopping", json_new_bool(v->stopping));
	for (const struct pool *p = v->pools; p != NULL; p = p->next) {
		struct slot **sorted;

		if (p->removed)
			continue;
		json_push(qs, queue_json(p));
		/* the table keeps worker numbers in order */
		sorted = xcalloc((size_t)p->nslots + 1, sizeof(*sorted));
		memcpy(sorted, p->slots, (size_t)p->nslots * sizeof(*sorted));
		qsort(sorted, (size_t)p->nslots, sizeof(*sorted), by_number);
		for (int i = 0; i < p->nslots; i++)
			json_push(ws, worker_json(sorted[i], now));
		free(sorted);
	}
	json_set(o, "queues", qs);
	json_set(o, "workers", ws);
	t = json_text(o);
	json_free(o);
	return t;
}

static void messages(FILE *f, const struct pool *p)
{
	static const char *const outcomes[] = {"ack", "retry", "failed",
					       "requeued"};
	unsigned long v[] = {p->done, p->retried, p->failed, p->requeued};

	for (int i = 0; i < 4; i++) {
		const char *kv[] = {"queue", p->q->name, "outcome", outcomes[i],
				    NULL};

		prom_sample(f, "warren_messages_total", kv, (double)v[i]);
	}
}

static void workers(FILE *f, const struct pool *p)
{
	int count[NSTATES] = {0};

	for (int i = 0; i < p->nslots; i++)
		if (!p->slots[i]->retiring)
			count[state_index(p->slots[i])]++;
	for (int i = 0; i < NSTATES; i++) {
		const char *kv[] = {"queue", p->q->name, "state", states[i],
				    NULL};

		prom_sample(f, "warren_workers", kv, count[i]);
	}
}

static void connections(FILE *f, const struct pool *p)
{
	for (int i = 0; i < POOL_NODES_MAX; i++) {
		const char *kv[] = {"queue", p->q->name, "node",
				    p->conns[i].node, NULL};

		if (p->conns[i].node != NULL)
			prom_sample(f, "warren_broker_connections_total", kv,
				    (double)p->conns[i].n);
	}
}

static void waits(FILE *f, const struct pool *p)
{
	const char *kv[] = {"queue", p->q->name, NULL};

	prom_histogram(f, "warren_queue_wait_seconds", kv, &p->waits);
}

static void durations(FILE *f, const struct pool *p)
{
	const char *kv[] = {"queue", p->q->name, NULL};

	prom_histogram(f, "warren_handler_duration_seconds", kv, &p->durations);
}

/* One sample a pool, or none when the value is negative. */
static double cpu_seconds(const struct pool *p)
{
	return (double)p->cpu_ms / 1000.0;
}

static double restarts(const struct pool *p)
{
	return (double)p->restarts;
}

static double target(const struct pool *p)
{
	return p->sc.target > 0 ? p->sc.target : scaler_floor(p);
}

static double ready(const struct pool *p)
{
	return (double)scaler_ready(p);
}

static double breaker_open(const struct pool *p)
{
	return breaker_holds(&p->breaker) ? 1 : 0;
}

static double slow(const struct pool *p)
{
	return (double)p->slow;
}

/* The metric families, in the order they are shown: each is rendered
 * by `lines` (any number of samples a pool) or by `value` (one). */
static const struct family {
	const char *name, *type, *help;
	void (*lines)(FILE *f, const struct pool *p);
	double (*value)(const struct pool *p);
} families[] = {
    {"warren_messages_total", "counter", "Messages settled, by outcome.",
     messages, NULL},
    {"warren_handler_duration_seconds", "histogram",
     "How long handlers ran, per message.", durations, NULL},
    {"warren_handler_cpu_seconds_total", "counter",
     "CPU time (user and system) handlers spent on messages.", NULL,
     cpu_seconds},
    {"warren_workers", "gauge", "Workers, by state.", workers, NULL},
    {"warren_worker_restarts_total", "counter",
     "Workers started again after they ended.", NULL, restarts},
    {"warren_pool_target", "gauge",
     "Workers the pool wants now (elastic sizing).", NULL, target},
    {"warren_queue_messages", "gauge",
     "Ready messages in the queue, as a worker last saw them "
     "(at most 5 s ago).",
     NULL, ready},
    {"warren_breaker_open", "gauge",
     "1 while the queue's circuit breaker keeps it from "
     "consuming (open or half-open), else 0.",
     NULL, breaker_open},
    {"warren_broker_connections_total", "counter",
     "Connections workers made, by broker node.", connections, NULL},
    {"warren_queue_wait_seconds", "histogram",
     "From a message's AMQP timestamp to its handler's start.", waits, NULL},
    {"warren_slow_messages_total", "counter",
     "Handlers still running past queue.slow.", NULL, slow},
};

static void family(FILE *f, const struct family *m, const struct pool *pools)
{
	prom_family(f, m->name, m->type, m->help);
	for (const struct pool *p = pools; p != NULL; p = p->next) {
		const char *kv[] = {"queue", p->q->name, NULL};
		double v;

		if (p->removed)
			continue;
		if (m->lines != NULL) {
			m->lines(f, p);
			continue;
		}
		v = m->value(p);
		if (v >= 0)
			prom_sample(f, m->name, kv, v);
	}
}

char *status_metrics(const struct master_view *v)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (f == NULL)
		fatal("open_memstream");
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		family(f, &families[i], v->pools);
	fclose(f);
	return text;
}
