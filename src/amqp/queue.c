/* queue.c: queue.declare, basic.consume and cancel, and warrenctl's basic.get.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mq_int.h"

static amqp_table_t queue_args(enum queue_type type, amqp_table_entry_t *e)
{
	amqp_table_t t = {0, e};

	if (type == QUEUE_QUORUM) {
		e[0].key = amqp_cstring_bytes("x-queue-type");
		e[0].value.kind = AMQP_FIELD_KIND_UTF8;
		e[0].value.value.bytes = amqp_cstring_bytes("quorum");
		t.num_entries = 1;
	}
	return t;
}

/* Entries a queue's declare may add to its arguments (queue_table). */
#define QUORUM_ARGS 5

static void put_str(amqp_table_t *t, const char *key, const char *v)
{
	amqp_table_entry_t *e = &t->entries[t->num_entries++];

	e->key = amqp_cstring_bytes(key);
	e->value.kind = AMQP_FIELD_KIND_UTF8;
	e->value.value.bytes = amqp_cstring_bytes(v);
}

static void put_int(amqp_table_t *t, const char *key, int64_t v)
{
	amqp_table_entry_t *e = &t->entries[t->num_entries++];

	e->key = amqp_cstring_bytes(key);
	e->value.kind = AMQP_FIELD_KIND_I64;
	e->value.value.i64 = v;
}

static bool has_arg(const struct queue_conf *q, const char *name)
{
	for (int i = 0; i < q->nargs; i++)
		if (strcmp(q->args[i].name, name) == 0)
			return true;
	return false;
}

/* A quorum queue's own arguments, each unless queue.arguments has it. */
static void put_quorum(amqp_table_t *t, const struct queue_conf *q,
		       const char *failed)
{
	const char *const keys[] = {
	    "x-dead-letter-exchange", "x-dead-letter-routing-key",
	    "x-dead-letter-strategy", "x-overflow", NULL};
	const char *const values[] = {"", failed, "at-least-once",
				      "reject-publish"};

	put_int(t, "x-delivery-limit", q->delivery_limit);
	for (int i = 0; keys[i] != NULL; i++)
		if (!has_arg(q, keys[i]))
			put_str(t, keys[i], values[i]);
}

/*
 * The arguments of q's declare in t (entries: nargs + 1 + QUORUM_ARGS):
 * its type, a quorum queue's delivery limit and dead-lettering to failed,
 * then queue.arguments.
 */
static amqp_table_t queue_table(const struct queue_conf *q, const char *failed,
				amqp_table_entry_t *e)
{
	amqp_table_t t = queue_args(q->type, e);

	if (q->type == QUEUE_QUORUM)
		put_quorum(&t, q, failed);
	for (int i = 0; i < q->nargs; i++) {
		const struct qarg *a = &q->args[i];

		if (a->kind == QARG_STR) {
			put_str(&t, a->name, a->s);
		} else if (a->kind == QARG_INT) {
			put_int(&t, a->name, a->i);
		} else {
			amqp_table_entry_t *x = &e[t.num_entries++];

			x->key = amqp_cstring_bytes(a->name);
			x->value.kind = AMQP_FIELD_KIND_BOOLEAN;
			x->value.value.boolean = a->b;
		}
	}
	return t;
}

/* queue.declare with these arguments on channel ch, its reply in words. */
static int declare(struct mq *m, amqp_channel_t ch, const char *name,
		   bool durable, amqp_table_t args)
{
	char what[300];

	snprintf(what, sizeof(what), "queue.declare %s", name);
	if (ch == PUB_CHANNEL && mq_pub_channel(m) != 0)
		return -1;
	amqp_queue_declare(m->conn, ch, amqp_cstring_bytes(name), 0, durable, 0,
			   0, args);
	return mq_check_reply_on(m, amqp_get_rpc_reply(m->conn), what, ch);
}

int mq_declare_named(struct mq *m, const char *name, bool durable,
		     enum queue_type type)
{
	amqp_table_entry_t e[1];

	return declare(m, PUB_CHANNEL, name, durable, queue_args(type, e));
}

int mq_declare_delay(struct mq *m, const char *name, const char *target,
		     int ttl)
{
	amqp_table_entry_t e[3];
	amqp_table_t t = {3, e};

	e[0].key = amqp_cstring_bytes("x-message-ttl");
	e[0].value.kind = AMQP_FIELD_KIND_I64;
	e[0].value.value.i64 = (int64_t)ttl * 1000;
	e[1].key = amqp_cstring_bytes("x-dead-letter-exchange");
	e[1].value.kind = AMQP_FIELD_KIND_UTF8;
	e[1].value.value.bytes = amqp_cstring_bytes("");
	e[2].key = amqp_cstring_bytes("x-dead-letter-routing-key");
	e[2].value.kind = AMQP_FIELD_KIND_UTF8;
	e[2].value.value.bytes = amqp_cstring_bytes(target);
	return declare(m, PUB_CHANNEL, name, true, t);
}

/* exchange.declare: durable, of the bind's type; amq.* ones exist
 * already and may only be checked (passive) */
static int declare_exchange(struct mq *m, const struct bind_conf *b)
{
	bool passive = strncmp(b->exchange, "amq.", 4) == 0;
	char what[300];

	snprintf(what, sizeof(what), "exchange.declare %s (%s)", b->exchange,
		 b->type);
	amqp_exchange_declare(m->conn, CHANNEL, amqp_cstring_bytes(b->exchange),
			      amqp_cstring_bytes(b->type), passive, 1, 0, 0,
			      amqp_empty_table);
	return mq_check_reply(m, amqp_get_rpc_reply(m->conn), what);
}

/* Each bind section: its exchange declared, the queue bound per key. */
static int bind_all(struct mq *m, const struct queue_conf *q)
{
	char what[600];

	for (int i = 0; i < q->nbinds; i++) {
		const struct bind_conf *b = &q->binds[i];

		if (declare_exchange(m, b) != 0)
			return -1;
		for (int k = 0; k < b->nkeys; k++) {
			snprintf(what, sizeof(what),
				 "queue.bind %s to %s with key \"%s\"", q->name,
				 b->exchange, b->keys[k]);
			amqp_queue_bind(
			    m->conn, CHANNEL, amqp_cstring_bytes(q->name),
			    amqp_cstring_bytes(b->exchange),
			    amqp_cstring_bytes(b->keys[k]), amqp_empty_table);
			if (mq_check_reply(m, amqp_get_rpc_reply(m->conn),
					   what))
				return -1;
		}
	}
	return 0;
}

/*
 * A quorum queue dead-letters to failed, declared first. On channel 2:
 * failed is a classic queue, on one node, and that node being down must
 * cost a warning, not the consumer (the broker keeps what it cannot
 * dead-letter yet: at-least-once). -1 only when the connection is gone.
 */
static int declare_dead_letter_target(struct mq *m, const char *failed)
{
	if (declare(m, PUB_CHANNEL, failed, true, amqp_empty_table) == 0)
		return 0;
	if (m->closed)
		return -1;
	log_warnx("%s; consuming all the same: a message the broker cannot "
		  "dead-letter yet stays in the queue",
		  mq_error(m));
	return 0;
}

int mq_declare(struct mq *m, const struct queue_conf *q)
{
	amqp_table_entry_t *e;
	char failed[300];
	int r;

	if (!q->declare) /* another application's queue: only checked */
		return mq_declare_passive(m, q->name, NULL) == 0
			   ? bind_all(m, q)
			   : -1;
	snprintf(failed, sizeof(failed), "%s.failed", q->name);
	if (q->type == QUEUE_QUORUM && declare_dead_letter_target(m, failed))
		return -1;
	e = xcalloc((size_t)q->nargs + 1 + QUORUM_ARGS, sizeof(*e));
	r = declare(m, CHANNEL, q->name, q->durable, queue_table(q, failed, e));
	free(e);
	return r == 0 ? bind_all(m, q) : -1;
}

int mq_consume(struct mq *m, const char *queue, int prefetch)
{
	amqp_basic_consume_ok_t *ok;

	amqp_basic_qos(m->conn, CHANNEL, 0, (uint16_t)prefetch, 0);
	if (mq_check_reply(m, amqp_get_rpc_reply(m->conn), "basic.qos"))
		return -1;
	ok = amqp_basic_consume(m->conn, CHANNEL, amqp_cstring_bytes(queue),
				amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
	if (mq_check_reply(m, amqp_get_rpc_reply(m->conn), "basic.consume"))
		return -1;
	free(m->consumer_tag);
	m->consumer_tag = strndup(ok->consumer_tag.bytes, ok->consumer_tag.len);
	return 0;
}

int mq_cancel(struct mq *m)
{
	if (m->consumer_tag == NULL)
		return 0;
	amqp_basic_cancel_t req = {amqp_cstring_bytes(m->consumer_tag), 0};
	int r;

	/*
	 * Not amqp_basic_cancel(): that waits for cancel-ok, and the worker
	 * must not stop serving its handler for a round trip. The cancel-ok
	 * arrives later as a frame mq_poll ignores; deliveries sent before
	 * it are settled by the caller (nack, or the connection's close).
	 */
	r = amqp_send_method(m->conn, CHANNEL, AMQP_BASIC_CANCEL_METHOD, &req);
	free(m->consumer_tag);
	m->consumer_tag = NULL;
	m->cancelling = r >= 0;
	return mq_check_status(m, r, "basic.cancel");
}

bool mq_cancelling(const struct mq *m)
{
	return m->cancelling && !m->closed;
}

int mq_queue_ready(struct mq *m, const char *name, long *ready)
{
	amqp_queue_declare_ok_t *ok;
	char what[300];

	/* on the publishing channel: a refusal there closes only it */
	snprintf(what, sizeof(what), "queue.declare %s (passive)", name);
	if (mq_pub_channel(m) != 0)
		return -1;
	ok = amqp_queue_declare(m->conn, PUB_CHANNEL, amqp_cstring_bytes(name),
				1, 0, 0, 0, amqp_empty_table);
	if (mq_check_reply_on(m, amqp_get_rpc_reply(m->conn), what,
			      PUB_CHANNEL))
		return -1;
	*ready = (long)ok->message_count;
	return 0;
}

/* ------------------------------------------------------------------ */
/* for warrenctl: reading a queue one message at a time */

int mq_declare_passive(struct mq *m, const char *name, uint32_t *messages)
{
	amqp_queue_declare_ok_t *ok;
	char what[300];

	snprintf(what, sizeof(what), "queue.declare %s (passive)", name);
	ok = amqp_queue_declare(m->conn, CHANNEL, amqp_cstring_bytes(name), 1,
				0, 0, 0, amqp_empty_table);
	if (mq_check_reply(m, amqp_get_rpc_reply(m->conn), what))
		return m->reply_code == AMQP_NOT_FOUND ? 1 : -1;
	if (messages != NULL)
		*messages = ok->message_count;
	return 0;
}

int mq_get(struct mq *m, const char *queue, struct delivery **out)
{
	amqp_rpc_reply_t r;
	amqp_basic_get_ok_t *ok;
	amqp_basic_deliver_t dv = {0};
	struct kept *k;
	size_t len = 0;

	*out = NULL;
	if (m->closed)
		return -1;
	amqp_maybe_release_buffers(m->conn);
	r = amqp_basic_get(m->conn, CHANNEL, amqp_cstring_bytes(queue), 0);
	if (mq_check_reply(m, r, "basic.get"))
		return -1;
	if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
		return 0;
	if (r.reply.id != AMQP_BASIC_GET_OK_METHOD) {
		mq_set_error(m, "basic.get: unexpected method 0x%08x",
			     r.reply.id);
		m->closed = true;
		return -1;
	}
	ok = r.reply.decoded;
	k = xcalloc(1, sizeof(*k));
	/* as in on_deliver: the method's strings go with the next frames */
	init_amqp_pool(&k->pool, 4096);
	dv.delivery_tag = ok->delivery_tag;
	dv.redelivered = ok->redelivered;
	dv.exchange = mq_keep_bytes(&k->pool, ok->exchange);
	dv.routing_key = mq_keep_bytes(&k->pool, ok->routing_key);
	if (mq_read_content(m, CHANNEL, k, &len) != 0) {
		mq_free_kept(
		    k); /* unacked: the broker has it back at the close */
		return -1;
	}
	*out = mq_to_delivery(&dv, k, len);
	return 1;
}

int mq_requeue_upto(struct mq *m, uint64_t tag)
{
	if (tag == 0)
		return 0;
	return mq_check_status(m, amqp_basic_nack(m->conn, CHANNEL, tag, 1, 1),
			       "basic.nack");
}
