/*
 * pool.c: the master's worker table, and its one owner. Pools (one per
 * queue) hold slots (one per worker); a slot is added, numbered,
 * deactivated and removed here, and commands reach its worker through
 * slot_send(). The master (master.c) decides, reports.c applies what the
 * workers say, status.c reads. Master only.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pool.h"
#include "master/master.h"

static struct pool_table table;

/* host:port of the running configuration's nodes, made once per config */
static struct {
	const struct config *cf;
	char **names;
	int n;
} nodes;

const struct pool_table *pool_table(void)
{
	return &table;
}

void pool_table_set(const char *path, const struct config *cf)
{
	table.path = path;
	table.cf = cf;
}

struct pool *pool_first(void)
{
	return table.pools;
}

struct pool *pool_find(const char *name)
{
	for (struct pool *p = table.pools; p != NULL; p = p->next)
		if (!p->removed && strcmp(p->q->name, name) == 0)
			return p;
	return NULL;
}

struct pool *pool_new(const struct queue_conf *q)
{
	struct pool *p = xcalloc(1, sizeof(*p)), **tail = &table.pools;

	p->q = q;
	while (*tail != NULL)
		tail = &(*tail)->next;
	*tail = p;
	return p;
}

static void pool_free(struct pool *p)
{
	ledger_free(&p->marks);
	for (int i = 0; i < POOL_NODES_MAX; i++)
		free(p->conns[i].node);
	free(p->slots);
	free(p->used);
	free(p);
}

void pools_gc(void)
{
	struct pool **pp = &table.pools;

	while (*pp != NULL) {
		struct pool *p = *pp;

		if (p->removed && p->nslots == 0) {
			*pp = p->next;
			pool_free(p);
		} else {
			pp = &p->next;
		}
	}
}

void pools_free(void)
{
	while (table.pools != NULL) {
		struct pool *p = table.pools;

		table.pools = p->next;
		while (p->nslots > 0)
			slot_remove(p->slots[0]);
		pool_free(p);
	}
	for (int k = 0; k < nodes.n; k++)
		free(nodes.names[k]);
	free(nodes.names);
	memset(&nodes, 0, sizeof(nodes));
}

bool pool_config_in_use(const struct config *cf)
{
	for (struct pool *p = table.pools; p != NULL; p = p->next)
		if (p->q >= cf->queues && p->q < cf->queues + cf->nqueues)
			return true;
	return false;
}

/* used[n]: whether an active slot of p holds number n */
static void number_use(struct pool *p, int n, bool used)
{
	if (n >= p->nused) {
		int cap = n * 2 + 16;

		p->used = realloc(p->used, (size_t)cap);
		if (p->used == NULL)
			fatal("realloc");
		memset(p->used + p->nused, 0, (size_t)(cap - p->nused));
		p->nused = cap;
	}
	p->used[n] = used;
}

int pool_number_free(const struct pool *p, int n)
{
	while (n < p->nused && p->used[n])
		n++;
	return n;
}

struct slot *slot_add(struct pool *p, int number)
{
	struct slot *s = xcalloc(1, sizeof(*s));

	s->pool = p;
	s->number = number;
	s->ctl = -1;
	s->node = -1;
	if (p->nslots == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		p->slots =
		    realloc(p->slots, (size_t)p->cap * sizeof(*p->slots));
		if (p->slots == NULL)
			fatal("realloc");
	}
	s->index = p->nslots;
	p->slots[p->nslots++] = s;
	p->active++;
	number_use(p, number, true);
	table.unreported++;
	return s;
}

void slot_reported(struct slot *s)
{
	if (s->reported)
		return;
	s->reported = true;
	if (!s->retiring)
		table.unreported--;
}

void slot_deactivate(struct slot *s)
{
	if (s->retiring)
		return;
	s->retiring = true;
	s->pool->active--;
	number_use(s->pool, s->number, false);
	if (!s->reported)
		table.unreported--;
}

void slot_close_ctl(struct slot *s)
{
	ev_del(s->ev);
	s->ev = NULL;
	if (s->ctl >= 0)
		close(s->ctl);
	s->ctl = -1;
}

void slot_remove(struct slot *s)
{
	struct pool *p = s->pool;

	slot_deactivate(s);
	p->slots[s->index] = p->slots[--p->nslots];
	p->slots[s->index]->index = s->index;
	slot_close_ctl(s);
	free(s->holding);
	s->holding = NULL;
	if (s->timers > 0)
		s->gone = true; /* the respawn heap frees it */
	else
		free(s);
}

void slot_send(struct slot *s, const struct record *r)
{
	static bool said; /* a record that does not encode: a bug */
	char buf[RECORD_MAX], err[200];
	int n;

	if (s->pid <= 0 || s->ctl < 0)
		return;
	if ((n = record_encode(r, buf, sizeof(buf), err, sizeof(err))) < 0) {
		(said ? log_debug : log_warnx)("not sent to worker %s/%d: %s",
					       s->pool->q->name, s->number,
					       err);
		said = true;
		return;
	}
	(void)send(s->ctl, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

void slot_command(struct slot *s, char cmd)
{
	struct record r;

	record_init(&r, RECORD_COMMAND, cmd);
	slot_send(s, &r);
}

const char *pool_node_name(int i)
{
	const struct config *cf = table.cf;

	if (cf == NULL)
		return "?";
	if (nodes.cf != cf) {
		for (int k = 0; k < nodes.n; k++)
			free(nodes.names[k]);
		free(nodes.names);
		nodes.n = cf->broker.nurls;
		nodes.names = xcalloc((size_t)nodes.n, sizeof(char *));
		for (int k = 0; k < nodes.n; k++)
			nodes.names[k] = mq_url_node(cf->broker.urls[k]);
		nodes.cf = cf;
	}
	return i >= 0 && i < nodes.n ? nodes.names[i] : "?";
}
