/* publish.c: persistent copies on channel 2, each frame under a deadline,
 * confirmed. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "mq_int.h"

#define MIN_CHUNK 4096 /* body bytes per frame, at least */

int mq_pub_channel(struct mq *m)
{
	if (m->closed)
		return -1;
	if (m->pub_open)
		return 0;
	amqp_channel_open(m->conn, PUB_CHANNEL);
	if (mq_check_reply_on(m, amqp_get_rpc_reply(m->conn), "channel.open",
			      PUB_CHANNEL))
		return -1;
	m->pub_open = true;
	/* what the closed channel refused is told already */
	m->refused = m->track.nacked = m->returned = false;
	if (m->confirming) {
		/* a reopened channel counts its publishes from 1 again */
		mq_track_reset(&m->track);
		amqp_confirm_select(m->conn, PUB_CHANNEL);
		if (mq_check_reply_on(m, amqp_get_rpc_reply(m->conn),
				      "confirm.select", PUB_CHANNEL))
			return -1;
	}
	return 0;
}

int mq_confirm_select(struct mq *m)
{
	if (m->confirming)
		return 0;
	if (!m->pub_open) { /* mq_pub_channel() selects it when it opens */
		m->confirming = true;
		return 0;
	}
	amqp_confirm_select(m->conn, PUB_CHANNEL);
	if (mq_check_reply_on(m, amqp_get_rpc_reply(m->conn), "confirm.select",
			      PUB_CHANNEL))
		return -1;
	m->confirming = true;
	return 0;
}

static bool key_is(amqp_bytes_t key, const char *name)
{
	return key.len == strlen(name) && memcmp(key.bytes, name, key.len) == 0;
}

/* Whether like's header o is left out: p replaces or drops it. */
static bool replaced(const amqp_table_entry_t *o, const struct publish *p)
{
	/* the broker's count belongs to the original */
	if (key_is(o->key, "x-delivery-count") ||
	    (p->drop_header != NULL && key_is(o->key, p->drop_header)))
		return true;
	for (int j = 0; j < p->nheaders; j++)
		if (key_is(o->key, p->headers[j].name))
			return true;
	for (int j = 0; p->drop_headers != NULL && p->drop_headers[j] != NULL;
	     j++)
		if (key_is(o->key, p->drop_headers[j]))
			return true;
	return false;
}

amqp_table_t mq_merge_headers(const amqp_basic_properties_t *like,
			      const struct publish *p, amqp_table_entry_t *e,
			      int cap)
{
	amqp_table_t t = {0, e};

	if (like != NULL && (like->_flags & AMQP_BASIC_HEADERS_FLAG))
		for (int i = 0;
		     i < like->headers.num_entries && t.num_entries < cap; i++)
			if (!replaced(&like->headers.entries[i], p))
				e[t.num_entries++] = like->headers.entries[i];
	for (int j = 0; j < p->nheaders && t.num_entries < cap; j++) {
		amqp_table_entry_t *n = &e[t.num_entries++];

		n->key = amqp_cstring_bytes(p->headers[j].name);
		if (p->headers[j].integer) {
			n->value.kind = AMQP_FIELD_KIND_I64;
			n->value.value.i64 =
			    strtoll(p->headers[j].value, NULL, 10);
		} else {
			n->value.kind = AMQP_FIELD_KIND_UTF8;
			n->value.value.bytes.bytes = p->headers[j].value;
			n->value.value.bytes.len = p->headers[j].len;
		}
	}
	return t;
}

/* The copy's properties: like's, then p's; *table (caller frees) or NULL. */
static void copy_props(const struct publish *p, amqp_basic_properties_t *props,
		       amqp_table_entry_t **table)
{
	const amqp_basic_properties_t *like = NULL;
	int cap;

	*table = NULL;
	if (p->like != NULL && p->like->amqp != NULL)
		like = &((struct kept *)p->like->amqp)->props;
	if (like != NULL)
		*props = *like;
	else
		memset(props, 0, sizeof(*props));
	props->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
	props->delivery_mode = 2;
	if (p->message_id != NULL) {
		props->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
		props->message_id = amqp_cstring_bytes(p->message_id);
	}
	if (p->correlation_id != NULL) {
		props->_flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
		props->correlation_id = amqp_cstring_bytes(p->correlation_id);
	}
	if (p->reply_to != NULL) {
		props->_flags |= AMQP_BASIC_REPLY_TO_FLAG;
		props->reply_to = amqp_cstring_bytes(p->reply_to);
	}
	if (p->timestamp != 0) {
		props->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
		props->timestamp = p->timestamp;
	}
	props->_flags &= ~AMQP_BASIC_EXPIRATION_FLAG;
	if (p->expiration != NULL) {
		props->_flags |= AMQP_BASIC_EXPIRATION_FLAG;
		props->expiration = amqp_cstring_bytes(p->expiration);
	}
	/* the broker checks user_id against our login: not ours to copy */
	props->_flags &= ~AMQP_BASIC_USER_ID_FLAG;
	if (p->nheaders == 0 &&
	    (like == NULL || !(like->_flags & AMQP_BASIC_HEADERS_FLAG)))
		return;
	cap = p->nheaders;
	if (like != NULL && (like->_flags & AMQP_BASIC_HEADERS_FLAG))
		cap += like->headers.num_entries;
	*table = xcalloc((size_t)cap + 1, sizeof(**table));
	props->_flags |= AMQP_BASIC_HEADERS_FLAG;
	props->headers = mq_merge_headers(like, p, *table, cap);
}

/*
 * The socket's own deadline, in place of a process-wide alarm: rabbitmq-c
 * 0.11 waits without limit for a socket that takes no bytes (a broker that
 * blocked publishing stops reading), so each frame is written only once
 * poll says the socket takes bytes. 0, or -1 past deadline.
 */
static int wait_writable(struct mq *m, int64_t deadline)
{
	struct pollfd p = {amqp_get_sockfd(m->conn), POLLOUT, 0};

	if (p.fd < 0)
		return 0; /* no socket: the send says so at once */
	for (;;) {
		int64_t left = deadline - now_ms();
		int r;

		if (left <= 0)
			return -1;
		r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r > 0)
			return 0; /* writable, or an error the send will tell */
		if (r < 0 && errno != EINTR)
			return 0;
	}
}

/*
 * Body bytes per frame: a socket poll calls writable has at least a third
 * of its send buffer free, so a frame of an eighth of it (at least 4 KiB)
 * goes out whole and the library never waits inside one.
 */
static size_t chunk_size(struct mq *m)
{
	int sndbuf = 0;
	socklen_t len = sizeof(sndbuf);
	size_t max = (size_t)amqp_get_frame_max(m->conn) - 8, c = MIN_CHUNK;

	if (getsockopt(amqp_get_sockfd(m->conn), SOL_SOCKET, SO_SNDBUF, &sndbuf,
		       &len) == 0 &&
	    (size_t)sndbuf / 8 > c)
		c = (size_t)sndbuf / 8;
	return c < max ? c : max;
}

static int send_frame(struct mq *m, amqp_frame_t *f, int64_t deadline,
		      int limit_s)
{
	if (wait_writable(m, deadline) != 0) {
		mq_set_error(m,
			     "basic.publish: the broker took no data for "
			     "%d s (blocked, or not reading)",
			     limit_s);
		m->closed = true; /* a frame may be half sent */
		return -1;
	}
	return mq_check_status(m, amqp_send_frame(m->conn, f), "basic.publish");
}

/* basic.publish, the content header, the body: as amqp_basic_publish. */
static int send_message(struct mq *m, const struct publish *p,
			amqp_basic_properties_t *props)
{
	amqp_basic_publish_t pub = {
	    .exchange = amqp_cstring_bytes(p->exchange ? p->exchange : ""),
	    .routing_key = amqp_cstring_bytes(p->routing_key),
	    .mandatory = !p->not_mandatory};
	int limit_s = SEND_MIN_S;
	size_t chunk = chunk_size(m);
	amqp_frame_t f = {.channel = PUB_CHANNEL};

	if (p->body_len / (1 << 20) > SEND_MIN_S)
		limit_s = (int)(p->body_len / (1 << 20));
	int64_t deadline = now_ms() + (int64_t)limit_s * 1000;

	f.frame_type = AMQP_FRAME_METHOD;
	f.payload.method.id = AMQP_BASIC_PUBLISH_METHOD;
	f.payload.method.decoded = &pub;
	if (send_frame(m, &f, deadline, limit_s) != 0)
		return -1;
	f.frame_type = AMQP_FRAME_HEADER;
	f.payload.properties.class_id = AMQP_BASIC_CLASS;
	f.payload.properties.body_size = p->body_len;
	f.payload.properties.decoded = props;
	if (send_frame(m, &f, deadline, limit_s) != 0)
		return -1;
	for (size_t off = 0; off < p->body_len; off += chunk) {
		f.frame_type = AMQP_FRAME_BODY;
		f.payload.body_fragment.bytes = (char *)p->body + off;
		f.payload.body_fragment.len =
		    p->body_len - off < chunk ? p->body_len - off : chunk;
		if (send_frame(m, &f, deadline, limit_s) != 0)
			return -1;
	}
	return 0;
}

int mq_publish(struct mq *m, const struct publish *p)
{
	amqp_basic_properties_t props;
	amqp_table_entry_t *table;
	int r;

	if (mq_pub_channel(m) != 0)
		return -1;
	copy_props(p, &props, &table);
	/* mandatory: a copy to a queue deleted meanwhile comes back */
	r = send_message(m, p, &props);
	free(table);
	if (r != 0)
		return -1;
	if (m->confirming)
		(void)mq_track_sent(&m->track);
	return 0;
}

enum mq_confirm mq_confirm_state(struct mq *m)
{
	if (m->closed)
		return MQ_CONFIRM_LOST;
	if (m->refused) {
		m->refused = false;
		return MQ_CONFIRM_REFUSED; /* channel 2 closed: error set */
	}
	if (m->track.confirmed < m->track.published)
		return MQ_CONFIRM_PENDING;
	if (m->track.nacked) {
		mq_set_error(m, "the broker refused (nacked) a message");
		m->track.nacked = false;
		m->returned = false;
		return MQ_CONFIRM_REFUSED;
	}
	if (m->returned) {
		mq_set_error(m, "the broker could not route a message "
				"(its queue was deleted?)");
		m->returned = false;
		return MQ_CONFIRM_UNROUTED;
	}
	return MQ_CONFIRM_OK;
}

int mq_wait_confirms(struct mq *m, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	enum mq_confirm c;

	while ((c = mq_confirm_state(m)) == MQ_CONFIRM_PENDING) {
		int64_t left = deadline - now_ms();
		struct timeval tv;

		if (left <= 0) {
			mq_set_error(m, "no publisher confirm within %d ms",
				     timeout_ms);
			return -1;
		}
		tv.tv_sec = left / 1000;
		tv.tv_usec = (left % 1000) * 1000;
		if (mq_read_one(m, &tv) == MQ_CANCELLED)
			m->cancelled = true;
	}
	return c == MQ_CONFIRM_OK ? 0 : -1;
}
