/*
 * topology.c: what a queue asks of the broker beyond its name (queue
 * arguments, bindings, declare or only check): pure parsing and the
 * checks warrend -t can make offline. No library, no I/O.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/conf.h"

#define AMQP_SHORTSTR_MAX 255

/* Arguments RabbitMQ reads as strings whatever they look like. */
static const char *const string_args[] = {
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-overflow",
    "x-queue-mode",
    "x-dead-letter-strategy",
    "x-queue-master-locator",
    "x-queue-leader-locator",
    "x-max-age",
    NULL,
};

/* Arguments that are integers, with their least value. */
static const struct {
	const char *name;
	long long lo, hi;
} int_args[] = {
    {"x-max-priority", 1, 255},
    {"x-message-ttl", 0, 0xffffffffLL},
    {"x-expires", 1, 0xffffffffLL},
    {"x-max-length", 0, 1LL << 62},
    {"x-max-length-bytes", 0, 1LL << 62},
    {"x-quorum-initial-group-size", 1, 1000},
    {NULL, 0, 0},
};

/* A string argument's allowed values, where RabbitMQ has a fixed set. */
static const struct {
	const char *name;
	const char *values; /* '|'-separated */
} enum_args[] = {
    {"x-overflow", "drop-head|reject-publish|reject-publish-dlx"},
    {"x-queue-mode", "default|lazy"},
    {"x-dead-letter-strategy", "at-most-once|at-least-once"},
    {NULL, NULL},
};

/* Keys other settings own: given as arguments they would fight them. */
static const struct {
	const char *name;
	const char *use;
} owned_args[] = {
    {"x-queue-type", "type"},
    {"x-delivery-limit", "delivery_limit"},
    {NULL, NULL},
};

static bool in_list(const char *const *list, const char *name)
{
	for (; *list != NULL; list++)
		if (strcmp(*list, name) == 0)
			return true;
	return false;
}

static bool printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* v as a whole decimal integer, else false. */
static bool parse_int(const char *v, long long *out)
{
	char *end;

	if (v[0] == '\0' || (v[0] != '-' && (v[0] < '0' || v[0] > '9')))
		return false;
	errno = 0;
	*out = strtoll(v, &end, 10);
	return errno == 0 && *end == '\0' && end != v;
}

int qarg_parse(const char *text, struct qarg *a, char *err, size_t errlen)
{
	const char *eq = strchr(text, '=');
	const char *v;
	size_t n;

	memset(a, 0, sizeof(*a));
	if (eq == NULL || eq == text) {
		snprintf(err, errlen, "arguments: \"%s\" is not NAME=VALUE",
			 text);
		return -1;
	}
	n = (size_t)(eq - text);
	if (n > AMQP_SHORTSTR_MAX || !printable(text, n)) {
		snprintf(err, errlen,
			 "arguments: the name of \"%.40s\" must be 1 to 255 "
			 "printable characters",
			 text);
		return -1;
	}
	v = eq + 1;
	if (!printable(v, strlen(v))) {
		snprintf(err, errlen,
			 "arguments: %.*s: the value holds a control "
			 "character",
			 (int)n, text);
		return -1;
	}
	a->name = xcalloc(n + 1, 1);
	memcpy(a->name, text, n);
	if (in_list(string_args, a->name)) {
		a->kind = QARG_STR;
	} else if (parse_int(v, &a->i)) {
		a->kind = QARG_INT;
	} else if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
		a->kind = QARG_BOOL;
		a->b = v[0] == 't';
	} else {
		a->kind = QARG_STR;
	}
	if (a->kind == QARG_STR)
		a->s = xstrdup(v);
	return 0;
}

static int check_enum(const struct qarg *a, const char *values, char *err,
		      size_t errlen)
{
	size_t n = strlen(a->s);

	for (const char *p = values; *p != '\0';) {
		size_t len = strcspn(p, "|");

		if (len == n && strncmp(p, a->s, n) == 0)
			return 0;
		p += len + (p[len] == '|');
	}
	snprintf(err, errlen, "arguments: %s=%s: must be one of %s", a->name,
		 a->s, values);
	return -1;
}

int qarg_check(const struct qarg *a, char *err, size_t errlen)
{
	for (int i = 0; owned_args[i].name != NULL; i++)
		if (strcmp(a->name, owned_args[i].name) == 0) {
			snprintf(err, errlen,
				 "arguments: %s is set by the key %s, not as "
				 "an argument",
				 a->name, owned_args[i].use);
			return -1;
		}
	for (int i = 0; int_args[i].name != NULL; i++) {
		if (strcmp(a->name, int_args[i].name) != 0)
			continue;
		if (a->kind != QARG_INT || a->i < int_args[i].lo ||
		    a->i > int_args[i].hi) {
			snprintf(err, errlen,
				 "arguments: %s must be an integer from %lld "
				 "to %lld",
				 a->name, int_args[i].lo, int_args[i].hi);
			return -1;
		}
	}
	if (strcmp(a->name, "x-single-active-consumer") == 0 &&
	    a->kind != QARG_BOOL) {
		snprintf(err, errlen,
			 "arguments: x-single-active-consumer must be true or "
			 "false");
		return -1;
	}
	for (int i = 0; enum_args[i].name != NULL; i++)
		if (strcmp(a->name, enum_args[i].name) == 0)
			return check_enum(a, enum_args[i].values, err, errlen);
	return 0;
}

const struct qarg *qarg_find(const struct qarg *args, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(args[i].name, name) == 0)
			return &args[i];
	return NULL;
}

void qarg_free(struct qarg *a)
{
	free(a->name);
	free(a->s);
	a->name = a->s = NULL;
}

bool exchange_type_known(const char *type)
{
	static const char *const types[] = {"direct", "topic", "fanout",
					    "headers", NULL};

	return in_list(types, type);
}

int exchange_name_check(const char *name, char *err, size_t errlen)
{
	size_t n = strlen(name);

	if (n == 0) {
		snprintf(err, errlen,
			 "bind \"\": the default exchange routes by queue "
			 "name already and takes no bindings");
		return -1;
	}
	if (n > AMQP_SHORTSTR_MAX || !printable(name, n)) {
		snprintf(err, errlen,
			 "bind: an exchange name must be 1 to 255 printable "
			 "characters");
		return -1;
	}
	return 0;
}

int routing_key_check(const char *key, char *err, size_t errlen)
{
	size_t n = strlen(key);

	if (n > AMQP_SHORTSTR_MAX || !printable(key, n)) {
		snprintf(err, errlen,
			 "bind: keys: \"%.40s\": a routing key is at most 255 "
			 "printable characters",
			 key);
		return -1;
	}
	return 0;
}

static bool args_same(const struct queue_conf *a, const struct queue_conf *b)
{
	if (a->nargs != b->nargs)
		return false;
	for (int i = 0; i < a->nargs; i++) {
		const struct qarg *x = &a->args[i], *y = &b->args[i];

		if (strcmp(x->name, y->name) != 0 || x->kind != y->kind ||
		    x->i != y->i || x->b != y->b ||
		    (x->kind == QARG_STR && strcmp(x->s, y->s) != 0))
			return false;
	}
	return true;
}

static bool binds_same(const struct queue_conf *a, const struct queue_conf *b)
{
	if (a->nbinds != b->nbinds)
		return false;
	for (int i = 0; i < a->nbinds; i++) {
		const struct bind_conf *x = &a->binds[i], *y = &b->binds[i];

		if (strcmp(x->exchange, y->exchange) != 0 ||
		    strcmp(x->type, y->type) != 0 || x->nkeys != y->nkeys)
			return false;
		for (int k = 0; k < x->nkeys; k++)
			if (strcmp(x->keys[k], y->keys[k]) != 0)
				return false;
	}
	return true;
}

bool topology_same(const struct queue_conf *a, const struct queue_conf *b)
{
	return a->declare == b->declare &&
	       a->delivery_limit == b->delivery_limit && args_same(a, b) &&
	       binds_same(a, b);
}

void topology_free(struct queue_conf *q)
{
	for (int i = 0; i < q->nargs; i++)
		qarg_free(&q->args[i]);
	free(q->args);
	for (int i = 0; i < q->nbinds; i++) {
		struct bind_conf *b = &q->binds[i];

		free(b->exchange);
		free(b->type);
		for (int k = 0; k < b->nkeys; k++)
			free(b->keys[k]);
		free(b->keys);
	}
	free(q->binds);
	q->args = NULL;
	q->binds = NULL;
	q->nargs = q->nbinds = 0;
}
