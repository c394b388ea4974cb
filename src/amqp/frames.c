/* frames.c: the frame pump: deliveries, confirms, closes, blocked, read in
 * turn. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mq_int.h"

static void push_pending(struct mq *m, struct delivery *d)
{
	struct pending *p = xcalloc(1, sizeof(*p));

	p->d = d;
	if (m->tail != NULL)
		m->tail->next = p;
	else
		m->head = p;
	m->tail = p;
}

static enum mq_event on_frame(struct mq *m, amqp_frame_t *f);

/*
 * The next frame of channel ch's content, serving frames of other channels
 * (confirms, closes, blocked) meanwhile. 0, or -1 with the connection
 * marked closed.
 */
static int content_frame(struct mq *m, amqp_channel_t ch, amqp_frame_t *f,
			 int type)
{
	for (;;) {
		struct timeval tv = {RPC_TIMEOUT_S, 0};
		int st = amqp_simple_wait_frame_noblock(m->conn, f, &tv);

		if (st == AMQP_STATUS_TIMEOUT) {
			mq_set_error(m,
				     "receive: a message's content did not "
				     "follow within %d s",
				     RPC_TIMEOUT_S);
			m->closed = true;
			return -1;
		}
		if (mq_check_status(m, st, "receive"))
			return -1;
		if (f->channel == ch && f->frame_type == type)
			return 0;
		if (f->channel == ch) {
			mq_set_error(m,
				     "receive: frame type %d where content "
				     "was due",
				     f->frame_type);
			m->closed = true;
			return -1;
		}
		if (on_frame(m, f) == MQ_CLOSED)
			return -1;
	}
}

/* Where a body's frames go: k's buffer, a spool (over max_body), or
 * nowhere (k NULL). */
static void take_fragment(struct mq *m, amqp_channel_t ch, struct kept *k,
			  const amqp_bytes_t *b, size_t at)
{
	if (k == NULL)
		return;
	if (k->over == 0) {
		memcpy((char *)k->body + at, b->bytes, b->len);
		return;
	}
	mq_spool_write(k, b->bytes, b->len);
	/* the library holds each frame in the channel's pool until
	 * released: released frame by frame, or it would keep them all (the
	 * properties are in k's own pool) */
	amqp_maybe_release_buffers_on_channel(m->conn, ch);
}

/* The body frames of size bytes on channel ch, into k (see above). */
static int read_body(struct mq *m, amqp_channel_t ch, struct kept *k,
		     size_t size)
{
	amqp_frame_t f;
	size_t got = 0;

	while (got < size) {
		if (content_frame(m, ch, &f, AMQP_FRAME_BODY) != 0)
			return -1;
		if (f.payload.body_fragment.len > size - got) {
			mq_set_error(m, "receive: body longer than announced");
			m->closed = true;
			return -1;
		}
		take_fragment(m, ch, k, &f.payload.body_fragment, got);
		got += f.payload.body_fragment.len;
	}
	return 0;
}

/*
 * Read (and, with k, keep) the content of a message on channel ch. A
 * delivery's body over max_body is never held in memory: it goes to a
 * spool file (oversize.c), and *body_len is what of it was kept.
 */
int mq_read_content(struct mq *m, amqp_channel_t ch, struct kept *k,
		    size_t *body_len)
{
	amqp_frame_t f;
	size_t size;
	int r;

	if (content_frame(m, ch, &f, AMQP_FRAME_HEADER) != 0)
		return -1;
	size = (size_t)f.payload.properties.body_size;
	if (k != NULL) {
		mq_keep_props(&k->pool, f.payload.properties.decoded,
			      &k->props);
		if (ch == CHANNEL && m->max_body > 0 && size > m->max_body)
			mq_spool_open(k, size);
		else if ((k->body = malloc(size > 0 ? size : 1)) == NULL)
			fatal("malloc %zu", size);
	}
	r = read_body(m, ch, k, size);
	if (k != NULL && k->over > 0)
		size = mq_spool_end(k, r == 0);
	if (body_len != NULL)
		*body_len = size;
	return r;
}

/*
 * basic.deliver has come: read its properties and body frame by frame.
 * Properties the library cannot decode leave the connection unusable;
 * the message is then rejected (a dead-letter policy catches it), so that
 * it cannot kill worker after worker.
 */
static enum mq_event on_deliver(struct mq *m, amqp_channel_t ch,
				const amqp_basic_deliver_t *in)
{
	amqp_basic_deliver_t dv = *in;
	struct kept *k = xcalloc(1, sizeof(*k));
	size_t len = 0;
	char *rk;

	/* the method's strings live in a pool the next frames recycle */
	init_amqp_pool(&k->pool, 4096);
	dv.exchange = mq_keep_bytes(&k->pool, in->exchange);
	dv.routing_key = mq_keep_bytes(&k->pool, in->routing_key);
	dv.consumer_tag = amqp_empty_bytes;
	if (mq_read_content(m, ch, k, &len) == 0) {
		push_pending(m, mq_to_delivery(&dv, k, len));
		return MQ_DELIVERY;
	}
	if (strstr(m->error, amqp_error_string2(AMQP_STATUS_BAD_AMQP_DATA))) {
		rk = mq_bytes_str(dv.routing_key);
		(void)amqp_basic_nack(m->conn, ch, dv.delivery_tag, 0, 0);
		mq_set_error(
		    m,
		    "a message (routing key %s) has properties that "
		    "cannot be decoded: rejected it (a dead-letter policy "
		    "on the queue keeps it)",
		    rk ? rk : "-");
		free(rk);
	}
	mq_free_kept(k);
	return MQ_CLOSED;
}

/* The broker closed channel 1 or 2, or the connection. */
static enum mq_event on_close(struct mq *m, amqp_frame_t *f)
{
	if (f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_t *c = f->payload.method.decoded;

		mq_set_error(m, "broker closed the channel: %u %.*s",
			     c->reply_code, (int)c->reply_text.len,
			     (char *)c->reply_text.bytes);
		mq_channel_closed(m, f->channel, c);
		return f->channel == PUB_CHANNEL ? MQ_NONE : MQ_CLOSED;
	}
	amqp_connection_close_t *c = f->payload.method.decoded;
	amqp_connection_close_ok_t ok = {0};

	m->reply_code = c->reply_code;
	mq_set_error(m, "broker closed the connection: %u %.*s", c->reply_code,
		     (int)c->reply_text.len, (char *)c->reply_text.bytes);
	amqp_send_method(m->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
	m->closed = true;
	return MQ_CLOSED;
}

/* connection.blocked or unblocked: the broker's alarm on publishing. */
static enum mq_event on_blocked(struct mq *m, amqp_frame_t *f)
{
	amqp_connection_blocked_t *b = f->payload.method.decoded;

	m->blocked = f->payload.method.id == AMQP_CONNECTION_BLOCKED_METHOD;
	if (m->blocked)
		snprintf(m->blocked_reason, sizeof(m->blocked_reason), "%.*s",
			 (int)b->reason.len, (char *)b->reason.bytes);
	return MQ_NONE;
}

/* A frame that is not a delivery: returns the event it means. */
static enum mq_event on_frame(struct mq *m, amqp_frame_t *f)
{
	if (f->frame_type != AMQP_FRAME_METHOD)
		return MQ_NONE;
	switch (f->payload.method.id) {
	case AMQP_BASIC_ACK_METHOD: {
		amqp_basic_ack_t *a = f->payload.method.decoded;

		if (f->channel == PUB_CHANNEL)
			mq_track_answer(&m->track, a->delivery_tag, a->multiple,
					true);
		return MQ_NONE;
	}
	case AMQP_BASIC_NACK_METHOD: {
		amqp_basic_nack_t *a = f->payload.method.decoded;

		if (f->channel == PUB_CHANNEL)
			mq_track_answer(&m->track, a->delivery_tag, a->multiple,
					false);
		return MQ_NONE;
	}
	case AMQP_BASIC_RETURN_METHOD:
		/* its content follows: read past it */
		if (mq_read_content(m, f->channel, NULL, NULL) != 0)
			return MQ_CLOSED;
		m->returned = true;
		return MQ_NONE;
	case AMQP_BASIC_DELIVER_METHOD:
		/* channel 2 consumes only replies (mq_reply_consume) */
		if (f->channel == CHANNEL || f->channel == PUB_CHANNEL)
			return on_deliver(m, f->channel,
					  f->payload.method.decoded);
		return MQ_NONE;
	case AMQP_BASIC_CANCEL_OK_METHOD:
		if (f->channel == CHANNEL)
			m->cancelling = false; /* no delivery follows it */
		return MQ_NONE;
	case AMQP_BASIC_CANCEL_METHOD:
		mq_set_error(
		    m, "the broker cancelled the consumer (queue deleted?)");
		free(m->consumer_tag);
		m->consumer_tag = NULL;
		m->cancelling = false;
		/* kept for mq_poll/mq_service, should a caller drop it */
		m->cancelled = true;
		return MQ_CANCELLED;
	case AMQP_CONNECTION_BLOCKED_METHOD:
	case AMQP_CONNECTION_UNBLOCKED_METHOD:
		return on_blocked(m, f);
	case AMQP_CHANNEL_CLOSE_METHOD:
	case AMQP_CONNECTION_CLOSE_METHOD:
		return on_close(m, f);
	default:
		return MQ_NONE;
	}
}

/*
 * Read one thing within tv: a delivery (queued), a control frame, or
 * nothing. Returns MQ_DELIVERY when a delivery was queued.
 */
enum mq_event mq_read_one(struct mq *m, struct timeval *tv)
{
	amqp_frame_t f;
	int st;

	if (m->closed)
		return MQ_CLOSED;
	amqp_maybe_release_buffers(m->conn);
	st = amqp_simple_wait_frame_noblock(m->conn, &f, tv);
	if (st == AMQP_STATUS_TIMEOUT)
		return MQ_NONE;
	if (mq_check_status(m, st, "receive"))
		return MQ_CLOSED;
	return on_frame(m, &f);
}

enum mq_event mq_poll(struct mq *m, struct delivery **out)
{
	struct pending *p;
	enum mq_event e;

	for (;;) {
		if (m->head != NULL) {
			p = m->head;
			m->head = p->next;
			if (m->head == NULL)
				m->tail = NULL;
			*out = p->d;
			free(p);
			return MQ_DELIVERY;
		}
		if (m->cancelled) {
			m->cancelled = false;
			return MQ_CANCELLED;
		}
		struct timeval tv0 = {0, 0};

		e = mq_read_one(m, &tv0);
		if (e == MQ_CANCELLED)
			m->cancelled = false; /* told now */
		if (e != MQ_DELIVERY)
			return e;
	}
}

enum mq_event mq_service(struct mq *m)
{
	enum mq_event e;

	do {
		struct timeval tv0 = {0, 0};

		e = mq_read_one(m, &tv0);
	} while (e == MQ_DELIVERY);
	if (e == MQ_CANCELLED)
		m->cancelled = false; /* told now */
	if (e == MQ_NONE && m->cancelled) {
		m->cancelled = false;
		return MQ_CANCELLED;
	}
	return e;
}

int mq_ack(struct mq *m, uint64_t tag)
{
	return mq_check_status(m, amqp_basic_ack(m->conn, CHANNEL, tag, 0),
			       "basic.ack");
}

int mq_nack(struct mq *m, uint64_t tag, bool requeue)
{
	return mq_check_status(
	    m, amqp_basic_nack(m->conn, CHANNEL, tag, 0, requeue),
	    "basic.nack");
}
