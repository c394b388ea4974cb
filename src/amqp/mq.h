/* mq.h: the AMQP layer as the rest of warren sees it (no rabbitmq-c types). */
#ifndef WARREN_MQ_H
#define WARREN_MQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h" /* broker_conf, queue_conf, delivery, header */

struct mq;

enum mq_event {
	MQ_NONE,      /* nothing more to read now */
	MQ_DELIVERY,  /* *out holds a message */
	MQ_CANCELLED, /* the broker cancelled our consumer */
	MQ_CLOSED,    /* connection or channel gone; see mq_error */
};

/* connect.c */
/*
 * Connect to the first reachable node of broker's URLs: number first, then
 * the others in turn from one that rotate picks (*node: the one reached),
 * within connect_timeout each, log in
 * (announcing consumer_cancel_notify, connection.blocked, publisher_confirms),
 * and open channel 1 for consuming. Channel 2, for declaring side queues and
 * publishing, opens at its first use (the broker closing it over a refused
 * declare or publish leaves channel 1 and its unacked deliveries untouched).
 * When it reached another node than first and node is not NULL, first's
 * address is resolved here, once, for mq_probe_home. NULL on failure, reason in
 * err (never the password) and *status set to an mq_failure.
 */
enum mq_failure {
	MQ_FAIL_CONNECT = 1, /* no node answered, or a connection broke */
	MQ_FAIL_LOGIN,	     /* a node refused the login or password */
};
struct mq *mq_connect(const struct broker_conf *b, const char *name, int first,
		      int rotate, int *node, int *status, char *err,
		      size_t errlen);
/* Abortive when the connection is unsound, else a brief graceful close. */
void mq_close(struct mq *m);
int mq_fd(struct mq *m);
/* true when the library holds unread frames or bytes (poll would miss) */
bool mq_buffered(struct mq *m);
/* mq_poll() has something to say without reading the socket: buffered
 * bytes or frames, deliveries read while busy, a cancel, a close. */
bool mq_has_news(struct mq *m);

/* socket.c */
/* Parse the CAs an amqps:// broker's certificate is checked with, once,
 * before workers are forked (master: at start and every reload). */
void mq_preload_ca(const struct broker_conf *b);
/*
 * 0 when the node mq_connect was asked to try first (the worker's home)
 * takes a TCP connection within timeout_ms, at the address resolved when m
 * connected: no name lookup here. -1 otherwise, and always when that name
 * did not resolve then (the next connect looks it up again).
 */
int mq_probe_home(struct mq *m, int timeout_ms);

/* reply.c */
const char *mq_error(struct mq *m);
/* true once the connection (or the consuming channel) is gone */
bool mq_lost(const struct mq *m);
/* The broker's reason while it blocks our publishing, else NULL. */
const char *mq_blocked(const struct mq *m);
/*
 * After the broker closed the consuming channel: its consumer_timeout in
 * ms when that was the reason (0 if it did not say the value), else -1.
 */
int mq_consumer_timeout_ms(const struct mq *m);

/* queue.c */
/*
 * Declare q as configured (durable, type, queue.arguments; a quorum queue
 * with x-delivery-limit and at-least-once dead-lettering to NAME.failed,
 * declared first), or with declare = false only check that it exists
 * (passive); then declare each bind section's exchange and bind q with
 * each key. On the consuming channel: a refusal closes it (mq_error).
 */
int mq_declare(struct mq *m, const struct queue_conf *q);
int mq_declare_named(struct mq *m, const char *name, bool durable,
		     enum queue_type type);
/*
 * Declare the durable queue NAME whose messages wait ttl seconds and are
 * then dead-lettered back to target (the retry queues).
 */
int mq_declare_delay(struct mq *m, const char *name, const char *target,
		     int ttl);
int mq_consume(struct mq *m, const char *queue, int prefetch);
/* basic.cancel, not waiting for cancel-ok (it arrives as a later frame) */
int mq_cancel(struct mq *m);
/* A cancel was sent and its cancel-ok not read yet: deliveries may come. */
bool mq_cancelling(const struct mq *m);
/*
 * The ready messages of queue name (passive queue.declare, on the
 * publishing channel): 0 and *ready, or -1 (mq_error; a refusal closes
 * only that channel, reopened on its next use).
 */
int mq_queue_ready(struct mq *m, const char *name, long *ready);
/* for warrenctl: */
/*
 * Whether queue name exists (passive queue.declare on the consuming
 * channel): 0 and its ready messages in *messages, 1 when there is no
 * such queue, -1 on another error. Either failure closes the channel:
 * only mq_close() follows.
 */
int mq_declare_passive(struct mq *m, const char *name, uint32_t *messages);
/*
 * basic.get of one message of queue, not acked (settle it with mq_ack,
 * mq_nack or mq_requeue_upto): 1 and *out (free with delivery_free),
 * 0 when the queue has no ready message, -1 on error (mq_error).
 */
int mq_get(struct mq *m, const char *queue, struct delivery **out);
/* Give back every delivery not yet settled up to tag, requeued (one
 * basic.nack with multiple set: the broker keeps the queue's order). */
int mq_requeue_upto(struct mq *m, uint64_t tag);

/* frames.c */
/*
 * Read what the socket holds without blocking, keeping heartbeats: sends
 * one when due, fails when the broker's are overdue.
 */
enum mq_event mq_poll(struct mq *m, struct delivery **out);
/* Like mq_poll, but deliveries stay queued for a later mq_poll. */
enum mq_event mq_service(struct mq *m);
int mq_ack(struct mq *m, uint64_t tag);
int mq_nack(struct mq *m, uint64_t tag, bool requeue);

/* oversize.c */
/*
 * Deliveries on the consuming channel whose body is over bytes (0: no
 * limit) are not read into memory: delivery.body_over says so, the body
 * is a mapping of an unlinked spool file, or NULL when none took it.
 */
void mq_set_max_body(struct mq *m, size_t bytes);

/* props.c */
/* About how many bytes d's headers take in a content header frame. */
size_t mq_headers_size(const struct delivery *d);

/* publish.c */
/* Put the publishing channel in confirm mode (once). */
int mq_confirm_select(struct mq *m);
/*
 * Publish a persistent copy of body with the given properties (message_id,
 * headers), mandatory, on the publishing channel. Each frame is written
 * only once the socket takes it, within 30 s or 1 s per MiB of body: past
 * that the connection counts as lost. 0 when sent (see mq_confirm_state).
 */
struct publish {
	const char *exchange;
	const char *routing_key;
	const void *body;
	size_t body_len;
	const struct delivery *like; /* copy properties from, or NULL */
	const char *message_id;	     /* overrides like's */
	struct header *headers;	     /* added/replaced headers */
	int nheaders;
	const char *drop_header; /* left out of like's, or NULL;
				  * x-delivery-count always is */
	const char *expiration;	 /* per-message TTL (ms), or NULL */
	/* more names left out of like's, NULL-terminated; or NULL */
	const char *const *drop_headers;
	const char *correlation_id; /* overrides like's, or NULL */
	const char *reply_to;	    /* overrides like's, or NULL */
	bool not_mandatory; /* an unroutable message is dropped, not returned */
	uint64_t timestamp; /* Unix seconds; 0: like's, or none */
};
int mq_publish(struct mq *m, const struct publish *p);
/* Wait for confirms of every publish so far; 0 when all acked. */
int mq_wait_confirms(struct mq *m, int timeout_ms);

/* request.c */
#define MQ_REPLY_TO "amq.rabbitmq.reply-to"
/* Consume MQ_REPLY_TO (no-ack) on the publishing channel, before the
 * request is published there with reply_to MQ_REPLY_TO. */
int mq_reply_consume(struct mq *m);
/* The next delivery within timeout_ms: 1 and *out (delivery_free), 0
 * when none came, -1 when the connection failed (mq_error). */
int mq_wait_delivery(struct mq *m, int timeout_ms, struct delivery **out);

enum mq_confirm {
	MQ_CONFIRM_PENDING,  /* not all answered yet */
	MQ_CONFIRM_OK,	     /* every copy so far confirmed */
	MQ_CONFIRM_REFUSED,  /* nacked, unroutable, or the publishing channel
			      * closed by the broker: mq_error says which */
	MQ_CONFIRM_UNROUTED, /* confirmed, but came back: no such queue */
	MQ_CONFIRM_LOST,     /* the connection is gone */
};
/* Where the publishes so far stand, from the frames read until now. */
enum mq_confirm mq_confirm_state(struct mq *m);

#endif
