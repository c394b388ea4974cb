/*
 * health.c: the answer to GET /health on the metrics listener, for load
 * balancers and orchestrators: "ok", or one line per problem (a queue
 * not paused with no worker consuming; no worker able to reach the
 * broker). Read from the master's view of the worker table; pure.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "pool.h"
#include "master/master.h"

/* A worker that is connected and consuming, busy or not. */
static bool consuming(const struct slot *s)
{
	return s->pid != 0 && !s->retiring &&
	       (s->state == REPORT_CONSUMING || s->state == REPORT_BUSY);
}

/* A queue that should consume and has no worker doing it. */
static void queue_problem(FILE *f, const struct pool *p)
{
	if (p->removed || p->paused || p->q->workers == 0)
		return;
	for (int i = 0; i < p->nslots; i++)
		if (consuming(p->slots[i]))
			return;
	fprintf(f, "queue %s: no worker consuming", p->q->name);
	if (p->last_error[0] != '\0')
		fprintf(f, " (%s)", p->last_error);
	fputc('\n', f);
}

/* Every worker of every pool last ended unable to reach the broker. */
static void broker_problem(FILE *f, const struct pool *pools)
{
	int n = 0;

	for (const struct pool *p = pools; p != NULL; p = p->next)
		for (int i = 0; i < p->nslots; i++) {
			const struct slot *s = p->slots[i];

			if (s->retiring)
				continue;
			if (!s->unreachable || consuming(s))
				return;
			n++;
		}
	if (n > 0)
		fprintf(f, "broker: none of the %d worker%s can reach it\n", n,
			n == 1 ? "" : "s");
}

char *health_text(const struct master_view *v, int *code)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (f == NULL)
		fatal("open_memstream");
	if (v->stopping)
		fputs("warrend: stopping\n", f);
	broker_problem(f, v->pools);
	for (const struct pool *p = v->pools; p != NULL; p = p->next)
		queue_problem(f, p);
	fclose(f);
	*code = len == 0 ? 200 : 503;
	if (len == 0) {
		free(text);
		text = xstrdup("ok\n");
	}
	return text;
}
