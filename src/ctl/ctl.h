/*
 * ctl.h: warrenctl's commands that go straight to the broker.
 */
#ifndef WARREN_CTL_CTL_H
#define WARREN_CTL_CTL_H

#include "amqp/mq.h"

/* ------------------------------------------------------------------ */
/* replay.c: warrenctl's failed and replay, straight to the broker */

struct replay_opts {
	const char *conf;  /* the configuration file */
	const char *queue; /* QUEUE; its parked messages are QUEUE.failed */
	long limit;	   /* messages at most (replayed, for replay); 0: all */
	bool json;	   /* failed: JSON instead of a table */
	const char *reason; /* replay: only reasons containing it, or NULL */
};

/* warrenctl failed: list QUEUE.failed, leaving it as it was. Exit status. */
int replay_list(const struct replay_opts *o);
/* warrenctl replay: move parked messages back to QUEUE. Exit status. */
int replay_run(const struct replay_opts *o);
/* Text safe for a terminal: control bytes become '?', cut to at most max
 * bytes (at a UTF-8 boundary, "..." marking the cut). Caller frees. */
char *ctl_printable(const char *s, size_t len, size_t max);

/* ------------------------------------------------------------------ */
/* death.c: a message the broker dead-lettered, from its x-death header */

struct death {
	char *reason;	/* "delivery_limit", "rejected", "expired", "maxlen" */
	char *queue;	/* where it was dead-lettered from, or NULL */
	long long time; /* Unix seconds, or -1 */
};
/* The latest dead-lettering of d: 0 and x (free with death_free), or -1
 * when d has no readable x-death. */
int death_of(const struct delivery *d, struct death *x);
void death_free(struct death *x);

#endif
