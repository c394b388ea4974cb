/* test_outcome.c: every row of SPEC.md's outcome table, and retry_delay. */
#include "config.h"

#include <signal.h>
#include <sys/wait.h>

#include "model/model.h"
#include "unit.h"

static struct handler_result exited(int code)
{
	struct handler_result r = {0};

	r.started = true;
	r.wait_status = (code & 0xff) << 8; /* as waitpid() builds it */
	CHECK(WIFEXITED(r.wait_status) && WEXITSTATUS(r.wait_status) == code);
	return r;
}

static struct handler_result signalled(int sig)
{
	struct handler_result r = {0};

	r.started = true;
	r.wait_status = sig;
	CHECK(WIFSIGNALED(r.wait_status) && WTERMSIG(r.wait_status) == sig);
	return r;
}

static struct handler_result answered(enum answer_kind k, const char *why)
{
	struct handler_result r = {0};

	r.started = r.answered = true;
	r.answer = k;
	snprintf(r.reason, sizeof(r.reason), "%s", why);
	return r;
}

/* A body over max_body: failed for good, its reason names size and limit. */
static void test_oversize(void)
{
	char b = 'x';
	struct delivery d = {.body = &b, .body_len = 1, .body_over = 2097153};
	struct outcome o = outcome_oversize(&d, 1);

	CHECK(o.kind == OUTCOME_FAILED && o.delay == 0);
	CHECK_STR(o.reason, "body 2097153 bytes over max_body 1 MiB");
	d.body = NULL;
	o = outcome_oversize(&d, 512);
	CHECK_STR(o.reason,
		  "body 2097153 bytes over max_body 512 MiB, not kept");
}

int main(void)
{
	struct retry_conf rc = {3, 1, 2.0, 3600};
	struct retry_conf dflt = {5, 10, 2.0, 3600};
	struct retry_conf once = {1, 10, 2.0, 3600};
	struct handler_result r;
	struct outcome o;

	/* exit 0: ack, whatever the attempt */
	r = exited(0);
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_ACK);
	o = outcome_of(&r, 3, &rc);
	CHECK(o.kind == OUTCOME_ACK);

	/* exit 65: parked at once, even with attempts left */
	r = exited(65);
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_FAILED);
	CHECK_STR(o.reason, "exit 65");

	/* any other exit: retried until the last attempt, then failed */
	r = exited(3);
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY);
	CHECK(o.delay == 1);
	CHECK_STR(o.reason, "exit 3");
	o = outcome_of(&r, 2, &rc);
	CHECK(o.kind == OUTCOME_RETRY);
	CHECK(o.delay == 2);
	o = outcome_of(&r, 3, &rc);
	CHECK(o.kind == OUTCOME_FAILED);
	o = outcome_of(&r, 1, &once);
	CHECK(o.kind == OUTCOME_FAILED);
	r = exited(1);
	o = outcome_of(&r, 1, &dflt);
	CHECK(o.kind == OUTCOME_RETRY && o.delay == 10);

	/* a signal: retried, reason names it */
	r = signalled(SIGSEGV);
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY);
	CHECK_STR(o.reason, "signal 11");
	r = signalled(SIGKILL);
	o = outcome_of(&r, 3, &rc);
	CHECK(o.kind == OUTCOME_FAILED);
	CHECK_STR(o.reason, "signal 9");

	/* the timeout wins over the signal that ended the handler */
	r = signalled(SIGTERM);
	r.timed_out = true;
	r.timeout = 30;
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY);
	CHECK_STR(o.reason, "timeout 30s");
	r = exited(0);
	r.timed_out = true;
	r.timeout = 5;
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY); /* a late exit 0 still timed out */

	/* the CPU limit: SIGXCPU in exec mode, the worker's stop in
	 * persistent mode; a failed attempt like any other */
	r = signalled(SIGXCPU);
	r.cpu_limited = true;
	r.cpu_limit = 2;
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY);
	CHECK_STR(o.reason, "cpu limit 2s");
	o = outcome_of(&r, rc.attempts, &rc);
	CHECK(o.kind == OUTCOME_FAILED);
	CHECK_STR(o.reason, "cpu limit 2s");
	r = signalled(SIGKILL);
	r.timed_out = r.answered = true; /* persistent: stopped by the worker */
	r.answer = ANSWER_OK;
	r.cpu_limited = true;
	r.cpu_limit = 7;
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY);
	CHECK_STR(o.reason, "cpu limit 7s");
	r = signalled(SIGXCPU); /* no limit of ours: the signal's number */
	o = outcome_of(&r, 1, &rc);
	CHECK_STR(o.reason, "signal 24");

	/* could not start: requeued, never parked */
	r = (struct handler_result){0};
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_REQUEUED);
	o = outcome_of(&r, 99, &rc);
	CHECK(o.kind == OUTCOME_REQUEUED);

	/* retry_delay: delay * backoff^(n-1), capped, never below 1 s */
	CHECK(retry_delay(&dflt, 1) == 10);
	CHECK(retry_delay(&dflt, 2) == 20);
	CHECK(retry_delay(&dflt, 3) == 40);
	CHECK(retry_delay(&dflt, 9) == 2560);
	CHECK(retry_delay(&dflt, 10) == 3600);
	CHECK(retry_delay(&dflt, 1000) == 3600);
	struct retry_conf zero = {5, 0, 2.0, 0};
	CHECK(retry_delay(&zero, 1) == 1);
	struct retry_conf flat = {5, 7, 1.0, 3600};
	CHECK(retry_delay(&flat, 4) == 7);

	CHECK_STR(outcome_name(OUTCOME_ACK), "ack");
	CHECK_STR(outcome_name(OUTCOME_RETRY), "retry");
	CHECK_STR(outcome_name(OUTCOME_FAILED), "failed");
	CHECK_STR(outcome_name(OUTCOME_REQUEUED), "requeued");
	/* persistent mode: the answer decides, with its reason */
	r = answered(ANSWER_OK, "ok");
	o = outcome_of(&r, 3, &rc);
	CHECK(o.kind == OUTCOME_ACK);
	CHECK_STR(o.reason, "ok");
	r = answered(ANSWER_RETRY, "db busy");
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY && o.delay == 1);
	CHECK_STR(o.reason, "db busy");
	o = outcome_of(&r, 3, &rc); /* the last attempt: parked */
	CHECK(o.kind == OUTCOME_FAILED);
	CHECK_STR(o.reason, "db busy");
	r = answered(ANSWER_FAIL, "fail");
	o = outcome_of(&r, 1, &rc); /* failed for good at once, like 65 */
	CHECK(o.kind == OUTCOME_FAILED);
	CHECK_STR(o.reason, "fail");
	/* a timeout wins over whatever was said */
	r = answered(ANSWER_OK, "ok");
	r.timed_out = true;
	r.timeout = 7;
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY);
	CHECK_STR(o.reason, "timeout 7s");

	/* a persistent handler that died holding a message: one attempt,
	 * even when it exits 0 or 65 */
	r = (struct handler_result){0};
	result_died(&r, 0);
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY);
	CHECK_STR(o.reason, "exit 0");
	r = (struct handler_result){0};
	result_died(&r, 65 << 8);
	o = outcome_of(&r, 1, &rc);
	CHECK(o.kind == OUTCOME_RETRY);
	CHECK_STR(o.reason, "exit 65");
	r = (struct handler_result){0};
	result_died(&r, SIGKILL);
	o = outcome_of(&r, 3, &rc);
	CHECK(o.kind == OUTCOME_FAILED);
	CHECK_STR(o.reason, "signal 9");

	test_oversize();
	return unit_done("test_outcome");
}
