/*
 * check.c: the checks of configuration values on plain strings and
 * numbers (no libconfuse): each says in words what is wrong, and
 * config.c places the words at their file and line.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "config/config_int.h"

#define YEAR (86400L * 365)

/* The integer keys' ranges, by key name (no two keys share one); a limit
 * (queue.limits) may also be 0, for none. */
static const struct int_range {
	const char *name;
	long lo, hi;
	bool limit;
} ranges[] = {
    {"heartbeat", 0, 65535, false},
    {"connect_timeout", 1, 3600, false},
    {"consumer_timeout", 1, 86400 * 7, false},
    {"shutdown_timeout", 0, YEAR, false},
    {"workers", 0, 1024, false},
    {"max_workers", 1, 1024, false},
    {"idle_timeout", 1, 86400, false},
    {"prefetch", 1, 65535, false},
    {"timeout", 0, YEAR, false},
    {"kill_grace", 0, 3600, false},
    {"attempts", 1, 1000, false},
    {"delay", 0, YEAR, false},
    {"max_delay", 0, YEAR, false},
    {"max_messages", 0, 1000000000, false},
    {"max_rss", 0, 1048576, false},
    {"max_age", 0, YEAR, false},
    {"slow", 0, YEAR, false},
    {"max_body", 1, 1048576, false}, /* MiB: 1 MiB to 1 TiB */
    {"delivery_limit", 1, 1000000, false},
    {"cooldown", 1, 86400, false},
    {"failures", 0, 1000000, false},
    {"memory", 16, 16L * 1024 * 1024, true}, /* MiB: 16 to 16 TiB */
    {"cpu", 1, YEAR, true},
    {"processes", 1, 4194304, true}, /* the kernel's pid_max limit */
    {"files", 3, 1 << 20, true},     /* fs.nr_open's default */
};

int conf_check_int(const char *name, long v, char *why, size_t len)
{
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		const struct int_range *r = &ranges[i];

		if (strcmp(r->name, name) != 0)
			continue;
		if ((r->limit && v == 0) || (v >= r->lo && v <= r->hi))
			return 0;
		snprintf(why, len, "%s = %ld is out of range (%s%ld to %ld)",
			 name, v, r->limit ? "0 for none, or " : "", r->lo,
			 r->hi);
		return -1;
	}
	snprintf(why, len, "%s: no range is known for it", name);
	return -1;
}

int conf_check_user(const char *v, char *why, size_t len)
{
	uid_t uid;
	gid_t gid;

	if (v == NULL || v[0] == '\0' || identity_user(v, &uid, &gid) != 0) {
		snprintf(why, len, "user = \"%s\": no such user", v ? v : "");
		return -1;
	}
	return 0;
}

int conf_check_group(const char *v, char *why, size_t len)
{
	gid_t gid;

	if (v == NULL || v[0] == '\0' || identity_group(v, &gid) != 0) {
		snprintf(why, len, "group = \"%s\": no such group", v ? v : "");
		return -1;
	}
	return 0;
}

int conf_check_backoff(double v, char *why, size_t len)
{
	if (!(v >= 1.0 && v <= 100.0)) {
		snprintf(why, len,
			 "backoff = %g is out of range (1.0 to 100.0)", v);
		return -1;
	}
	return 0;
}

int conf_check_type(const char *v, char *why, size_t len)
{
	if (strcmp(v, "classic") != 0 && strcmp(v, "quorum") != 0) {
		snprintf(why, len,
			 "type = \"%s\": must be \"classic\" or \"quorum\"", v);
		return -1;
	}
	return 0;
}

int conf_check_mode(const char *v, char *why, size_t len)
{
	if (strcmp(v, "exec") != 0 && strcmp(v, "persistent") != 0) {
		snprintf(why, len,
			 "mode = \"%s\": must be \"exec\" or \"persistent\"",
			 v);
		return -1;
	}
	return 0;
}

int conf_check_url(const char *v, char *why, size_t len)
{
	char err[256];

	if (mq_url_check(v, err, sizeof(err)) != 0) {
		snprintf(why, len, "url: %s", err);
		return -1;
	}
	return 0;
}

int conf_check_control_socket(const char *v, char *why, size_t len)
{
	struct sockaddr_un sun;

	if (v == NULL || v[0] == '\0')
		return 0; /* off */
	if (v[0] != '/') {
		snprintf(why, len,
			 "control_socket = \"%s\": must be an absolute "
			 "path, or \"\" for none",
			 v);
		return -1;
	}
	if (strlen(v) >= sizeof(sun.sun_path)) {
		snprintf(why, len, "control_socket: longer than %zu bytes",
			 sizeof(sun.sun_path) - 1);
		return -1;
	}
	return 0;
}

int conf_check_listen(const char *v, char *why, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl;

	if (v == NULL || v[0] == '\0')
		return 0; /* off */
	if (parse_listen(v, &ss, &sl) != 0) {
		snprintf(why, len,
			 "listen = \"%s\": must be \"ADDRESS:PORT\" with "
			 "an IP address, e.g. \"127.0.0.1:9640\" or "
			 "\"[::1]:9640\"",
			 v);
		return -1;
	}
	return 0;
}

int conf_check_environment(const char *e, char *why, size_t len)
{
	const char *eq = strchr(e, '=');

	if (eq == NULL || eq == e) {
		snprintf(why, len, "environment: \"%s\" is not NAME=value", e);
		return -1;
	}
	if (strncmp(e, "WARREN_", 7) == 0) {
		snprintf(why, len, "environment: %.*s is reserved for warren",
			 (int)(eq - e), e);
		return -1;
	}
	return 0;
}

int conf_check_command(const char *v, char *why, size_t len)
{
	if (strchr(v, '/') == NULL) {
		/* execve does not search PATH, and warren never guesses */
		snprintf(why, len,
			 "command \"%s\" must be a path (like /usr/bin/%s)", v,
			 v);
		return -1;
	}
	return 0;
}

int conf_check_workdir(const char *v, char *why, size_t len)
{
	if (v[0] != '/') {
		snprintf(why, len, "workdir = \"%s\": must be an absolute path",
			 v);
		return -1;
	}
	return 0;
}

int conf_check_arguments(const char *const *v, int n, char *why, size_t len)
{
	struct qarg *a = xcalloc((size_t)n + 1, sizeof(*a));
	int r = 0;

	for (int i = 0; r == 0 && i < n; i++) {
		r = qarg_parse(v[i], &a[i], why, len);
		if (r == 0)
			r = qarg_check(&a[i], why, len);
		if (r == 0 && qarg_find(a, i, a[i].name) != NULL) {
			snprintf(why, len, "arguments: %s is given twice",
				 a[i].name);
			r = -1;
		}
	}
	for (int i = 0; i < n; i++)
		qarg_free(&a[i]);
	free(a);
	return r;
}

int conf_check_exchange_type(const char *v, char *why, size_t len)
{
	if (!exchange_type_known(v)) {
		snprintf(why, len,
			 "type = \"%s\": an exchange type is \"direct\", "
			 "\"topic\", \"fanout\" or \"headers\"",
			 v);
		return -1;
	}
	return 0;
}

/* The checks across a queue's topology keys. */
static int topology_bad(const struct queue_keys *k, char *why, size_t len)
{
	if (!k->declare && k->nargs > 0) {
		snprintf(why, len,
			 "queue \"%s\": arguments are given at declare only: "
			 "with declare = false they would never be used",
			 k->name);
		return -1;
	}
	if (k->delivery_limit != -1 && (!k->quorum || !k->declare)) {
		snprintf(why, len,
			 "queue \"%s\": delivery_limit is for a quorum "
			 "queue that warrend declares (type = \"quorum\", "
			 "declare = true)",
			 k->name);
		return -1;
	}
	for (int i = 0; k->quorum && i < k->nargs; i++)
		if (strncmp(k->args[i], "x-max-priority=", 15) == 0) {
			snprintf(why, len,
				 "queue \"%s\": a quorum queue has no "
				 "priorities (x-max-priority needs type = "
				 "\"classic\")",
				 k->name);
			return -1;
		}
	return 0;
}

/* max_workers: unset (-1), or at least workers, which must be 1 or more
 * for the pool to see its backlog. */
static int elastic_bad(const struct queue_keys *k, char *why, size_t len)
{
	long w = k->workers, max = k->max_workers;

	if (max < 0 || max == w)
		return 0;
	if (max < w) {
		snprintf(why, len,
			 "queue \"%s\": max_workers = %ld is below workers = "
			 "%ld",
			 k->name, max, w);
		return -1;
	}
	if (w == 0) {
		snprintf(why, len,
			 "queue \"%s\": max_workers needs workers = 1 or more "
			 "(a pool grows on what its workers see)",
			 k->name);
		return -1;
	}
	return 0;
}

int conf_check_queue_keys(const struct queue_keys *k, char *why, size_t len)
{
	if (strncmp(k->name, "amq.", 4) == 0) {
		snprintf(why, len,
			 "queue \"%s\": names starting with amq. are "
			 "reserved by RabbitMQ",
			 k->name);
		return -1;
	}
	if (k->quorum && !k->durable) {
		snprintf(why, len,
			 "queue \"%s\": a quorum queue is always durable "
			 "(remove durable = false)",
			 k->name);
		return -1;
	}
	if (k->has_group && !k->has_user) {
		snprintf(why, len, "queue \"%s\": group needs user", k->name);
		return -1;
	}
	if (elastic_bad(k, why, len) != 0)
		return -1;
	if (k->max_delay < k->delay) {
		snprintf(why, len,
			 "queue \"%s\": retry max_delay is below delay",
			 k->name);
		return -1;
	}
	return topology_bad(k, why, len);
}
