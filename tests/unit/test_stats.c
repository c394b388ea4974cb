/* test_stats.c: Prometheus text, the duration histogram, the master's
 * timer heap and pid map, and the watchdog's period. */
#include "config.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "master/master.h"
#include "unit.h"

static char *render(void (*fn)(FILE *, void *), void *arg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	fn(f, arg);
	fclose(f);
	return text;
}

static void sample_escaped(FILE *f, void *arg)
{
	const char *kv[] = {"queue", "a\"b\\c\nd", "outcome", "ack", NULL};

	(void)arg;
	prom_sample(f, "warren_messages_total", kv, 100);
	prom_sample(f, "x", NULL, 0.5);
}

static void test_labels_escaped(void)
{
	char *t = render(sample_escaped, NULL);

	CHECK_STR(t, "warren_messages_total{queue=\"a\\\"b\\\\c\\nd\","
		     "outcome=\"ack\"} 100\nx{} 0.5\n");
	free(t);
}

static void histogram_text(FILE *f, void *arg)
{
	const char *kv[] = {"queue", "q", NULL};

	prom_histogram(f, "d", kv, arg);
}

static void test_histogram(void)
{
	struct histogram h = {0};
	char *t;

	histogram_observe(&h, 0.005); /* first bucket */
	histogram_observe(&h, 0.01);  /* le is inclusive */
	histogram_observe(&h, 0.3);   /* 0.5, not 0.25 */
	histogram_observe(&h, 7200);  /* past an hour: +Inf only */
	CHECK(h.count == 4);
	CHECK(h.counts[0] == 2);
	CHECK(h.counts[5] == 1);
	CHECK(h.counts[HISTOGRAM_BUCKETS] == 1);
	t = render(histogram_text, &h);
	CHECK(strstr(t, "d_bucket{queue=\"q\",le=\"0.01\"} 2\n") != NULL);
	CHECK(strstr(t, "d_bucket{queue=\"q\",le=\"0.25\"} 2\n") != NULL);
	CHECK(strstr(t, "d_bucket{queue=\"q\",le=\"0.5\"} 3\n") != NULL);
	CHECK(strstr(t, "d_bucket{queue=\"q\",le=\"3600\"} 3\n") != NULL);
	CHECK(strstr(t, "d_bucket{queue=\"q\",le=\"+Inf\"} 4\n") != NULL);
	CHECK(strstr(t, "d_count{queue=\"q\"} 4\n") != NULL);
	CHECK(strstr(t, "d_sum{queue=\"q\"} 7200.315\n") != NULL);
	free(t);
}

static void test_timerq(void)
{
	struct timerq q = {0};
	int64_t at[] = {50, 10, 40, 10, 30, 20, 60, 0};
	int64_t last = -1;
	int n = 0;

	for (int i = 0; i < 8; i++)
		timerq_push(&q, at[i], &at[i]);
	for (int i = 0; i < 1000; i++) /* growth past the first block */
		timerq_push(&q, 1000 + (i * 7919) % 1000, NULL);
	while (timerq_peek(&q) != NULL) {
		const struct timer *t = timerq_peek(&q);

		CHECK(t->at >= last);
		last = t->at;
		n++;
		timerq_pop(&q);
	}
	CHECK(n == 1008);
	timerq_pop(&q); /* empty: nothing happens */
	timerq_free(&q);
}

static void test_pidmap(void)
{
	struct pidmap m = {0};
	static int vals[5000];
	int cap;

	CHECK(pidmap_get(&m, 42) == NULL); /* empty: nothing, no crash */
	for (int i = 1; i <= 5000; i++)
		pidmap_put(&m, i * 7, &vals[i - 1]);
	CHECK(pidmap_get(&m, 7) == &vals[0]);
	CHECK(pidmap_get(&m, 35000) == &vals[4999]);
	CHECK(pidmap_get(&m, 8) == NULL);
	for (int i = 1; i <= 5000; i += 2)
		pidmap_del(&m, i * 7);
	CHECK(pidmap_get(&m, 7) == NULL);
	CHECK(pidmap_get(&m, 14) == &vals[1]); /* found past deleted ones */
	cap = m.cap;
	/* children come and go for ever: the table does not grow */
	for (int round = 0; round < 100; round++) {
		for (int i = 0; i < 1000; i++)
			pidmap_put(&m, 100000 + round * 1000 + i, vals);
		for (int i = 0; i < 1000; i++)
			pidmap_del(&m, 100000 + round * 1000 + i);
	}
	CHECK(m.cap <= cap * 2);
	CHECK(pidmap_get(&m, 35000) == &vals[4999]); /* kept through it */
	pidmap_free(&m);
	CHECK(m.cap == 0);
}

/* A timer owner for test_timers: due at *at, its runs counted. */
struct owner {
	int64_t at;
	int runs;
	int64_t ran_at;
	int order; /* when it ran, of all runs */
};
static int run_seq;

static int64_t owner_next(void *arg)
{
	return ((struct owner *)arg)->at;
}

static void owner_run(void *arg, int64_t now)
{
	struct owner *o = arg;

	o->runs++;
	o->ran_at = now;
	o->order = ++run_seq;
	o->at = 0; /* disarmed until set again */
}

static void test_timers(void)
{
	struct timers t = {0};
	struct owner a = {0}, b = {0}, c = {0};

	timers_add(&t, "a", owner_next, owner_run, &a);
	timers_add(&t, "b", owner_next, owner_run, &b);
	timers_add(&t, "c", owner_next, owner_run, &c);
	/* none armed: wait forever, nothing runs */
	CHECK(timers_next(&t) == 0);
	CHECK(timers_wait_ms(&t, 1000) == -1);
	CHECK(timers_run(&t, 1000) == 0);
	/* the earliest armed one decides the wait */
	a.at = 1500;
	b.at = 1200;
	CHECK(timers_next(&t) == 1200);
	CHECK(timers_wait_ms(&t, 1000) == 200);
	CHECK(timers_run(&t, 1000) == 0);
	CHECK(a.runs == 0 && b.runs == 0);
	/* due ones run once each, in the order added; later ones wait */
	c.at = 1100;
	CHECK(timers_wait_ms(&t, 1300) == 0);
	CHECK(timers_run(&t, 1300) == 2);
	CHECK(b.runs == 1 && c.runs == 1 && a.runs == 0);
	CHECK(b.order < c.order);
	CHECK(b.ran_at == 1300);
	CHECK(timers_wait_ms(&t, 1300) == 200);
	/* a deadline far off is capped, not overflowed */
	a.at = (int64_t)1 << 40;
	CHECK(timers_wait_ms(&t, 0) == INT_MAX);
	CHECK(timers_run(&t, 1 << 20) == 0);
	/* an owner without run only wakes the loop: due, counted, kept */
	struct owner w = {.at = 50};
	struct timers t2 = {0};

	timers_add(&t2, "wake", owner_next, NULL, &w);
	CHECK(timers_wait_ms(&t2, 10) == 40);
	CHECK(timers_run(&t2, 60) == 1);
	CHECK(w.runs == 0 && w.at == 50);
	CHECK(timers_wait_ms(&t2, 60) == 0);
}

/* systemd's WatchdogSec in ms, rounded up: under 1 ms is 1, never 0
 * (0 is off; half of it would wake the loop every turn). */
static void test_watchdog_ms(void)
{
	char pid[32];

	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	setenv("WATCHDOG_USEC", "1500", 1);
	CHECK(notify_watchdog_ms() == 2);
	setenv("WATCHDOG_USEC", "500", 1);
	CHECK(notify_watchdog_ms() == 1);
	setenv("WATCHDOG_USEC", "20000000", 1);
	CHECK(notify_watchdog_ms() == 20000);
	unsetenv("WATCHDOG_USEC");
	CHECK(notify_watchdog_ms() == 0);
	unsetenv("WATCHDOG_PID");
}

int main(void)
{
	test_labels_escaped();
	test_histogram();
	test_timerq();
	test_timers();
	test_pidmap();
	test_watchdog_ms();
	return unit_done("test_stats");
}
