/*
 * test_persistent.c: the persistent handler's protocol: frame escaping,
 * the frame header built from a handler environment, and status lines.
 */
#include "config.h"

#include <stdlib.h>

#include "handler/handler_int.h"
#include "worker/worker_int.h"
#include "unit.h"

static void check_escape(const char *in, size_t n, const char *want)
{
	char out[64];
	size_t len = frame_escape(in, n, out);

	CHECK(len == strlen(want) && memcmp(out, want, len) == 0);
}

/* answer_parse(line): answered, kind, reason */
static void check_answer(const char *line, enum answer_kind kind,
			 const char *reason)
{
	struct handler_result r = {0};

	CHECK(answer_parse(line, strlen(line), &r));
	CHECK(r.started && r.answered && r.answer == kind);
	CHECK_STR(r.reason, reason);
}

static void check_garbage(const char *line, size_t len)
{
	struct handler_result r = {0};

	CHECK(!answer_parse(line, len, &r));
	CHECK(!r.answered);
}

/* "result LEN" lines: the length of a result body, or not one */
static void check_results(void)
{
	size_t n = 99;

	CHECK(result_head_parse("result 0", 8, &n) && n == 0);
	CHECK(result_head_parse("result 11", 9, &n) && n == 11);
	CHECK(result_head_parse("result 16777216", 15, &n) && n == RESULT_MAX);
	n = 5;
	CHECK(!result_head_parse("result 16777217", 15, &n)); /* too big */
	CHECK(!result_head_parse("result 999999999999", 19, &n));
	CHECK(!result_head_parse("result 012", 10, &n)); /* leading zero */
	CHECK(!result_head_parse("result", 6, &n));
	CHECK(!result_head_parse("result ", 7, &n));
	CHECK(!result_head_parse("result -1", 9, &n));
	CHECK(!result_head_parse("result 1 ", 9, &n));
	CHECK(!result_head_parse("result  1", 9, &n));
	CHECK(!result_head_parse("Result 1", 8, &n));
	CHECK(!result_head_parse("results 1", 9, &n));
	CHECK(n == 5); /* untouched by a refusal */
	/* today's answers are not results, and "result" is not an answer */
	CHECK(!result_head_parse("ok", 2, &n));
	{
		struct handler_result r = {0};

		CHECK(!answer_parse("result 3", 8, &r));
	}
}

/* a result kept up to RESULT_MAX bytes; more is flagged, not kept */
static void check_result_buffer(void)
{
	struct result r = {0};
	static char big[1 << 20];
	struct outcome o = {OUTCOME_ACK, "exit 0", 0};

	result_append(&r, "", 0);
	CHECK(r.buf != NULL && r.len == 0 && !r.too_large);
	result_append(&r, "abc", 3);
	result_append(&r, "de", 2);
	CHECK(r.len == 5 && memcmp(r.buf, "abcde", 5) == 0);
	for (int i = 0; i < 16; i++)
		result_append(&r, big, sizeof(big));
	CHECK(r.len == RESULT_MAX && r.too_large);
	reply_check_result(&o, r.too_large);
	CHECK(o.kind == OUTCOME_FAILED);
	CHECK_STR(o.reason, "result over 16 MiB");
	result_clear(&r);
	CHECK(r.buf == NULL && r.len == 0 && !r.too_large);
	/* a failed outcome stays as it was */
	o.kind = OUTCOME_RETRY;
	reply_check_result(&o, true);
	CHECK(o.kind == OUTCOME_RETRY);
}

int main(void)
{
	char *env[] = {
	    "PATH=/usr/bin:/bin", "LANG=C",
	    "WARREN_QUEUE=jobs",  "WARREN_WORKER=2",
	    "WARREN_ATTEMPT=1",	  "WARREN_HEADER_NOTE=two\nlines \\ and = sign",
	    "WARREN_MESSAGE_ID=", NULL};
	char *none[] = {"PATH=/bin", NULL};
	char *head, reason[200];
	size_t len;

	/* escaping: backslash and newline only, every other byte as is */
	check_escape("plain", 5, "plain");
	check_escape("a\\b", 3, "a\\\\b");
	check_escape("a\nb", 3, "a\\nb");
	check_escape("\\n", 2, "\\\\n"); /* not confused with a newline */
	check_escape("\r\t=\xff", 4, "\r\t=\xff");
	check_escape("", 0, "");

	/* the header: WARREN_* entries only, in order, then the body */
	head = frame_header(env, 12345, &len);
	CHECK_STR(head, "warren 5 12345\n"
			"WARREN_QUEUE=jobs\n"
			"WARREN_WORKER=2\n"
			"WARREN_ATTEMPT=1\n"
			"WARREN_HEADER_NOTE=two\\nlines \\\\ and = sign\n"
			"WARREN_MESSAGE_ID=\n");
	CHECK(len == strlen(head));
	free(head);
	head = frame_header(none, 0, &len);
	CHECK_STR(head, "warren 0 0\n");
	CHECK(len == 11);
	free(head);

	/* answers */
	check_answer("ok", ANSWER_OK, "ok");
	check_answer("ok done in 3 ms", ANSWER_OK, "done in 3 ms");
	check_answer("retry", ANSWER_RETRY, "retry");
	check_answer("retry  database busy", ANSWER_RETRY, "database busy");
	check_answer("fail", ANSWER_FAIL, "fail");
	check_answer("fail bad json", ANSWER_FAIL, "bad json");
	check_answer("ok ", ANSWER_OK, "ok");
	check_answer("fail a\tb\x1b", ANSWER_FAIL, "a?b?");
	check_garbage("", 0);
	check_garbage("OK", 2);
	check_garbage("okay", 4);
	check_garbage("ok\r", 3);
	check_garbage("retry\tx", 7);
	check_garbage(" ok", 3);
	check_garbage("failed", 6);
	check_garbage("done", 4);
	check_garbage("warren 0 0", 10);
	check_garbage("o", 1);

	/* a long reason is cut to fit, never inside a UTF-8 character */
	memset(reason, 'x', sizeof(reason));
	memcpy(reason, "retry ", 6);
	memcpy(reason + 6 + 62, "\xc3\xa9", 2); /* bytes 62-63 of it */
	{
		struct handler_result r = {0};

		CHECK(answer_parse(reason, sizeof(reason), &r));
		CHECK(r.answer == ANSWER_RETRY);
		CHECK(strlen(r.reason) == 62);
		CHECK(r.reason[61] == 'x');
	}
	memset(reason + 6, 'y', sizeof(reason) - 6);
	{
		struct handler_result r = {0};

		CHECK(answer_parse(reason, sizeof(reason), &r));
		CHECK(strlen(r.reason) == sizeof(r.reason) - 1);
	}
	check_answer("tempfail", ANSWER_TEMPFAIL, "tempfail");
	check_answer("tempfail db down", ANSWER_TEMPFAIL, "db down");
	check_garbage("tempfailed", 10);
	check_results();
	check_result_buffer();
	return unit_done("test_persistent");
}
