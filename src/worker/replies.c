/*
 * replies.c: queue.reply. A handler's result (an exec handler's stdout, a
 * persistent handler's answer) kept up to RESULT_MAX bytes, and the reply
 * published to a message's reply_to before the message is acked.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker_int.h"

bool reply_due(const struct queue_conf *q, const struct delivery *d)
{
	return q->reply && d != NULL && d->reply_to != NULL &&
	       d->reply_to[0] != '\0';
}

void reply_check_result(struct outcome *o, bool too_large)
{
	if (o->kind != OUTCOME_ACK || !too_large)
		return;
	o->kind = OUTCOME_FAILED;
	snprintf(o->reason, sizeof(o->reason), "result over %d MiB",
		 RESULT_MAX >> 20);
}

int reply_publish(struct mq *m, const struct delivery *d, bool ok,
		  const char *reason, const void *body, size_t len)
{
	struct publish p = {0};
	struct header h[2];
	int n = 0;

	h[n].name = (char *)"x-warren-outcome";
	h[n].value = (char *)(ok ? "ok" : "failed");
	h[n].len = strlen(h[n].value);
	h[n++].integer = false;
	if (!ok) {
		h[n].name = (char *)"x-warren-reason";
		h[n].value = (char *)reason;
		h[n].len = strlen(reason);
		h[n++].integer = false;
	}
	p.routing_key = d->reply_to;
	p.correlation_id = d->correlation_id;
	p.not_mandatory = true;
	p.body = ok ? body : "";
	p.body_len = ok ? len : 0;
	p.headers = h;
	p.nheaders = n;
	return mq_publish(m, &p);
}
