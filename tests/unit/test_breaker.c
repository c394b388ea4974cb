/* test_breaker.c: the circuit breaker's state machine (breaker.c). */
#include "config.h"

#include <sys/wait.h>

#include "master/master.h"
#include "unit.h"

static const struct breaker_conf conf = {true, 30, 0};
static const struct breaker_conf counting = {true, 10, 3};

static void check_tempfail_results(void)
{
	struct handler_result r = {0};

	r.started = true;
	r.wait_status = 75 << 8; /* exit 75 */
	CHECK(WIFEXITED(r.wait_status) && WEXITSTATUS(r.wait_status) == 75);
	CHECK(outcome_tempfail(&r));
	r.wait_status = 3 << 8;
	CHECK(!outcome_tempfail(&r));
	r.wait_status = 75 << 8;
	r.timed_out = true; /* a timeout is a failure, whatever the status */
	CHECK(!outcome_tempfail(&r));
	r.timed_out = false;
	r.answered = true; /* persistent: the answer decides */
	r.answer = ANSWER_RETRY;
	CHECK(!outcome_tempfail(&r));
	r.answer = ANSWER_TEMPFAIL;
	CHECK(outcome_tempfail(&r));
	r.started = false;
	CHECK(!outcome_tempfail(&r));
}

/* exit 75: open for the cooldown, half-open, a probe closes it */
static void check_open_probe_close(void)
{
	struct breaker b = {0};

	CHECK(!breaker_holds(&b));
	CHECK(breaker_next(&b, 0) == -1);
	CHECK(breaker_event(&b, &conf, BREAKER_EV_SUCCESS, 0) == BREAKER_STAY);
	CHECK(breaker_event(&b, &conf, BREAKER_EV_FAILURE, 0) == BREAKER_STAY);
	CHECK(breaker_event(&b, &conf, BREAKER_EV_TEMPFAIL, 1000) ==
	      BREAKER_OPENED);
	CHECK(b.state == BREAKER_OPEN && breaker_holds(&b));
	CHECK(b.openings == 1);
	CHECK(breaker_next(&b, 1000) == 30000);
	/* outcomes of messages that were running: no news */
	CHECK(breaker_event(&b, &conf, BREAKER_EV_TEMPFAIL, 2000) ==
	      BREAKER_STAY);
	CHECK(breaker_event(&b, &conf, BREAKER_EV_SUCCESS, 2000) ==
	      BREAKER_STAY);
	CHECK(b.openings == 1 && b.state == BREAKER_OPEN);
	CHECK(breaker_tick(&b, 30999) == BREAKER_STAY);
	CHECK(breaker_tick(&b, 31000) == BREAKER_PROBE);
	CHECK(b.state == BREAKER_HALF_OPEN && breaker_holds(&b));
	CHECK(breaker_next(&b, 31000) == -1);
	b.probing = true; /* the master sent it */
	CHECK(breaker_tick(&b, 32000) == BREAKER_STAY);
	/* a probe that never ran: another one */
	breaker_probe_lost(&b);
	CHECK(breaker_tick(&b, 32000) == BREAKER_PROBE);
	b.probing = true;
	CHECK(breaker_event(&b, &conf, BREAKER_EV_SUCCESS, 33000) ==
	      BREAKER_CLOSED_NOW);
	CHECK(b.state == BREAKER_CLOSED && !breaker_holds(&b));
	CHECK(!b.probing);
}

/* a failed probe opens it again, the cooldown doubling up to 10 x */
static void check_backoff(void)
{
	struct breaker b = {0};
	int64_t now = 0;
	int want[] = {30000, 60000, 120000, 240000, 300000, 300000};

	CHECK(breaker_event(&b, &conf, BREAKER_EV_TEMPFAIL, now) ==
	      BREAKER_OPENED);
	for (int i = 0; i < 6; i++) {
		CHECK(b.cooldown_ms == want[i]);
		now = b.until;
		CHECK(breaker_tick(&b, now) == BREAKER_PROBE);
		b.probing = true;
		CHECK(breaker_event(&b, &conf,
				    i % 2 ? BREAKER_EV_FAILURE
					  : BREAKER_EV_TEMPFAIL,
				    now) == BREAKER_OPENED);
	}
	CHECK(b.openings == 7);
	/* closed again: the next opening starts from the configured one */
	now = b.until;
	breaker_tick(&b, now);
	CHECK(breaker_event(&b, &conf, BREAKER_EV_SUCCESS, now) ==
	      BREAKER_CLOSED_NOW);
	CHECK(breaker_event(&b, &conf, BREAKER_EV_TEMPFAIL, now) ==
	      BREAKER_OPENED);
	CHECK(b.cooldown_ms == 30000);
}

/* failures = 3: three failed attempts in a row open it; a success
 * between them starts the count again; requeued outcomes tell nothing */
static void check_failures_in_a_row(void)
{
	struct breaker b = {0};

	CHECK(breaker_event(&b, &counting, BREAKER_EV_FAILURE, 0) ==
	      BREAKER_STAY);
	CHECK(breaker_event(&b, &counting, BREAKER_EV_FAILURE, 0) ==
	      BREAKER_STAY);
	CHECK(breaker_event(&b, &counting, BREAKER_EV_SUCCESS, 0) ==
	      BREAKER_STAY);
	CHECK(breaker_event(&b, &counting, BREAKER_EV_FAILURE, 0) ==
	      BREAKER_STAY);
	CHECK(breaker_event(&b, &counting, BREAKER_EV_NONE, 0) == BREAKER_STAY);
	CHECK(breaker_event(&b, &counting, BREAKER_EV_FAILURE, 0) ==
	      BREAKER_STAY);
	CHECK(breaker_event(&b, &counting, BREAKER_EV_FAILURE, 5) ==
	      BREAKER_OPENED);
	CHECK(b.until == 10005);
	/* failures = 0 counts nothing: exit 75 only */
	b = (struct breaker){0};
	for (int i = 0; i < 100; i++)
		CHECK(breaker_event(&b, &conf, BREAKER_EV_FAILURE, 0) ==
		      BREAKER_STAY);
	/* no breaker configured: nothing ever opens */
	{
		struct breaker_conf off = {false, 30, 1};

		b = (struct breaker){0};
		CHECK(breaker_event(&b, &off, BREAKER_EV_TEMPFAIL, 0) ==
		      BREAKER_STAY);
		CHECK(!breaker_holds(&b));
	}
}

int main(void)
{
	check_tempfail_results();
	check_open_probe_close();
	check_backoff();
	check_failures_in_a_row();
	CHECK_STR(breaker_state_name(BREAKER_HALF_OPEN), "half-open");
	return unit_done("test_breaker");
}
