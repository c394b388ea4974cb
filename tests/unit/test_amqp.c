/* test_amqp.c: the AMQP layer's pure parts, without a broker. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "amqp/mq_int.h"
#include "unit.h"

/* --- URLs: what we expect, and what rabbitmq-c 0.11 reads --- */

struct url_case {
	const char *url;
	int ok;
	const char *user, *password, *host, *vhost;
	int port, ssl;
};

static const struct url_case cases[] = {
    {"amqp://localhost", 0, "guest", "guest", "localhost", "/", 5672, 0},
    {"amqps://mq1.example.net", 0, "guest", "guest", "mq1.example.net", "/",
     5671, 1},
    {"amqp://u:p@h:1234/v", 0, "u", "p", "h", "v", 1234, 0},
    {"amqp://u@h/", 0, "u", "guest", "h", "", 5672, 0},
    {"amqp://u:p%40ss%3Aw%2Fd@h/", 0, "u", "p@ss:w/d", "h", "", 5672, 0},
    {"amqp://h/%2f", 0, "guest", "guest", "h", "/", 5672, 0},
    {"amqp://h/my%20vhost", 0, "guest", "guest", "h", "my vhost", 5672, 0},
    {"amqp://[::1]", 0, "guest", "guest", "::1", "/", 5672, 0},
    {"amqps://u:p@[fe80::1]:5999/prod", 0, "u", "p", "fe80::1", "prod", 5999,
     1},
    {"amqp://h:0", 0, "guest", "guest", "h", "/", 0, 0},
    {"amqp://h:65535", 0, "guest", "guest", "h", "/", 65535, 0},
    {"amqp://", 0, "guest", "guest", "localhost", "/", 5672, 0},
    {"amqp://:5673", 0, "guest", "guest", "localhost", "/", 5673, 0},
    {"amqp://u:@h", 0, "u", "", "h", "/", 5672, 0},
    {"http://h", -1, 0, 0, 0, 0, 0, 0},
    {"AMQP://h", -1, 0, 0, 0, 0, 0, 0},
    {"amqp:/h", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h:65536", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h:-1", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h:abc", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h:", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h/v/w", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h/v?x=1", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h#frag", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h/%zz", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h/%4", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h/%c3%a9", -1, 0, 0, 0, 0, 0, 0}, /* > 0x7f: refused */
    {"amqp://a@b@c", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://[::1", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://x[::1]", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://[::1]x", -1, 0, 0, 0, 0, 0, 0},
    {"amqp://h]", -1, 0, 0, 0, 0, 0, 0},
};

static void test_url_table(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct url_case *c = &cases[i];
		struct mq_url u;
		int r = mq_url_parse(c->url, &u);

		if (r != c->ok)
			fprintf(stderr, "url %s: %d\n", c->url, r);
		CHECK(r == c->ok);
		if (r != 0 || c->ok != 0)
			continue;
		CHECK_STR(u.user, c->user);
		CHECK_STR(u.password, c->password);
		CHECK_STR(u.host, c->host);
		CHECK_STR(u.vhost, c->vhost);
		CHECK(u.port == c->port);
		CHECK(u.ssl == (c->ssl != 0));
		mq_url_free(&u);
	}
}

/* The same table through rabbitmq-c: both must agree on every URL. */
static void test_url_like_rabbitmq_c(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct amqp_connection_info ci;
		struct mq_url u;
		char *copy = strdup(cases[i].url);
		int theirs =
		    amqp_parse_url(copy, &ci) == AMQP_STATUS_OK ? 0 : -1;
		int ours = mq_url_parse(cases[i].url, &u);

		if (theirs != ours)
			fprintf(stderr, "url %s: rabbitmq-c %d, ours %d\n",
				cases[i].url, theirs, ours);
		CHECK(theirs == ours);
		if (theirs == 0 && ours == 0) {
			CHECK_STR(u.user, ci.user);
			CHECK_STR(u.password, ci.password);
			CHECK_STR(u.host, ci.host);
			CHECK_STR(u.vhost, ci.vhost);
			CHECK(u.port == ci.port);
			CHECK(u.ssl == (ci.ssl != 0));
		}
		if (ours == 0)
			mq_url_free(&u);
		free(copy);
	}
}

static void test_url_words(void)
{
	char err[100] = "";
	char *s;

	CHECK(mq_url_check("amqp://u:secret@h/v", err, sizeof(err)) == 0);
	CHECK(mq_url_check("amqp://h:99999", err, sizeof(err)) == -1);
	CHECK_STR(err, "not an amqp:// or amqps:// URL");
	s = mq_url_redacted("amqps://u:secret@h/v");
	CHECK_STR(s, "amqps://u@h:5671/v");
	CHECK(strstr(s, "secret") == NULL);
	free(s);
	s = mq_url_redacted("amqp://h/%2f");
	CHECK_STR(s, "amqp://guest@h:5672/");
	free(s);
	s = mq_url_redacted("bad");
	CHECK_STR(s, "(bad url)");
	free(s);
	s = mq_url_node("amqp://[::1]:5673");
	CHECK_STR(s, "[::1]:5673");
	free(s);
	s = mq_url_node("amqps://mq2.example.net");
	CHECK_STR(s, "mq2.example.net:5671");
	free(s);
}

/* --- node order --- */

static void test_node_order(void)
{
	int seen[3];

	/* one node: always it */
	CHECK(mq_node_order(1, 0, 5, 0) == 0);
	CHECK(mq_node_order(1, 3, 0, 0) == 0);
	/* first is tried first, then each other node once */
	for (int first = 0; first < 3; first++)
		for (int rot = 0; rot < 4; rot++) {
			memset(seen, 0, sizeof(seen));
			CHECK(mq_node_order(3, first, rot, 0) == first);
			for (int k = 0; k < 3; k++)
				seen[mq_node_order(3, first, rot, k)]++;
			CHECK(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
		}
	/* workers of node 0 fall back to different nodes as rotate moves */
	CHECK(mq_node_order(3, 0, 0, 1) == 1);
	CHECK(mq_node_order(3, 0, 1, 1) == 2);
	CHECK(mq_node_order(3, 0, 2, 1) == 1);
	CHECK(mq_node_order(3, 2, 0, 1) == 0);
	CHECK(mq_node_order(3, 4, 0, 0) == 1); /* first wraps */
}

/* --- publisher confirms --- */

static void test_confirms(void)
{
	struct mq_track t = {0};

	for (int i = 1; i <= 5; i++)
		CHECK(mq_track_sent(&t) == (uint64_t)i);
	CHECK(t.published == 5 && t.confirmed == 0);
	/* out of order: 2 first, then 1 */
	mq_track_answer(&t, 2, false, true);
	CHECK(t.confirmed == 1 && t.low == 0);
	mq_track_answer(&t, 1, false, true);
	CHECK(t.confirmed == 2 && t.low == 2);
	/* a repeated answer counts once; an unknown tag not at all */
	mq_track_answer(&t, 2, false, true);
	mq_track_answer(&t, 0, false, true);
	mq_track_answer(&t, 9, false, true);
	CHECK(t.confirmed == 2 && !t.nacked);
	/* multiple: 3 and 4 at once, 5 still pending */
	mq_track_answer(&t, 4, true, true);
	CHECK(t.confirmed == 4 && t.low == 4 && !t.nacked);
	/* a nack answers too, and is remembered */
	mq_track_answer(&t, 5, false, false);
	CHECK(t.confirmed == 5 && t.low == 5 && t.nacked);
	/* a reopened channel counts from 1 again */
	mq_track_reset(&t);
	CHECK(t.published == 0 && t.confirmed == 0 && !t.nacked);
	for (int i = 0; i < 200; i++) /* past the first allocation */
		(void)mq_track_sent(&t);
	mq_track_answer(&t, 150, false, true);
	mq_track_answer(&t, 100, true, true); /* 1..100 */
	CHECK(t.confirmed == 101 && t.low == 100);
	mq_track_answer(&t, 300, true, false); /* beyond: up to 200 */
	CHECK(t.confirmed == 200 && t.low == 200 && t.nacked);
	mq_track_free(&t);
}

/* --- header merging --- */

static amqp_table_entry_t entry(const char *k, const char *v)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(k);
	e.value.kind = AMQP_FIELD_KIND_UTF8;
	e.value.value.bytes = amqp_cstring_bytes(v);
	return e;
}

static int find(const amqp_table_t *t, const char *k)
{
	for (int i = 0; i < t->num_entries; i++)
		if (t->entries[i].key.len == strlen(k) &&
		    memcmp(t->entries[i].key.bytes, k, strlen(k)) == 0)
			return i;
	return -1;
}

static void test_merge_headers(void)
{
	amqp_table_entry_t old[] = {
	    entry("keep", "1"), entry("x-delivery-count", "3"),
	    entry("x-attempt", "1"), entry("drop-me", "x"),
	    entry("drop-too", "y")};
	amqp_basic_properties_t like = {0};
	struct header add[] = {
	    {.name = "x-attempt", .value = "2", .len = 1, .integer = true},
	    {.name = "x-why", .value = "exit 3", .len = 6}};
	const char *const drops[] = {"drop-too", NULL};
	struct publish p = {.headers = add,
			    .nheaders = 2,
			    .drop_header = "drop-me",
			    .drop_headers = drops};
	amqp_table_entry_t e[8];
	amqp_table_t t;
	int i;

	like._flags = AMQP_BASIC_HEADERS_FLAG;
	like.headers.num_entries = 5;
	like.headers.entries = old;
	t = mq_merge_headers(&like, &p, e, 7);
	CHECK(t.num_entries == 3);
	CHECK(find(&t, "keep") == 0);
	CHECK(find(&t, "x-delivery-count") == -1);
	CHECK(find(&t, "drop-me") == -1);
	CHECK(find(&t, "drop-too") == -1);
	i = find(&t, "x-attempt");
	CHECK(i >= 0 && t.entries[i].value.kind == AMQP_FIELD_KIND_I64 &&
	      t.entries[i].value.value.i64 == 2);
	i = find(&t, "x-why");
	CHECK(i >= 0 && t.entries[i].value.kind == AMQP_FIELD_KIND_UTF8 &&
	      t.entries[i].value.value.bytes.len == 6);
	/* no like: only ours; a small cap is never overrun */
	t = mq_merge_headers(NULL, &p, e, 2);
	CHECK(t.num_entries == 2 && find(&t, "x-why") == 1);
	t = mq_merge_headers(&like, &p, e, 1);
	CHECK(t.num_entries == 1 && find(&t, "keep") == 0);
	/* like without the headers flag: its table is not read */
	like._flags = 0;
	t = mq_merge_headers(&like, &p, e, 7);
	CHECK(t.num_entries == 2);
}

/* --- consumer_timeout from the broker's words --- */

static void test_consumer_timeout(void)
{
	const char *rabbit =
	    "PRECONDITION_FAILED - delivery acknowledgement on channel 1 "
	    "timed out. Timeout value used: 3000 ms. This timeout value can "
	    "be configured, see consumers doc guide to learn more";

	CHECK(mq_timeout_of_close(AMQP_PRECONDITION_FAILED, rabbit) == 3000);
	CHECK(mq_timeout_of_close(AMQP_PRECONDITION_FAILED,
				  "PRECONDITION_FAILED - delivery "
				  "acknowledgement on channel 1 timed out") ==
	      0);
	CHECK(mq_timeout_of_close(AMQP_NOT_FOUND, rabbit) == -1);
	CHECK(mq_timeout_of_close(AMQP_PRECONDITION_FAILED,
				  "PRECONDITION_FAILED - inequivalent arg "
				  "'x-queue-type'") == -1);
	CHECK(mq_timeout_of_close(AMQP_PRECONDITION_FAILED, "") == -1);
	CHECK(mq_timeout_of_close(AMQP_PRECONDITION_FAILED,
				  "delivery acknowledgement timed out. "
				  "Timeout value used: 99999999999999 ms") ==
	      2147483647);
}

int main(void)
{
	test_url_table();
	test_url_like_rabbitmq_c();
	test_url_words();
	test_node_order();
	test_confirms();
	test_merge_headers();
	test_consumer_timeout();
	return unit_done("test_amqp");
}
