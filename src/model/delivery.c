/*
 * delivery.c: a received message as plain data: its key across
 * redeliveries, its headers, how long it waited. Pure: no library, no I/O.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

void delivery_free(struct delivery *d)
{
	if (d == NULL)
		return;
	free(d->exchange);
	free(d->routing_key);
	free(d->message_id);
	free(d->correlation_id);
	free(d->reply_to);
	free(d->content_type);
	free(d->content_encoding);
	free(d->type);
	free(d->app_id);
	free(d->timestamp);
	free(d->priority);
	free(d->expiration);
	free(d->user_id);
	free(d->key);
	free(d->undecodable);
	free(d->unkept);
	for (int i = 0; i < d->nheaders; i++) {
		free(d->headers[i].name);
		free(d->headers[i].value);
	}
	free(d->headers);
	if (d->amqp_free != NULL)
		d->amqp_free(d->amqp);
	else
		free(d->body);
	free(d);
}

/* FNV-1a, 64 bits: a stable name for a body, not a security measure */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

char *delivery_key(const struct delivery *d)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	const char *id = d->message_id != NULL ? d->message_id : "";
	size_t len = strlen(id) + 24;
	char *k = xcalloc(len, 1);

	if (d->routing_key != NULL)
		h = fnv1a(h, d->routing_key, strlen(d->routing_key) + 1);
	h = fnv1a(h, d->body, d->body_len);
	/* two messages that share an id but not a body are two messages */
	if (id[0] != '\0')
		snprintf(k, len, "id:%s:%016llx", id, (unsigned long long)h);
	else
		snprintf(k, len, "sum:%016llx", (unsigned long long)h);
	return k;
}

char *delivery_key_id(const char *key)
{
	size_t n = strlen(key);
	char *id;

	if (strncmp(key, "id:", 3) != 0 || n < 3 + 17)
		return NULL;
	n -= 3 + 17; /* less "id:", ":" and 16 hex digits */
	id = xcalloc(n + 1, 1);
	memcpy(id, key + 3, n);
	return id;
}

const struct header *delivery_header(const struct delivery *d, const char *name)
{
	for (int i = 0; i < d->nheaders; i++)
		if (strcmp(d->headers[i].name, name) == 0)
			return &d->headers[i];
	return NULL;
}

int64_t delivery_wait_ms(const struct delivery *d, int64_t now_real_ms)
{
	char *end;
	long long ts;

	if (d->timestamp == NULL)
		return -1;
	ts = strtoll(d->timestamp, &end, 10);
	if (end == d->timestamp || *end != '\0' || ts <= 0 ||
	    ts > now_real_ms / 1000 + 86400 * 366)
		return -1; /* not a time of this era: not observed */
	/* a publisher's clock a little ahead: no wait, not a negative one */
	return now_real_ms > ts * 1000 ? now_real_ms - ts * 1000 : 0;
}
