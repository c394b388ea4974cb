/*
 * trace.c: a message's W3C trace context (the traceparent, tracestate and
 * baggage headers), checked and bounded, for the handler's environment and
 * the TRACE_ID journal field. Pure: no library, no I/O.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "model/model.h"

#define TRACEPARENT_LEN 55 /* version 00: 2-32-16-2 hex digits */

/* The first header named name (in any case), or NULL. */
static const struct header *find(const struct delivery *d, const char *name)
{
	for (int i = 0; i < d->nheaders; i++)
		if (strcasecmp(d->headers[i].name, name) == 0)
			return &d->headers[i];
	return NULL;
}

static bool lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool all_zero(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != '0')
			return false;
	return true;
}

/* Printable ASCII only: no control byte, no NUL, nothing past 0x7e. */
static bool printable_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

bool traceparent_valid(const char *v, size_t n)
{
	if (n < TRACEPARENT_LEN || n > TRACE_HEADER_MAX ||
	    !printable_ascii(v, n))
		return false;
	if (v[2] != '-' || v[35] != '-' || v[52] != '-')
		return false;
	if (!lower_hex(v, 2) || !lower_hex(v + 3, 32) ||
	    !lower_hex(v + 36, 16) || !lower_hex(v + 53, 2))
		return false;
	if (strncmp(v, "ff", 2) == 0 || all_zero(v + 3, 32) ||
	    all_zero(v + 36, 16))
		return false;
	/* version 00 is exactly this long; a later one may add fields */
	if (strncmp(v, "00", 2) == 0)
		return n == TRACEPARENT_LEN;
	return n == TRACEPARENT_LEN || v[TRACEPARENT_LEN] == '-';
}

/* h when it holds at most max printable ASCII bytes, else NULL. */
static const struct header *bounded(const struct header *h, size_t max)
{
	if (h == NULL || h->len > max || !printable_ascii(h->value, h->len))
		return NULL;
	return h;
}

void trace_of(const struct delivery *d, struct trace *t)
{
	const struct header *tp = find(d, "traceparent");

	memset(t, 0, sizeof(*t));
	if (tp != NULL && traceparent_valid(tp->value, tp->len)) {
		t->traceparent = tp->value;
		memcpy(t->trace_id, tp->value + 3, 32);
		t->trace_id[32] = '\0';
		/* a tracestate means nothing without its traceparent */
		tp = bounded(find(d, "tracestate"), TRACESTATE_MAX);
		t->tracestate = tp != NULL ? tp->value : NULL;
	}
	tp = bounded(find(d, "baggage"), BAGGAGE_MAX);
	t->baggage = tp != NULL ? tp->value : NULL;
}
