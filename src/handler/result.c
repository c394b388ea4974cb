/*
 * result.c: a handler's result as it is read (exec: its stdout;
 * persistent: a "result" answer's body), kept up to RESULT_MAX bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "handler/handler_int.h"

void result_append(struct result *r, const void *p, size_t n)
{
	size_t room = RESULT_MAX - r->len;

	if (n > room) {
		r->too_large = true;
		n = room;
	}
	if (r->buf == NULL || r->len + n > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;

		while (cap < r->len + n)
			cap *= 2;
		if (cap > RESULT_MAX)
			cap = RESULT_MAX;
		r->buf = realloc(r->buf, cap > 0 ? cap : 1);
		if (r->buf == NULL)
			fatal("realloc %zu", cap);
		r->cap = cap;
	}
	if (n > 0)
		memcpy(r->buf + r->len, p, n);
	r->len += n;
}

void result_clear(struct result *r)
{
	free(r->buf);
	memset(r, 0, sizeof(*r));
}
