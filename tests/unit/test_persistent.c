/*
 * test_persistent.c: the persistent handler's protocol: frame escaping,
 * the frame header built from a handler environment, and status lines;
 * a frame written through a pipe, stdout split into lines and results,
 * and the restart backoff.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

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

/* stdout split: lines, a line too long, a result's bytes, across reads */
static void check_answer_in(void)
{
	static const char a[] = "ok\nresult 5\nab";
	static const char b[] = "cdefail x\n";
	struct answer_in in = {0};
	char long_line[ANSWER_LINE_MAX + 10];
	const char *data;
	size_t off = 0, len;

	CHECK(answer_in_next(&in, a, strlen(a), &off, &data, &len) ==
	      ANSWER_IN_LINE);
	CHECK(len == 2 && memcmp(data, "ok", 2) == 0);
	CHECK(answer_in_next(&in, a, strlen(a), &off, &data, &len) ==
	      ANSWER_IN_LINE);
	CHECK(len == 8 && result_head_parse(data, len, &in.result_left) &&
	      in.result_left == 5);
	CHECK(answer_in_next(&in, a, strlen(a), &off, &data, &len) ==
	      ANSWER_IN_RESULT);
	CHECK(len == 2 && memcmp(data, "ab", 2) == 0 && in.result_left == 3);
	CHECK(answer_in_next(&in, a, strlen(a), &off, &data, &len) ==
	      ANSWER_IN_NONE);
	off = 0; /* the next read */
	CHECK(answer_in_next(&in, b, strlen(b), &off, &data, &len) ==
	      ANSWER_IN_RESULT);
	CHECK(len == 3 && memcmp(data, "cde", 3) == 0 && in.result_left == 0);
	CHECK(answer_in_next(&in, b, strlen(b), &off, &data, &len) ==
	      ANSWER_IN_LINE);
	CHECK(len == 6 && memcmp(data, "fail x", 6) == 0);
	CHECK(answer_in_next(&in, b, strlen(b), &off, &data, &len) ==
	      ANSWER_IN_NONE);
	/* a line longer than any answer: garbage once, then a new line */
	memset(long_line, 'x', sizeof(long_line));
	long_line[sizeof(long_line) - 1] = '\n';
	off = 0;
	CHECK(answer_in_next(&in, long_line, sizeof(long_line), &off, &data,
			     &len) == ANSWER_IN_LONG);
	CHECK(answer_in_next(&in, long_line, sizeof(long_line), &off, &data,
			     &len) == ANSWER_IN_LINE);
	CHECK(len == 8 && off == sizeof(long_line));
}

/* A frame through a pipe: whole, then in pieces when the pipe fills. */
static void check_frame_out(void)
{
	char *env[] = {"PATH=/bin", "WARREN_QUEUE=q", NULL};
	static const char want[] = "warren 1 4\nWARREN_QUEUE=q\nbody";
	static unsigned char big[200000];
	struct frame_out f = {0};
	char buf[100];
	int fd[2];
	ssize_t n;

	CHECK(pipe2(fd, O_NONBLOCK) == 0);
	frame_out_set(&f, env, "body", 4);
	CHECK(frame_out_len(&f) == strlen(want));
	CHECK(frame_out_untaken(fd[1], &f));
	CHECK(frame_out_write(fd[1], &f) == 1);
	CHECK(frame_out_untaken(fd[1], &f)); /* all still in the pipe */
	n = read(fd[0], buf, sizeof(buf));
	CHECK(n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0);
	CHECK(!frame_out_untaken(fd[1], &f));
	/* more than the pipe holds: 0, and on once it is read */
	frame_out_set(&f, env, big, sizeof(big));
	CHECK(frame_out_write(fd[1], &f) == 0);
	CHECK(f.off > 0 && f.off < frame_out_len(&f));
	while (read(fd[0], big, sizeof(big)) > 0)
		;
	CHECK(frame_out_write(fd[1], &f) == 0 || f.off == frame_out_len(&f));
	/* the reader gone: -1, EPIPE */
	close(fd[0]);
	frame_out_set(&f, env, "x", 1);
	CHECK(frame_out_write(fd[1], &f) == -1 && errno == EPIPE);
	frame_out_clear(&f);
	CHECK(f.head == NULL && f.off == 0);
	close(fd[1]);
}

static void check_bad_and_backoff(void)
{
	struct handler_result r;

	memset(&r, 'z', sizeof(r));
	answer_bad(&r);
	CHECK(r.answered && r.answer == ANSWER_RETRY &&
	      strcmp(r.reason, "bad answer") == 0 && !r.timed_out);
	CHECK(renew_restart_delay(0) == 0 && renew_restart_delay(1) == 0);
	CHECK(renew_restart_delay(2) == RENEW_RESTART_FIRST_MS);
	CHECK(renew_restart_delay(3) == 2 * RENEW_RESTART_FIRST_MS);
	CHECK(renew_restart_delay(100) == RENEW_RESTART_MAX_MS);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
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
	check_answer_in();
	check_frame_out();
	check_bad_and_backoff();
	return unit_done("test_persistent");
}
