/*
 * outcome.c: SPEC.md's outcome table as pure functions of the handler's
 * result, the attempt number and the queue's retry settings.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <sys/wait.h>

#include "model/model.h"

int retry_delay(const struct retry_conf *rc, int n)
{
	double d;

	if (n < 1)
		n = 1;
	d = rc->delay * pow(rc->backoff, n - 1);
	if (d > rc->max_delay || !isfinite(d))
		d = rc->max_delay;
	if (d < 1)
		d = 1; /* a TTL of 0 would not delay at all */
	return (int)d;
}

/* "exit N" or "signal N" for a wait status; false if it is neither */
static bool status_words(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exit %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "signal %d", WTERMSIG(st));
	else
		return false;
	return true;
}

void result_died(struct handler_result *r, int wait_status)
{
	r->started = true;
	r->wait_status = wait_status;
	r->answered = true;
	r->answer = ANSWER_RETRY;
	if (!status_words(wait_status, r->reason, sizeof(r->reason)))
		snprintf(r->reason, sizeof(r->reason), "died");
}

struct outcome outcome_of(const struct handler_result *r, int attempt,
			  const struct retry_conf *rc)
{
	struct outcome o = {OUTCOME_FAILED, "", 0};

	if (!r->started) {
		o.kind = OUTCOME_REQUEUED;
		snprintf(o.reason, sizeof(o.reason), "could not start");
		return o;
	}
	if (r->cpu_limited) {
		snprintf(o.reason, sizeof(o.reason), "cpu limit %ds",
			 r->cpu_limit);
	} else if (r->timed_out) {
		snprintf(o.reason, sizeof(o.reason), "%s %ds",
			 r->consumer_timeout ? "consumer_timeout" : "timeout",
			 r->timeout);
	} else if (r->answered) {
		snprintf(o.reason, sizeof(o.reason), "%s", r->reason);
		if (r->answer == ANSWER_OK) {
			o.kind = OUTCOME_ACK;
			return o;
		}
		if (r->answer == ANSWER_FAIL)
			return o; /* the handler says: the message is bad */
	} else if (status_words(r->wait_status, o.reason, sizeof(o.reason))) {
		int st = WEXITSTATUS(r->wait_status);

		if (WIFEXITED(r->wait_status) && st == 0) {
			o.kind = OUTCOME_ACK;
			return o;
		}
		if (WIFEXITED(r->wait_status) && st == EX_DATAERR_STATUS)
			return o; /* the message itself is bad */
	}
	if (attempt < rc->attempts) {
		o.kind = OUTCOME_RETRY;
		o.delay = retry_delay(rc, attempt);
	}
	return o;
}

const char *outcome_name(enum outcome_kind k)
{
	switch (k) {
	case OUTCOME_ACK:
		return "ack";
	case OUTCOME_RETRY:
		return "retry";
	case OUTCOME_FAILED:
		return "failed";
	case OUTCOME_REQUEUED:
		return "requeued";
	}
	return "?";
}

int64_t consumer_deadline(int64_t received, int ct_ms, int kill_grace,
			  int *grace_ms)
{
	int margin = ct_ms / 10, grace;

	if (margin < 1000)
		margin = 1000;
	if (margin > 60000)
		margin = 60000;
	if (margin > ct_ms / 2)
		margin = ct_ms / 2; /* a tiny timeout still leaves some */
	grace = (ct_ms - margin) / 3;
	if (grace > kill_grace * 1000)
		grace = kill_grace * 1000;
	*grace_ms = grace;
	return received + ct_ms - margin - grace;
}

bool outcome_tempfail(const struct handler_result *r)
{
	if (!r->started || r->timed_out || r->cpu_limited)
		return false;
	if (r->answered)
		return r->answer == ANSWER_TEMPFAIL;
	return WIFEXITED(r->wait_status) &&
	       WEXITSTATUS(r->wait_status) == EX_TEMPFAIL_STATUS;
}

struct outcome outcome_oversize(const struct delivery *d, int max_body)
{
	struct outcome o = {OUTCOME_FAILED, "", 0};

	snprintf(o.reason, sizeof(o.reason),
		 "body %zu bytes over max_body %d MiB%s", d->body_over,
		 max_body, d->body == NULL ? ", not kept" : "");
	return o;
}
