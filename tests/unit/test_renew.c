/*
 * test_renew.c: the renewal of persistent handlers (spread limits and the
 * decision), queue.slow's words and wait channel, a message's wait from
 * its timestamp, and the /health answer.
 */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "master/pool.h"
#include "handler/handler_int.h"
#include "unit.h"

static void spread(void)
{
	int64_t lo = 1000000, hi = 0;

	CHECK(renew_spread(0, 1) == 0);
	CHECK(renew_spread(0, 7) == 0);
	CHECK(renew_spread(1, 3) >= 1);
	/* small counts stay as they are: 10% of 3 rounds to nothing */
	for (int w = 1; w <= 16; w++)
		CHECK(renew_spread(3, w) == 3);
	for (int w = 1; w <= 64; w++) {
		int64_t v = renew_spread(100000, w);

		CHECK(v >= 90000 && v <= 110000);
		CHECK(v == renew_spread(100000, w)); /* the same every time */
		if (w <= 8) {
			lo = v < lo ? v : lo;
			hi = v > hi ? v : hi;
		}
	}
	/* eight workers spread over more than 10% of the value */
	CHECK(hi - lo >= 10000);
	/* and no two of them restart together */
	for (int a = 1; a <= 8; a++)
		for (int b = a + 1; b <= 8; b++)
			CHECK(renew_spread(100000, a) !=
			      renew_spread(100000, b));
}

static void due(void)
{
	struct queue_conf q = {0};
	struct renew r;
	char words[160];

	renew_init(&r, &q, 1);
	CHECK(renew_due(&r, 1000000, 86400000, 1L << 30) == RENEW_NONE);
	q.max_messages = 3;
	q.max_rss = 64;
	q.max_age = 100;
	renew_init(&r, &q, 2);
	CHECK(r.max_messages == 3);
	CHECK(r.max_rss_kb == 64 * 1024);
	CHECK(r.max_age_ms >= 90000 && r.max_age_ms <= 110000);
	CHECK(renew_due(&r, 2, 0, 1024) == RENEW_NONE);
	CHECK(renew_due(&r, 3, 0, 1024) == RENEW_MESSAGES);
	CHECK(renew_due(&r, 1, 0, 64 * 1024) == RENEW_NONE); /* not above */
	CHECK(renew_due(&r, 1, 0, 64 * 1024 + 1) == RENEW_RSS);
	CHECK(renew_due(&r, 1, 0, -1) == RENEW_NONE); /* unknown */
	CHECK(renew_due(&r, 1, r.max_age_ms - 1, 10) == RENEW_NONE);
	CHECK(renew_due(&r, 1, r.max_age_ms, 10) == RENEW_AGE);
	renew_words(&r, RENEW_RSS, 6, 5000, 70 * 1024, words, sizeof(words));
	CHECK_STR(words, "resident memory 70 MiB above max_rss 64 MiB after 6 "
			 "messages");
	renew_words(&r, RENEW_MESSAGES, 3, 0, -1, words, sizeof(words));
	CHECK_STR(words, "served 3 messages (max_messages 3)");
	CHECK(renew_statm_kb("2000 300 100 1 0 200 0\n", 4) == 1200);
	CHECK(renew_statm_kb("garbage", 4) == -1);
	CHECK(renew_rss_kb(getpid()) > 0);
}

static void slow(void)
{
	char buf[200];

	CHECK(slow_deadline(1000, 0) == 0);
	CHECK(slow_deadline(1000, 5) == 6000);
	slow_wchan_text("hrtimer_nanosleep", 17, buf, sizeof(buf));
	CHECK_STR(buf, "hrtimer_nanosleep");
	slow_wchan_text("0", 1, buf, sizeof(buf));
	CHECK_STR(buf, "-");
	slow_wchan_text("", 0, buf, sizeof(buf));
	CHECK_STR(buf, "-");
	slow_wchan_text("a b\n", 4, buf, sizeof(buf));
	CHECK_STR(buf, "a?b");
	slow_words(buf, sizeof(buf), "m-1", 42, 12345, 10, "do_wait");
	CHECK_STR(buf, "m-1: slow: still running after 12.3 s (slow = 10): "
		       "pid 42, wchan do_wait");
	slow_words(buf, sizeof(buf), NULL, 7, 500, 1, "-");
	CHECK_STR(buf, "-: slow: still running after 0.5 s (slow = 1): pid 7, "
		       "wchan -");
	slow_wchan(getpid(), buf, sizeof(buf));
	CHECK(buf[0] != '\0');
}

static void waits(void)
{
	struct delivery d = {0};
	int64_t now = 1700000000500LL;

	CHECK(delivery_wait_ms(&d, now) == -1);
	d.timestamp = "1700000000";
	CHECK(delivery_wait_ms(&d, now) == 500);
	d.timestamp = "1699999990";
	CHECK(delivery_wait_ms(&d, now) == 10500);
	d.timestamp = "1700000100"; /* ahead of our clock */
	CHECK(delivery_wait_ms(&d, now) == 0);
	d.timestamp = "0";
	CHECK(delivery_wait_ms(&d, now) == -1);
	d.timestamp = "99999999999999";
	CHECK(delivery_wait_ms(&d, now) == -1);
	d.timestamp = "12x";
	CHECK(delivery_wait_ms(&d, now) == -1);
}

/* A pool of n slots of the given states (pid 0: down). */
static struct pool *pool_of(struct queue_conf *q, int n, const char *states)
{
	struct pool *p = calloc(1, sizeof(*p));

	p->q = q;
	p->nslots = n;
	p->slots = calloc((size_t)n, sizeof(*p->slots));
	for (int i = 0; i < n; i++) {
		struct slot *s = calloc(1, sizeof(*s));

		s->pool = p;
		s->number = i + 1;
		s->pid = states[i] == 'd' ? 0 : 100 + i;
		s->state = states[i] == 'd' || states[i] == 's' ? 0
			   : states[i] == 'b'			? REPORT_BUSY
					      : REPORT_CONSUMING;
		p->slots[i] = s;
	}
	return p;
}

static void pool_drop(struct pool *p)
{
	for (int i = 0; i < p->nslots; i++)
		free(p->slots[i]);
	free(p->slots);
	free(p);
}

static void health(void)
{
	struct queue_conf qa = {.name = "a", .workers = 2};
	struct queue_conf qb = {.name = "b", .workers = 1};
	struct master_view v = {0};
	struct pool *a = pool_of(&qa, 2, "ib"), *b = pool_of(&qb, 1, "d");
	int code = 0;
	char *t;

	a->next = b;
	v.pools = a;
	t = health_text(&v, &code);
	CHECK(code == 503);
	CHECK_STR(t, "queue b: no worker consuming\n");
	free(t);
	/* paused: not a problem */
	b->paused = true;
	t = health_text(&v, &code);
	CHECK(code == 200);
	CHECK_STR(t, "ok\n");
	free(t);
	b->paused = false;
	snprintf(b->last_error, sizeof(b->last_error),
		 "exited 13: no such file");
	b->slots[0]->pid = 200; /* respawned, not consuming yet */
	t = health_text(&v, &code);
	CHECK(code == 503);
	CHECK_STR(t,
		  "queue b: no worker consuming (exited 13: no such file)\n");
	free(t);
	/* every worker unable to reach the broker */
	b->last_error[0] = '\0';
	for (int i = 0; i < 2; i++) {
		a->slots[i]->pid = 0;
		a->slots[i]->state = 0;
		a->slots[i]->unreachable = true;
	}
	b->slots[0]->unreachable = true;
	t = health_text(&v, &code);
	CHECK(code == 503);
	CHECK_STR(t, "broker: none of the 3 workers can reach it\n"
		     "queue a: no worker consuming\n"
		     "queue b: no worker consuming\n");
	free(t);
	pool_drop(a);
	pool_drop(b);
}

int main(void)
{
	spread();
	due();
	slow();
	waits();
	health();
	return unit_done("test_renew");
}
