/*
 * test_settle.c: settling against a fake AMQP layer. The mq_* functions
 * settle.c calls are defined here (a link seam: the library's own AMQP
 * objects are then never linked in), and record what settle.c did with
 * the original and its copies, so every path is checked without a broker.
 */
#include "config.h"

#include <stdlib.h>

#include "worker/worker_int.h"
#include "unit.h"

/* What the fake broker saw, and what it answers. */
static struct {
	int acks, nacks, requeues, publishes, declares;
	const char *published_to;
	char published[300];
	enum mq_confirm confirm; /* the answer to mq_confirm_state */
	bool lost, publish_fails;
	const char *blocked;
} fk;

const char *mq_error(struct mq *m)
{
	(void)m;
	return "fake error";
}

int mq_declare_named(struct mq *m, const char *name, bool durable,
		     enum queue_type type)
{
	(void)m, (void)name, (void)durable, (void)type;
	fk.declares++;
	return 0;
}

int mq_declare_delay(struct mq *m, const char *name, const char *target,
		     int ttl)
{
	(void)m, (void)name, (void)target, (void)ttl;
	fk.declares++;
	return 0;
}

int mq_ack(struct mq *m, uint64_t tag)
{
	(void)m, (void)tag;
	fk.acks++;
	return 0;
}

int mq_nack(struct mq *m, uint64_t tag, bool requeue)
{
	(void)m, (void)tag;
	fk.nacks++;
	if (requeue)
		fk.requeues++;
	return 0;
}

int mq_publish(struct mq *m, const struct publish *p)
{
	(void)m;
	if (fk.publish_fails)
		return -1;
	fk.publishes++;
	fk.confirm = MQ_CONFIRM_PENDING; /* until the broker answers */
	snprintf(fk.published, sizeof(fk.published), "%s", p->routing_key);
	return 0;
}

size_t mq_headers_size(const struct delivery *d)
{
	(void)d;
	return 100;
}

enum mq_confirm mq_confirm_state(struct mq *m)
{
	(void)m;
	return fk.confirm;
}

bool mq_lost(const struct mq *m)
{
	(void)m;
	return fk.lost;
}

const char *mq_blocked(const struct mq *m)
{
	(void)m;
	return fk.blocked;
}

static struct queue_conf q = {.name = "jobs", .park = true};
static struct delivery d = {.tag = 7, .message_id = "m-1"};

/* A settler started on outcome kind (delay 5 s for a retry). */
static void start(struct settler *s, enum outcome_kind kind)
{
	struct outcome o = {.kind = kind, .delay = 5};

	memset(&fk, 0, sizeof(fk));
	fk.confirm = MQ_CONFIRM_PENDING;
	settle_init(s, (struct mq *)&fk, &q);
	snprintf(o.reason, sizeof(o.reason), "exit 3");
	settle_start(s, &d, 2, &o, "tail", NULL);
}

static void test_ack_and_requeue(void)
{
	struct settler s;

	start(&s, OUTCOME_ACK);
	CHECK(settle_run(&s) == SETTLE_DONE);
	CHECK(fk.acks == 1 && fk.nacks == 0 && fk.publishes == 0);
	settle_free(&s);

	start(&s, OUTCOME_REQUEUED);
	CHECK(settle_run(&s) == SETTLE_DONE);
	CHECK(fk.acks == 0 && fk.requeues == 1);
	settle_free(&s);
}

/* A copy first, the original acked only once the broker confirmed it. */
static void test_retry_waits_for_confirm(void)
{
	struct settler s;

	start(&s, OUTCOME_RETRY);
	CHECK(settle_run(&s) == SETTLE_WAIT);
	CHECK(fk.publishes == 1 && fk.acks == 0);
	CHECK(strcmp(fk.published, "jobs.retry.5s") == 0);
	CHECK(settle_run(&s) == SETTLE_WAIT); /* still pending */
	CHECK(fk.acks == 0);
	fk.confirm = MQ_CONFIRM_OK;
	CHECK(settle_run(&s) == SETTLE_DONE);
	CHECK(fk.acks == 1 && fk.nacks == 0);
	CHECK(s.o.kind == OUTCOME_RETRY);
	settle_free(&s);
}

/* A refused retry copy is parked instead; a refused park rejects. */
static void test_refusals_escalate(void)
{
	struct settler s;

	start(&s, OUTCOME_RETRY);
	CHECK(settle_run(&s) == SETTLE_WAIT);
	fk.confirm = MQ_CONFIRM_REFUSED;
	CHECK(settle_run(&s) == SETTLE_WAIT); /* the parking copy is out */
	CHECK(s.o.kind == OUTCOME_FAILED && fk.publishes == 2);
	CHECK(strcmp(fk.published, "jobs.failed") == 0);
	fk.confirm = MQ_CONFIRM_REFUSED;
	CHECK(settle_run(&s) == SETTLE_DONE);
	CHECK(s.rejected && fk.nacks == 1 && fk.requeues == 0 && fk.acks == 0);
	settle_free(&s);
}

/*
 * Shutdown with the copy published and its confirm not in: it gets
 * ABANDON_GRACE_MS more; past that, the original goes back, once.
 */
static void test_abandon_pending(void)
{
	struct settler s;

	start(&s, OUTCOME_FAILED);
	CHECK(settle_run(&s) == SETTLE_WAIT);
	CHECK(!settle_abandon(&s)); /* the grace starts */
	CHECK(fk.requeues == 0 && fk.acks == 0);
	CHECK(s.abandon_at > now_ms());
	CHECK(settle_next_timer(&s) <= (int)(s.abandon_at - now_ms()) + 1);
	s.abandon_at = now_ms() - 1; /* the grace is over */
	CHECK(settle_abandon(&s));
	CHECK(fk.requeues == 1 && fk.acks == 0);
	CHECK(s.o.kind == OUTCOME_REQUEUED);
	CHECK(settle_run(&s) == SETTLE_DONE);
	CHECK(!settle_abandon(&s)); /* settled: nothing more */
	CHECK(fk.requeues == 1 && fk.acks == 0);
	settle_free(&s);
}

/* The confirm comes within the grace: the original is acked, not given
 * back as well (it would be both parked and run again). */
static void test_abandon_confirm_in_grace(void)
{
	struct settler s;

	start(&s, OUTCOME_FAILED);
	CHECK(settle_run(&s) == SETTLE_WAIT);
	CHECK(!settle_abandon(&s));
	fk.confirm = MQ_CONFIRM_OK;
	CHECK(settle_run(&s) == SETTLE_DONE);
	CHECK(!settle_abandon(&s));
	CHECK(fk.acks == 1 && fk.nacks == 0);
	CHECK(s.o.kind == OUTCOME_FAILED);
	settle_free(&s);
}

/* Shutdown while a blocked broker holds the copy back: nothing is
 * published, so the original goes back at once. */
static void test_abandon_unpublished(void)
{
	struct settler s;

	start(&s, OUTCOME_RETRY);
	fk.blocked = "low on memory";
	CHECK(settle_run(&s) == SETTLE_WAIT);
	CHECK(settle_abandon(&s));
	CHECK(fk.publishes == 0 && fk.requeues == 1 && fk.acks == 0);
	fk.blocked = NULL;
	CHECK(settle_run(&s) == SETTLE_DONE);
	CHECK(fk.publishes == 0 && fk.requeues == 1);
	settle_free(&s);
}

/*
 * Shutdown after the broker confirmed the copy but before settle_run saw
 * it: the original is acked, never given back as well (it would be both
 * parked and run again).
 */
static void test_abandon_confirmed(void)
{
	struct settler s;

	start(&s, OUTCOME_FAILED);
	CHECK(settle_run(&s) == SETTLE_WAIT);
	fk.confirm = MQ_CONFIRM_OK;
	CHECK(!settle_abandon(&s));
	CHECK(fk.nacks == 0);
	CHECK(settle_run(&s) == SETTLE_DONE);
	CHECK(fk.acks == 1 && fk.nacks == 0);
	CHECK(s.o.kind == OUTCOME_FAILED);
	settle_free(&s);
}

/* A blocked broker: the copy waits, nothing is published or settled. */
static void test_blocked_waits(void)
{
	struct settler s;

	start(&s, OUTCOME_FAILED);
	fk.blocked = "low on memory";
	CHECK(settle_run(&s) == SETTLE_WAIT);
	CHECK(fk.publishes == 0 && fk.acks == 0 && fk.nacks == 0);
	CHECK(settle_next_timer(&s) == -1);
	fk.blocked = NULL;
	CHECK(settle_run(&s) == SETTLE_WAIT);
	CHECK(fk.publishes == 1);
	settle_free(&s);
}

/* The connection lost while publishing: the broker has it back. */
static void test_lost(void)
{
	struct settler s;

	start(&s, OUTCOME_RETRY);
	fk.publish_fails = true;
	fk.lost = true;
	CHECK(settle_run(&s) == SETTLE_LOST);
	CHECK(fk.acks == 0 && fk.nacks == 0);
	settle_free(&s);
}

/* A body over max_body: kept (spooled), it is parked like any failure;
 * unkept, no copy could carry it: rejected, never parked empty. */
static void test_oversize(void)
{
	struct delivery big = {.tag = 9, .message_id = "big", .body_over = 5};
	char spooled[5] = "xxxxx";
	struct settler s;
	struct outcome o;

	for (int kept = 1; kept >= 0; kept--) {
		big.body = kept ? spooled : NULL;
		big.body_len = kept ? sizeof(spooled) : 0;
		o = outcome_oversize(&big, 1);
		memset(&fk, 0, sizeof(fk));
		fk.confirm = MQ_CONFIRM_PENDING;
		settle_init(&s, (struct mq *)&fk, &q);
		settle_start(&s, &big, 0, &o, "", NULL);
		if (kept) {
			CHECK(settle_run(&s) == SETTLE_WAIT);
			CHECK(fk.publishes == 1 &&
			      strcmp(fk.published, "jobs.failed") == 0);
			fk.confirm = MQ_CONFIRM_OK;
			CHECK(settle_run(&s) == SETTLE_DONE);
			CHECK(fk.acks == 1 && fk.nacks == 0);
		} else {
			fk.confirm = MQ_CONFIRM_OK; /* nothing to wait for */
			CHECK(settle_run(&s) == SETTLE_DONE);
			CHECK(fk.publishes == 0 && fk.acks == 0);
			CHECK(fk.nacks == 1 && fk.requeues == 0);
		}
		settle_free(&s);
	}
}

int main(void)
{
	test_ack_and_requeue();
	test_retry_waits_for_confirm();
	test_refusals_escalate();
	test_abandon_pending();
	test_abandon_confirm_in_grace();
	test_abandon_unpublished();
	test_abandon_confirmed();
	test_blocked_waits();
	test_lost();
	test_oversize();
	return unit_done("test_settle");
}
