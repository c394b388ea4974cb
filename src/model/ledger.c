/*
 * ledger.c: what outlives a worker about the messages it held: how many
 * workers died holding one, and how many of its attempts the broker took
 * back (consumer_timeout). The master keeps one per pool and sends its
 * changes to the pool's workers, which start with a copy. Pure.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

struct mark *ledger_find(const struct ledger *l, const char *key)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->marks[i].key, key) == 0)
			return &l->marks[i];
	return NULL;
}

static void drop(struct ledger *l, int i)
{
	free(l->marks[i].key);
	memmove(&l->marks[i], &l->marks[i + 1],
		(size_t)(l->n - i - 1) * sizeof(*l->marks));
	l->n--;
}

struct mark *ledger_add(struct ledger *l, const char *key)
{
	struct mark *k = ledger_find(l, key);

	if (k != NULL)
		return k;
	if (l->n == LEDGER_MAX)
		drop(l, 0); /* the oldest: a bound, not a loss of messages */
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->marks =
		    realloc(l->marks, (size_t)l->cap * sizeof(*l->marks));
		if (l->marks == NULL)
			fatal("realloc");
	}
	k = &l->marks[l->n++];
	memset(k, 0, sizeof(*k));
	k->key = xstrdup(key);
	return k;
}

void ledger_forget(struct ledger *l, const char *key)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->marks[i].key, key) == 0) {
			drop(l, i);
			return;
		}
}

void ledger_free(struct ledger *l)
{
	while (l->n > 0)
		drop(l, l->n - 1);
	free(l->marks);
	l->marks = NULL;
	l->cap = 0;
}

void ledger_copy(struct ledger *dst, const struct ledger *src)
{
	memset(dst, 0, sizeof(*dst));
	for (int i = 0; i < src->n; i++) {
		struct mark *k = ledger_add(dst, src->marks[i].key);

		k->deaths = src->marks[i].deaths;
		k->lost = src->marks[i].lost;
		k->pending = src->marks[i].pending;
		k->attempt = src->marks[i].attempt;
		k->delay = src->marks[i].delay;
		memcpy(k->reason, src->marks[i].reason, sizeof(k->reason));
	}
}
