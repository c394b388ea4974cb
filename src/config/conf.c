/*
 * conf.c: the loaded configuration as plain structs (no libconfuse):
 * lookup, the comparison a reload makes, freeing, the checks across
 * queues and the warnings of -t.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config_int.h"

/* NAME.failed or NAME.retry.<N>s of one queue may not be another queue. */
static bool is_side_queue(const char *name, const char *of)
{
	size_t n = strlen(of);
	const char *rest = name + n;
	char *end;

	if (strncmp(name, of, n) != 0)
		return false;
	if (strcmp(rest, ".failed") == 0)
		return true;
	if (strncmp(rest, ".retry.", 7) != 0)
		return false;
	strtol(rest + 7, &end, 10);
	return end != rest + 7 && strcmp(end, "s") == 0;
}

int config_check_names(const struct config *cf, char *err, size_t errlen)
{
	for (int i = 0; i < cf->nqueues; i++)
		for (int j = 0; j < cf->nqueues; j++)
			if (i != j && is_side_queue(cf->queues[i].name,
						    cf->queues[j].name)) {
				snprintf(
				    err, errlen,
				    "%s:%d: queue \"%s\" is where warren puts "
				    "messages of queue \"%s\"",
				    cf->queues[i].file, cf->queues[i].line,
				    cf->queues[i].name, cf->queues[j].name);
				return -1;
			}
	return 0;
}

static void free_list(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p != NULL; p++)
		free(*p);
	free(v);
}

void config_free(struct config *cf)
{
	if (cf == NULL)
		return;
	for (int i = 0; i < cf->nqueues; i++) {
		struct queue_conf *q = &cf->queues[i];

		free(q->name);
		free(q->file);
		free_list(q->command);
		free_list(q->environment);
		free(q->workdir);
		free(q->user);
		free(q->group);
		identity_free(&q->id);
		topology_free(q);
	}
	free(cf->queues);
	free(cf->control_socket);
	free(cf->metrics_listen);
	free_list(cf->broker.urls);
	free(cf->broker.password_file);
	free(cf->broker.tls.ca_cert);
	free(cf->broker.tls.cert);
	free(cf->broker.tls.key);
	free(cf->path);
	free(cf);
}

const struct queue_conf *config_queue(const struct config *cf, const char *name)
{
	for (int i = 0; i < cf->nqueues; i++)
		if (strcmp(cf->queues[i].name, name) == 0)
			return &cf->queues[i];
	return NULL;
}

static bool lists_equal(char **a, char **b)
{
	for (; *a != NULL && *b != NULL; a++, b++)
		if (strcmp(*a, *b) != 0)
			return false;
	return *a == NULL && *b == NULL;
}

#define SAME_STR(x, y)                                                         \
	((x) == NULL ? (y) == NULL : (y) != NULL && strcmp((x), (y)) == 0)

bool queue_conf_same_but_workers(const struct queue_conf *a,
				 const struct queue_conf *b)
{
	return strcmp(a->name, b->name) == 0 &&
	       lists_equal(a->command, b->command) &&
	       a->prefetch == b->prefetch && a->timeout == b->timeout &&
	       a->kill_grace == b->kill_grace && a->durable == b->durable &&
	       a->type == b->type && a->retry.attempts == b->retry.attempts &&
	       a->retry.delay == b->retry.delay &&
	       a->retry.backoff == b->retry.backoff &&
	       a->retry.max_delay == b->retry.max_delay && a->park == b->park &&
	       lists_equal(a->environment, b->environment) &&
	       strcmp(a->workdir, b->workdir) == 0 && a->mode == b->mode &&
	       a->max_messages == b->max_messages && a->reply == b->reply &&
	       a->breaker.on == b->breaker.on &&
	       a->breaker.cooldown == b->breaker.cooldown &&
	       a->breaker.failures == b->breaker.failures &&
	       a->max_rss == b->max_rss && a->max_age == b->max_age &&
	       a->slow == b->slow && a->max_body == b->max_body &&
	       SAME_STR(a->user, b->user) && SAME_STR(a->group, b->group) &&
	       identity_same(&a->id, &b->id) &&
	       memcmp(&a->limits, &b->limits, sizeof(a->limits)) == 0 &&
	       topology_same(a, b);
}

bool config_password_exposed(const struct config *cf, char *buf, size_t len)
{
	struct stat st;
	const char *f = cf->broker.password_file;

	if (f == NULL || stat(f, &st) != 0 || (st.st_mode & S_IROTH) == 0)
		return false;
	snprintf(buf, len,
		 "%s: password_file %s is readable by other users (mode %04o): "
		 "chmod o-r it",
		 cf->path, f, (unsigned)(st.st_mode & 07777));
	return true;
}

int config_warnings(const struct config *cf, FILE *out)
{
	char why[600];
	int n = 0;

	if (config_password_exposed(cf, why, sizeof(why))) {
		fprintf(out, "warning: %s\n", why);
		n++;
	}

	for (int i = 0; i < cf->nqueues; i++) {
		const struct queue_conf *q = &cf->queues[i];

		if (q->timeout == 0) {
			fprintf(out,
				"%s:%d: warning: queue \"%s\": timeout = 0 "
				"(none): a handler is stopped only before "
				"broker.consumer_timeout (%d s)\n",
				q->file, q->line, q->name,
				cf->broker.consumer_timeout);
			n++;
		} else if (q->timeout >= cf->broker.consumer_timeout) {
			fprintf(out,
				"%s:%d: warning: queue \"%s\": timeout = %d is "
				"not below broker.consumer_timeout = %d\n",
				q->file, q->line, q->name, q->timeout,
				cf->broker.consumer_timeout);
			n++;
		}
		if (q->type == QUEUE_QUORUM && q->declare &&
		    q->delivery_limit < q->retry.attempts) {
			fprintf(
			    out,
			    "%s:%d: warning: queue \"%s\": delivery_limit = "
			    "%d is below retry attempts = %d: the broker "
			    "parks a message that keeps losing its worker "
			    "before warrend has spent its attempts\n",
			    q->file, q->line, q->name, q->delivery_limit,
			    q->retry.attempts);
			n++;
		}
		if (q->mode == MODE_EXEC &&
		    (q->max_messages > 0 || q->max_rss > 0 || q->max_age > 0)) {
			fprintf(out,
				"%s:%d: warning: queue \"%s\": max_messages, "
				"max_rss and max_age apply to mode = "
				"\"persistent\" only\n",
				q->file, q->line, q->name);
			n++;
		}
	}
	return n;
}
