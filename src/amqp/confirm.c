/* confirm.c: which publishes the broker has confirmed, by sequence number
 * (pure). */
#include "config.h"

#include <stdlib.h>

#include "mq_int.h"

void mq_track_reset(struct mq_track *t)
{
	t->published = t->confirmed = t->low = 0;
	t->nacked = false;
}

uint64_t mq_track_sent(struct mq_track *t)
{
	if (t->published == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->answered = realloc(t->answered, t->cap);
		if (t->answered == NULL)
			fatal("realloc");
	}
	t->answered[t->published++] = 0;
	return t->published;
}

/* A tag never handed out, or answered already, counts once at most. */
static void mark_answered(struct mq_track *t, uint64_t tag)
{
	if (tag == 0 || tag > t->published || t->answered[tag - 1])
		return;
	t->answered[tag - 1] = 1;
	t->confirmed++;
}

/* Confirms may come out of order; "multiple" answers every tag up to tag. */
void mq_track_answer(struct mq_track *t, uint64_t tag, bool multiple, bool ack)
{
	if (!ack)
		t->nacked = true;
	if (multiple) {
		for (uint64_t n = t->low + 1; n <= tag && n <= t->published;
		     n++)
			mark_answered(t, n);
	} else {
		mark_answered(t, tag);
	}
	while (t->low < t->published && t->answered[t->low])
		t->low++;
}

void mq_track_free(struct mq_track *t)
{
	free(t->answered);
	t->answered = NULL;
	t->cap = 0;
}
