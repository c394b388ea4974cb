/*
 * wake.c: when a worker's poll must return: each deadline it has (the
 * heartbeat, the handler's, settling, queue.slow, the stop, draining, the
 * watcher, the home probe) is one timers.c owner; the loop's turn does
 * the work, so an owner here only wakes it.
 */
#include "config.h"

#include "worker/worker_int.h"

/* An absolute deadline that holds while on; 0 there means at once. */
static int64_t due_at(bool on, int64_t at)
{
	return !on ? 0 : at > 0 ? at : 1;
}

/* A wait in ms from now (-1: none) as a deadline. */
static int64_t due_in(int ms)
{
	return ms < 0 ? 0 : now_ms() + ms;
}

static int64_t heartbeat_next(void *arg)
{
	struct worker *w = arg;

	return due_at(w->cf->broker.heartbeat > 0, w->service_at);
}

static int64_t handler_next(void *arg)
{
	struct worker *w = arg;

	return w->h != NULL   ? due_in(handler_next_timer(w->h))
	       : w->p != NULL ? due_in(persistent_next_timer(w->p))
			      : 0;
}

static int64_t settle_next(void *arg)
{
	struct worker *w = arg;

	return w->settling ? due_in(settle_next_timer(&w->set)) : 0;
}

static int64_t slow_next(void *arg)
{
	struct worker *w = arg;

	return w->slow_at != 0 && message_running(w) ? w->slow_at : 0;
}

static int64_t stop_next(void *arg)
{
	struct worker *w = arg;

	/* settling past it: a published copy's confirm has until
	 * abandon_at (settle.c), the loop is woken then, not each turn */
	return due_at(w->stopping && w->d != NULL && !w->stop_killed,
		      w->settling && w->set.abandon_at > w->stop_deadline
			  ? w->set.abandon_at
			  : w->stop_deadline);
}

static int64_t drain_next(void *arg)
{
	struct worker *w = arg;

	return due_at(w->retiring && w->d == NULL, w->drain_until);
}

static int64_t watch_next(void *arg)
{
	struct worker *w = arg;

	return due_at(w->watch_ms > 0 && !w->retiring && !w->settling,
		      w->next_watch);
}

static int64_t probe_next(void *arg)
{
	struct worker *w = arg;

	return due_at(w->node != w->home && w->d == NULL && !w->retiring,
		      w->next_probe);
}

void wake_init(struct worker *w)
{
	timers_add(&w->timers, "heartbeat", heartbeat_next, NULL, w);
	timers_add(&w->timers, "handler", handler_next, NULL, w);
	timers_add(&w->timers, "settle", settle_next, NULL, w);
	timers_add(&w->timers, "slow", slow_next, NULL, w);
	timers_add(&w->timers, "stop", stop_next, NULL, w);
	timers_add(&w->timers, "drain", drain_next, NULL, w);
	timers_add(&w->timers, "watch", watch_next, NULL, w);
	timers_add(&w->timers, "probe", probe_next, NULL, w);
}

int wake_poll_ms(const struct worker *w)
{
	/* what rabbitmq-c holds already is news now */
	if (mq_buffered(w->mq) || (w->d == NULL && mq_has_news(w->mq)))
		return 0;
	return timers_wait_ms(&w->timers, now_ms());
}
