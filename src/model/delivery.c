/*
 * delivery.c: a received message as plain data, and the handler's
 * environment built from it. Pure: no library, no I/O.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "warren.h"

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

char *env_name_of_header(const char *name)
{
	static const char prefix[] = "WARREN_HEADER_";
	size_t n = strlen(name);
	char *v = xcalloc(sizeof(prefix) + n, 1);
	char *p;

	memcpy(v, prefix, sizeof(prefix) - 1);
	p = v + sizeof(prefix) - 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c >= 'a' && c <= 'z')
			c = (unsigned char)(c - 'a' + 'A');
		else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			c = '_';
		*p++ = (char)c;
	}
	*p = '\0';
	return v;
}

struct envb {
	char **v;
	int n, cap;
};

static void env_put(struct envb *e, char *entry)
{
	/* a later entry of the same name replaces an earlier one */
	size_t klen = strcspn(entry, "=") + 1;

	for (int i = 0; i < e->n; i++) {
		if (strncmp(e->v[i], entry, klen) == 0) {
			free(e->v[i]);
			e->v[i] = entry;
			return;
		}
	}
	if (e->n + 2 > e->cap) {
		e->cap = e->cap ? e->cap * 2 : 32;
		e->v = realloc(e->v, (size_t)e->cap * sizeof(char *));
		if (e->v == NULL)
			fatal("realloc");
	}
	e->v[e->n++] = entry;
	e->v[e->n] = NULL;
}

static bool env_has(const struct envb *e, const char *name)
{
	size_t n = strlen(name);

	for (int i = 0; i < e->n; i++)
		if (strncmp(e->v[i], name, n) == 0 && e->v[i][n] == '=')
			return true;
	return false;
}

static void env_set(struct envb *e, const char *name, const char *value,
		    size_t len)
{
	char *entry;
	size_t nlen;

	if (value == NULL || memchr(value, '\0', len) != NULL)
		return; /* unset, or holds NUL: left out */
	nlen = strlen(name);
	if (nlen + 1 + len + 1 > ENV_ENTRY_MAX)
		return; /* execve would refuse the whole environment */
	entry = xcalloc(nlen + len + 2, 1);
	memcpy(entry, name, nlen);
	entry[nlen] = '=';
	memcpy(entry + nlen + 1, value, len);
	env_put(e, entry);
}

static void env_str(struct envb *e, const char *name, const char *value)
{
	if (value != NULL)
		env_set(e, name, value, strlen(value));
}

/* PATH and the queue's own environment */
static void env_base(struct envb *e, const struct queue_conf *q)
{
	env_str(e, "PATH", "/usr/local/bin:/usr/bin:/bin");
	for (int i = 0; i < q->nenvironment; i++)
		env_put(e, xstrdup(q->environment[i]));
}

char **handler_env_base(const struct queue_conf *q, int worker)
{
	struct envb e = {NULL, 0, 0};
	char num[32];

	env_base(&e, q);
	env_str(&e, "WARREN_QUEUE", q->name);
	snprintf(num, sizeof(num), "%d", worker);
	env_str(&e, "WARREN_WORKER", num);
	return e.v;
}

/* TRACEPARENT, TRACESTATE, BAGGAGE: OpenTelemetry's environment carrier */
static void env_trace(struct envb *e, const struct delivery *d)
{
	struct trace t;

	trace_of(d, &t);
	env_str(e, "TRACEPARENT", t.traceparent);
	env_str(e, "TRACESTATE", t.tracestate);
	env_str(e, "BAGGAGE", t.baggage);
}

char **handler_env(const struct queue_conf *q, int worker, int attempt,
		   const struct delivery *d)
{
	struct envb e = {NULL, 0, 0};
	char num[32];

	env_base(&e, q);
	/* headers first, so a header can never shadow a WARREN_ variable;
	 * of two that map to one name, the first in the table wins */
	for (int i = 0; i < d->nheaders; i++) {
		char *name;

		if (d->headers[i].name[0] == '\0')
			continue;
		name = env_name_of_header(d->headers[i].name);
		if (!env_has(&e, name))
			env_set(&e, name, d->headers[i].value,
				d->headers[i].len);
		free(name);
	}
	env_trace(&e, d);
	env_str(&e, "WARREN_QUEUE", q->name);
	snprintf(num, sizeof(num), "%d", worker);
	env_str(&e, "WARREN_WORKER", num);
	snprintf(num, sizeof(num), "%d", attempt);
	env_str(&e, "WARREN_ATTEMPT", num);
	env_str(&e, "WARREN_REDELIVERED", d->redelivered ? "1" : "0");
	env_str(&e, "WARREN_MESSAGE_ID", d->message_id);
	env_str(&e, "WARREN_CORRELATION_ID", d->correlation_id);
	env_str(&e, "WARREN_REPLY_TO", d->reply_to);
	env_str(&e, "WARREN_CONTENT_TYPE", d->content_type);
	env_str(&e, "WARREN_CONTENT_ENCODING", d->content_encoding);
	env_str(&e, "WARREN_TYPE", d->type);
	env_str(&e, "WARREN_APP_ID", d->app_id);
	env_str(&e, "WARREN_TIMESTAMP", d->timestamp);
	env_str(&e, "WARREN_PRIORITY", d->priority);
	env_str(&e, "WARREN_EXPIRATION", d->expiration);
	env_str(&e, "WARREN_USER_ID", d->user_id);
	env_str(&e, "WARREN_ROUTING_KEY", d->routing_key);
	env_str(&e, "WARREN_EXCHANGE", d->exchange);
	return e.v;
}

int env_too_large(const struct delivery *d)
{
	int n = 0;

	for (int i = 0; i < d->nheaders; i++) {
		size_t nlen =
		    strlen(d->headers[i].name) + strlen("WARREN_HEADER_");

		if (d->headers[i].name[0] != '\0' &&
		    nlen + 1 + d->headers[i].len + 1 > ENV_ENTRY_MAX)
			n++;
	}
	return n;
}

void env_free(char **env)
{
	if (env == NULL)
		return;
	for (char **p = env; *p != NULL; p++)
		free(*p);
	free(env);
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
