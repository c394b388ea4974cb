/*
 * timerq.c: a min-heap of (time, pointer), so that the master finds the
 * next due respawn without walking its slots. Entries are not removed
 * when plans change: whoever pops one checks that it still holds (pure).
 */
#include "config.h"

#include <stdlib.h>

#include "base/base.h"

static void swap(struct timer *a, struct timer *b)
{
	struct timer t = *a;

	*a = *b;
	*b = t;
}

void timerq_push(struct timerq *q, int64_t at, void *p)
{
	int i;

	if (q->n == q->cap) {
		q->cap = q->cap ? q->cap * 2 : 64;
		q->v = realloc(q->v, (size_t)q->cap * sizeof(*q->v));
		if (q->v == NULL)
			fatal("realloc");
	}
	i = q->n++;
	q->v[i].at = at;
	q->v[i].p = p;
	while (i > 0 && q->v[(i - 1) / 2].at > q->v[i].at) {
		swap(&q->v[(i - 1) / 2], &q->v[i]);
		i = (i - 1) / 2;
	}
}

const struct timer *timerq_peek(const struct timerq *q)
{
	return q->n > 0 ? &q->v[0] : NULL;
}

void timerq_pop(struct timerq *q)
{
	int i = 0;

	if (q->n == 0)
		return;
	q->v[0] = q->v[--q->n];
	for (;;) {
		int l = 2 * i + 1, r = l + 1, min = i;

		if (l < q->n && q->v[l].at < q->v[min].at)
			min = l;
		if (r < q->n && q->v[r].at < q->v[min].at)
			min = r;
		if (min == i)
			break;
		swap(&q->v[i], &q->v[min]);
		i = min;
	}
}

void timerq_free(struct timerq *q)
{
	free(q->v);
	q->v = NULL;
	q->n = q->cap = 0;
}
