/*
 * death.c: what the broker says of a message it dead-lettered (its x-death
 * header), for warrenctl failed: the latest reason, queue and time.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"

void death_free(struct death *x)
{
	free(x->reason);
	free(x->queue);
	memset(x, 0, sizeof(*x));
}

int death_of(const struct delivery *d, struct death *x)
{
	const struct header *h = delivery_header(d, "x-death");
	const struct json *last;
	struct json *all;
	const char *reason, *queue;

	memset(x, 0, sizeof(*x));
	x->time = -1;
	if (h == NULL || memchr(h->value, '\0', h->len) != NULL)
		return -1;
	all = json_parse(h->value);
	/* the broker keeps the latest dead-lettering first */
	last = json_at(all, 0);
	reason = json_str(json_get(last, "reason"));
	if (reason == NULL) {
		json_free(all);
		return -1;
	}
	x->reason = xstrdup(reason);
	queue = json_str(json_get(last, "queue"));
	x->queue = queue != NULL ? xstrdup(queue) : NULL;
	if (!json_is_null(json_get(last, "time")))
		x->time = (long long)json_num(json_get(last, "time"));
	json_free(all);
	return 0;
}
