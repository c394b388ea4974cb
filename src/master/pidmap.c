/*
 * pidmap.c: pid -> pointer, an open-addressing hash, so that the master
 * finds a reaped child's slot without walking its slots (pure).
 */
#include "config.h"

#include <stdlib.h>

#include "master/master.h"

#define FREE 0	   /* entry never used */
#define DELETED -1 /* entry used, then deleted: probes go on past it */

static unsigned hash(pid_t pid, int cap)
{
	return ((unsigned)pid * 2654435761u) & (unsigned)(cap - 1);
}

/* Rebuilt for the live entries: deleted ones do not make it grow. */
static void rebuild(struct pidmap *m)
{
	struct pidmap old = *m;
	int live = 0;

	for (int i = 0; i < old.cap; i++)
		if (old.v[i].pid > 0)
			live++;
	for (m->cap = 256; m->cap < 4 * (live + 1);)
		m->cap *= 2;
	m->v = xcalloc((size_t)m->cap, sizeof(*m->v));
	m->n = 0;
	for (int i = 0; i < old.cap; i++)
		if (old.v[i].pid > 0)
			pidmap_put(m, old.v[i].pid, old.v[i].p);
	free(old.v);
}

void pidmap_put(struct pidmap *m, pid_t pid, void *p)
{
	unsigned i;

	/* used entries, deleted ones too, stay below half */
	if ((m->n + 1) * 2 > m->cap)
		rebuild(m);
	i = hash(pid, m->cap);
	while (m->v[i].pid > 0 && m->v[i].pid != pid)
		i = (i + 1) & (unsigned)(m->cap - 1);
	if (m->v[i].pid == FREE)
		m->n++;
	m->v[i].pid = pid;
	m->v[i].p = p;
}

static struct pidmap_entry *find(const struct pidmap *m, pid_t pid)
{
	if (m->cap == 0 || pid <= 0)
		return NULL;
	for (unsigned i = hash(pid, m->cap); m->v[i].pid != FREE;
	     i = (i + 1) & (unsigned)(m->cap - 1))
		if (m->v[i].pid == pid)
			return &m->v[i];
	return NULL;
}

void *pidmap_get(const struct pidmap *m, pid_t pid)
{
	struct pidmap_entry *e = find(m, pid);

	return e != NULL ? e->p : NULL;
}

void pidmap_del(struct pidmap *m, pid_t pid)
{
	struct pidmap_entry *e = find(m, pid);

	if (e != NULL) {
		e->pid = DELETED;
		e->p = NULL;
	}
}

void pidmap_free(struct pidmap *m)
{
	free(m->v);
	m->v = NULL;
	m->cap = m->n = 0;
}
