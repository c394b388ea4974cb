/*
 * renew.c: when a persistent handler is renewed between messages
 * (max_messages, max_rss, max_age), with max_messages and max_age spread
 * by up to +-10% per worker so that a pool's handlers do not restart
 * together; and how long a handler that keeps ending waits for its
 * restart. The decisions are pure; renew_rss_kb() reads /proc.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "handler/handler_int.h"

/*
 * Worker n's place in [0, 1): n times the golden ratio, modulo 1. The
 * first workers of a pool land far apart, whatever the pool's size, and
 * a worker respawned into its slot keeps its place.
 */
static double spread_of(int worker)
{
	double x = (double)(unsigned)worker * 0.6180339887498949;

	return x - (double)(long long)x;
}

int64_t renew_spread(int64_t value, int worker)
{
	double off = (spread_of(worker) * 2.0 - 1.0) * 0.1 * (double)value;
	int64_t v = value + (int64_t)(off < 0 ? off - 0.5 : off + 0.5);

	if (value <= 0)
		return 0;
	return v < 1 ? 1 : v;
}

void renew_init(struct renew *r, const struct queue_conf *q, int worker)
{
	r->max_messages = (int)renew_spread(q->max_messages, worker);
	r->max_age_ms = renew_spread((int64_t)q->max_age * 1000, worker);
	r->max_rss_kb = (long)q->max_rss * 1024;
}

enum renew_reason renew_due(const struct renew *r, int handled, int64_t age_ms,
			    long rss_kb)
{
	if (r->max_messages > 0 && handled >= r->max_messages)
		return RENEW_MESSAGES;
	if (r->max_rss_kb > 0 && rss_kb > r->max_rss_kb)
		return RENEW_RSS;
	if (r->max_age_ms > 0 && age_ms >= r->max_age_ms)
		return RENEW_AGE;
	return RENEW_NONE;
}

void renew_words(const struct renew *r, enum renew_reason why, int handled,
		 int64_t age_ms, long rss_kb, char *buf, size_t len)
{
	switch (why) {
	case RENEW_MESSAGES:
		snprintf(buf, len, "served %d messages (max_messages %d)",
			 handled, r->max_messages);
		break;
	case RENEW_RSS:
		snprintf(buf, len,
			 "resident memory %ld MiB above max_rss %ld MiB "
			 "after %d messages",
			 rss_kb / 1024, r->max_rss_kb / 1024, handled);
		break;
	case RENEW_AGE:
		snprintf(buf, len,
			 "ran %lld s (max_age, %lld s for this worker) and "
			 "served %d messages",
			 (long long)(age_ms / 1000),
			 (long long)(r->max_age_ms / 1000), handled);
		break;
	default:
		snprintf(buf, len, "no reason");
		break;
	}
}

int renew_restart_delay(int failures)
{
	int64_t d;

	if (failures <= 1)
		return 0;
	d = (int64_t)RENEW_RESTART_FIRST_MS
	    << (failures - 2 < 16 ? failures - 2 : 16);
	return d > RENEW_RESTART_MAX_MS ? RENEW_RESTART_MAX_MS : (int)d;
}

long renew_statm_kb(const char *text, long page_kb)
{
	long size, resident;

	if (sscanf(text, "%ld %ld", &size, &resident) != 2 || resident < 0)
		return -1;
	return resident * page_kb;
}

long renew_rss_kb(pid_t pid)
{
	char buf[128];

	/* kept open for the next message, as cost.c's readings */
	if (cost_proc_statm(pid, buf, sizeof(buf)) < 0)
		return -1;
	return renew_statm_kb(buf, sysconf(_SC_PAGESIZE) / 1024);
}
