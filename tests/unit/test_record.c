/* test_record.c: the master/worker records (record.c): every kind there
 * and back, at its limits, and each way a record is refused. */
#include "config.h"

#include <limits.h>
#include <stdlib.h>

#include "worker/worker.h"
#include "unit.h"

static const char reports[] = "CBarfqDHLPUOZGtSN";
static const char commands[] = "RSTMZGAPW";

/* Decode from a heap copy of exactly n bytes: a read past them is a
 * fault under ASan or valgrind. */
static int decode(const void *buf, size_t n, enum record_dir dir,
		  struct record *r, char *err, size_t errlen)
{
	char *copy = malloc(n ? n : 1);
	int rc;

	memcpy(copy, buf, n);
	rc = record_decode(copy, n, dir, r, err, errlen);
	free(copy);
	return rc;
}

/* s (n bytes) refused as dir, with err naming want. */
static void refused(const char *s, size_t n, enum record_dir dir,
		    const char *want)
{
	struct record r;
	char err[200] = "";

	CHECK(decode(s, n, dir, &r, err, sizeof(err)) == -1);
	if (strstr(err, want) == NULL)
		fprintf(stderr, "refusing %.*s: \"%s\" lacks \"%s\"\n", (int)n,
			s, err, want);
	CHECK(strstr(err, want) != NULL);
}

#define REFUSED(lit, dir, want) refused(lit, sizeof(lit) - 1, dir, want)

/* r there and back: equal, and the bytes are want (if given). */
static void round_trip(const struct record *r, const char *want)
{
	char buf[RECORD_MAX], err[200] = "";
	struct record back;
	int n = record_encode(r, buf, sizeof(buf), err, sizeof(err));

	if (n < 0)
		fprintf(stderr, "encode %c: %s\n", r->kind, err);
	CHECK(n > 0 && n <= RECORD_MAX);
	if (n <= 0)
		return;
	if (want != NULL) {
		CHECK((size_t)n == strlen(want) &&
		      memcmp(buf, want, (size_t)n) == 0);
	}
	CHECK(decode(buf, (size_t)n, r->dir, &back, err, sizeof(err)) == 0);
	CHECK(record_equal(r, &back));
}

static void fill(char *dst, size_t n, const char *pattern)
{
	size_t k = strlen(pattern);

	for (size_t i = 0; i < n; i++)
		dst[i] = pattern[i % k];
	dst[n] = '\0';
}

/* A sample of each kind, its fields at their largest when big. */
static bool sample(struct record *r, enum record_dir dir, char kind, bool big)
{
	record_init(r, dir, kind);
	if (dir == RECORD_COMMAND) {
		switch (kind) {
		case COMMAND_CONSUMER_TIMEOUT:
		case COMMAND_WATCH:
			r->u.ms = big ? INT_MAX : 1;
			return true;
		case COMMAND_MARK:
			r->u.mark.deaths = big ? RECORD_COUNT_MAX : 1;
			r->u.mark.lost = big ? RECORD_COUNT_MAX : 0;
			r->u.mark.pending = big ? OUTCOME_REQUEUED + 1 : 0;
			r->u.mark.attempt = big ? RECORD_COUNT_MAX : 2;
			r->u.mark.delay = big ? INT_MAX : 10;
			fill(r->u.mark.reason, big ? 63 : 6, "r\xc3\xa9");
			fill(r->u.mark.key, big ? RECORD_KEY_MAX - 1 : 4,
			     "id:\t\xe2\x82\xac");
			return true;
		case COMMAND_RETIRE:
		case COMMAND_STOP:
		case COMMAND_PAUSE:
		case COMMAND_RESUME:
		case COMMAND_GO:
		case COMMAND_PROBE:
			return true;
		}
		return false;
	}
	switch (kind) {
	case REPORT_CONSUMING:
	case REPORT_PAUSED:
		r->u.consuming.home = !big;
		r->u.consuming.node = big ? 65535 : 0;
		return true;
	case REPORT_ACK:
	case REPORT_RETRY:
	case REPORT_FAILED:
	case REPORT_REQUEUED:
	case REPORT_TEMPFAIL:
		r->u.outcome.ran_ms = big ? INT64_MAX : -1;
		r->u.outcome.cpu_ms = big ? INT64_MAX : -1;
		r->u.outcome.wait_ms = big ? INT64_MAX : -1;
		return true;
	case REPORT_BUSY:
	case REPORT_GROUP:
		r->u.pid = big ? INT_MAX : kind == REPORT_BUSY;
		return true;
	case REPORT_HOLDING:
		fill(r->u.key, big ? RECORD_KEY_MAX - 1 : 1,
		     "\t\xf0\x9f\x90\x87");
		return true;
	case REPORT_DOWN:
	case REPORT_BLOCKED:
		fill(r->u.text, big ? RECORD_TEXT_MAX - 1 : 0,
		     "a\tb\n\xc3\xa9");
		return true;
	case REPORT_TAKEN_BACK:
		r->u.taken_back.ms = big ? INT_MAX : 0;
		fill(r->u.taken_back.key, big ? RECORD_KEY_MAX - 1 : 0, "k\t");
		return true;
	case REPORT_PENDING:
		r->u.pending.outcome = big ? OUTCOME_REQUEUED : OUTCOME_ACK;
		r->u.pending.attempt = big ? RECORD_COUNT_MAX : 0;
		r->u.pending.delay = big ? INT_MAX : 0;
		fill(r->u.pending.reason, big ? 63 : 0, "\xc3\xa9x");
		fill(r->u.pending.key, big ? RECORD_KEY_MAX - 1 : 1, "\t");
		return true;
	case REPORT_READY:
		r->u.ready = big ? INT64_MAX : 0;
		return true;
	case REPORT_UNBLOCKED:
	case REPORT_SLOW:
		return true;
	}
	return false;
}

/* Every byte that is a kind has a sample, both ways; and the kinds are
 * exactly those of warren.h's enums. */
static void test_every_kind(void)
{
	int nr = 0, nc = 0;
	struct record r;

	for (int b = 0; b < 256; b++) {
		for (int d = RECORD_REPORT; d <= RECORD_COMMAND; d++) {
			enum record_dir dir = (enum record_dir)d;

			if (strcmp(record_name(dir, (char)b), "?") == 0)
				continue;
			d == RECORD_REPORT ? nr++ : nc++;
			CHECK(strchr(d == RECORD_REPORT ? reports : commands,
				     b) != NULL);
			CHECK(sample(&r, dir, (char)b, false));
			round_trip(&r, NULL);
			CHECK(sample(&r, dir, (char)b, true));
			round_trip(&r, NULL);
		}
	}
	CHECK(nr == (int)strlen(reports));
	CHECK(nc == (int)strlen(commands));
}

/* The bytes on the wire, as warren.h describes them. */
static void test_wire_form(void)
{
	struct record r;

	record_init(&r, RECORD_REPORT, REPORT_CONSUMING);
	r.u.consuming.home = true;
	r.u.consuming.node = 2;
	round_trip(&r, "Chome\t2");
	record_init(&r, RECORD_REPORT, REPORT_ACK);
	r.u.outcome.ran_ms = 120;
	r.u.outcome.cpu_ms = -1;
	r.u.outcome.wait_ms = 0;
	round_trip(&r, "a120\t-1\t0");
	record_init(&r, RECORD_REPORT, REPORT_PENDING);
	r.u.pending.outcome = OUTCOME_RETRY;
	r.u.pending.attempt = 3;
	r.u.pending.delay = 40;
	strcpy(r.u.pending.reason, "exit 1");
	strcpy(r.u.pending.key, "id:a\tb:0123456789abcdef");
	round_trip(&r, "O1\t3\t40\texit 1\tid:a\tb:0123456789abcdef");
	record_init(&r, RECORD_REPORT, REPORT_TAKEN_BACK);
	r.u.taken_back.ms = 3000;
	round_trip(&r, "L3000\t");
	record_init(&r, RECORD_REPORT, REPORT_DOWN);
	round_trip(&r, "D");
	record_init(&r, RECORD_COMMAND, COMMAND_WATCH);
	round_trip(&r, "W0");
	record_init(&r, RECORD_COMMAND, COMMAND_GO);
	round_trip(&r, "A");
	/* one byte, two kinds: the direction tells them apart */
	CHECK_STR(record_name(RECORD_REPORT, 'S'), "slow");
	CHECK_STR(record_name(RECORD_COMMAND, 'S'), "stop");
}

static void test_refused_framing(void)
{
	char big[RECORD_MAX + 2];

	refused("", 0, RECORD_REPORT, "empty");
	memset(big, 'x', sizeof(big));
	big[0] = REPORT_DOWN;
	refused(big, RECORD_MAX + 1, RECORD_REPORT, "at most");
	refused(big, RECORD_MAX, RECORD_REPORT, "too long"); /* the text */
	REFUSED("X", RECORD_REPORT, "unknown report kind 0x58");
	REFUSED("\xff", RECORD_COMMAND, "unknown command kind 0xff");
	REFUSED("C", RECORD_COMMAND, "unknown command"); /* a report byte */
	REFUSED("M", RECORD_REPORT, "unknown report");
	/* truncated: a field missing */
	REFUSED("L3000", RECORD_REPORT, "field key: missing");
	REFUSED("O1\t3\t40\texit 1", RECORD_REPORT, "field key: missing");
	REFUSED("a120\t-1", RECORD_REPORT, "field wait_ms: missing");
	REFUSED("Chome", RECORD_REPORT, "field node: missing");
	REFUSED("M1\t0\t0\t1\t0\t", RECORD_COMMAND, "field key: missing");
	REFUSED("B", RECORD_REPORT, "field pid: not a number");
	REFUSED("T", RECORD_COMMAND, "field ms: not a number");
	/* extra bytes */
	REFUSED("S ", RECORD_REPORT, "past its last field");
	REFUSED("R\t", RECORD_COMMAND, "past its last field");
	REFUSED("B12\t3", RECORD_REPORT, "past its last field");
	REFUSED("a1\t2\t3\t4", RECORD_REPORT, "past its last field");
}

static void test_refused_numbers(void)
{
	REFUSED("B0", RECORD_REPORT, "field pid: out of range");
	REFUSED("B-1", RECORD_REPORT, "field pid: out of range");
	REFUSED("B012", RECORD_REPORT, "leading zero");
	REFUSED("B+12", RECORD_REPORT, "not a number");
	REFUSED("B 12", RECORD_REPORT, "not a number");
	REFUSED("B12a", RECORD_REPORT, "not a number");
	REFUSED("B2147483648", RECORD_REPORT, "out of range");
	REFUSED("N-1", RECORD_REPORT, "out of range");
	REFUSED("N9223372036854775808", RECORD_REPORT, "out of range");
	REFUSED("N99999999999999999999999", RECORD_REPORT, "out of range");
	REFUSED("a-0\t-1\t-1", RECORD_REPORT, "not a number");
	REFUSED("a-2\t-1\t-1", RECORD_REPORT, "field run_ms: out of range");
	REFUSED("a-\t-1\t-1", RECORD_REPORT, "not a number");
	REFUSED("a\t-1\t-1", RECORD_REPORT, "not a number");
	REFUSED("T0", RECORD_COMMAND, "field ms: out of range");
	REFUSED("O4\t1\t0\t\tk", RECORD_REPORT, "field outcome: out of range");
	REFUSED("M1\t1000001\t0\t0\t0\t\tk", RECORD_COMMAND,
		"field lost: out of range");
	REFUSED("M1\t0\t5\t0\t0\t\tk", RECORD_COMMAND,
		"field pending: out of range");
	REFUSED("Cmaybe\t0", RECORD_REPORT, "neither home nor away");
	REFUSED("Chomely\t0", RECORD_REPORT, "neither home nor away");
	REFUSED("Chome\t65536", RECORD_REPORT, "out of range");
	/* the largest values are taken */
	struct record r;
	char err[100];

	CHECK(decode("N9223372036854775807", 20, RECORD_REPORT, &r, err,
		     sizeof(err)) == 0 &&
	      r.u.ready == INT64_MAX);
	CHECK(decode("B2147483647", 11, RECORD_REPORT, &r, err, sizeof(err)) ==
		  0 &&
	      r.u.pid == INT_MAX);
}

static void test_refused_text(void)
{
	char key[RECORD_KEY_MAX + 2];

	REFUSED("H", RECORD_REPORT, "field key: empty");
	REFUSED("O1\t1\t0\treason\t", RECORD_REPORT, "field key: empty");
	REFUSED("Hid:a\0b", RECORD_REPORT, "a NUL");
	REFUSED("D\0", RECORD_REPORT, "a NUL");
	REFUSED("L5\tk\0", RECORD_REPORT, "a NUL");
	REFUSED("O1\t1\t0\tre\0ason\tk", RECORD_REPORT, "a NUL");
	/* a middle field may not hold what would end or split it */
	REFUSED("O1\t1\t0\tre\nason\tk", RECORD_REPORT,
		"field reason: a tab or line break");
	REFUSED("M1\t0\t0\t0\t0\tre\rason\tk", RECORD_COMMAND,
		"field reason: a tab or line break");
	/* a key RECORD_KEY_MAX long: one byte too many */
	key[0] = REPORT_HOLDING;
	memset(key + 1, 'k', RECORD_KEY_MAX);
	refused(key, RECORD_KEY_MAX + 1, RECORD_REPORT, "field key: too long");
	{
		struct record r;
		char err[200];

		/* one byte less: the longest key */
		CHECK(decode(key, RECORD_KEY_MAX, RECORD_REPORT, &r, err,
			     sizeof(err)) == 0 &&
		      strlen(r.u.key) == RECORD_KEY_MAX - 1);
	}
}

static void test_encode_refuses(void)
{
	struct record r;
	char buf[RECORD_MAX], err[200] = "";

	record_init(&r, RECORD_REPORT, REPORT_BUSY); /* pid 0 */
	CHECK(record_encode(&r, buf, sizeof(buf), err, sizeof(err)) == -1);
	CHECK(strstr(err, "report busy, field pid: 0 out of range") != NULL);
	record_init(&r, RECORD_REPORT, 'X');
	CHECK(record_encode(&r, buf, sizeof(buf), err, sizeof(err)) == -1);
	CHECK(strstr(err, "unknown report kind") != NULL);
	record_init(&r, RECORD_REPORT, REPORT_PENDING);
	strcpy(r.u.pending.reason, "a\tb");
	strcpy(r.u.pending.key, "k");
	CHECK(record_encode(&r, buf, sizeof(buf), err, sizeof(err)) == -1);
	CHECK(strstr(err, "field reason: a tab") != NULL);
	r.u.pending.reason[0] = '\0';
	r.u.pending.key[0] = '\0';
	CHECK(record_encode(&r, buf, sizeof(buf), err, sizeof(err)) == -1);
	CHECK(strstr(err, "field key: empty") != NULL);
	memset(r.u.pending.key, 'k', sizeof(r.u.pending.key)); /* no NUL */
	CHECK(record_encode(&r, buf, sizeof(buf), err, sizeof(err)) == -1);
	CHECK(strstr(err, "field key: too long") != NULL);
	record_init(&r, RECORD_REPORT, REPORT_ACK);
	r.u.outcome.ran_ms = -2;
	CHECK(record_encode(&r, buf, sizeof(buf), err, sizeof(err)) == -1);
	/* no room in the caller's buffer */
	record_init(&r, RECORD_REPORT, REPORT_HOLDING);
	strcpy(r.u.key, "id:abc");
	CHECK(record_encode(&r, buf, 4, err, sizeof(err)) == -1);
	CHECK(strstr(err, "no room") != NULL);
	CHECK(record_encode(&r, buf, 7, err, sizeof(err)) == 7);
}

/* A mark through the ledger, a record and back into another ledger. */
static void test_mark(void)
{
	struct ledger a = {0}, b = {0};
	struct mark *k =
	    ledger_add(&a, "id:with space\tand tab:0123456789abcdef");
	static const char forget[] =
	    "M0\t0\t0\t0\t0\t\tid:with space\tand tab:0123456789abcdef";
	struct record r, back;
	char buf[RECORD_MAX], err[200];
	int n;

	k->deaths = 1;
	k->lost = 3;
	k->pending = 2;
	k->attempt = 4;
	k->delay = 86400 * 365; /* retry max_delay's largest */
	snprintf(k->reason, sizeof(k->reason), "consumer_timeout 3s");
	CHECK(record_of_mark(k, &r) == 0);
	n = record_encode(&r, buf, sizeof(buf), err, sizeof(err));
	CHECK(n > 0);
	CHECK(decode(buf, (size_t)n, RECORD_COMMAND, &back, err, sizeof(err)) ==
	      0);
	record_apply_mark(&b, &back.u.mark);
	k = ledger_find(&b, "id:with space\tand tab:0123456789abcdef");
	CHECK(k != NULL && k->deaths == 1 && k->lost == 3 && k->pending == 2 &&
	      k->attempt == 4 && k->delay == 86400 * 365);
	CHECK_STR(k ? k->reason : NULL, "consumer_timeout 3s");
	/* nothing left to remember: forgotten */
	CHECK(decode(forget, sizeof(forget) - 1, RECORD_COMMAND, &back, err,
		     sizeof(err)) == 0);
	record_apply_mark(&b, &back.u.mark);
	CHECK(b.n == 0);
	ledger_free(&a);
	ledger_free(&b);
}

int main(void)
{
	test_every_kind();
	test_wire_form();
	test_refused_framing();
	test_refused_numbers();
	test_refused_text();
	test_encode_refuses();
	test_mark();
	return unit_done("test_record");
}
