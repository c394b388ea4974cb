/*
 * mq.c: the only user of rabbitmq-c. One connection with one channel,
 * turned into the plain operations a worker and warren-submit need. Every
 * reply is checked and kept as words in mq_error().
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "warren.h"

#define CHANNEL 1
#define RPC_TIMEOUT_S 30
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt" /* Debian */

struct pending {
	struct delivery *d;
	struct pending *next;
};

struct mq {
	amqp_connection_state_t conn;
	char error[512];
	int reply_code;
	bool closed;
	bool confirming;
	uint64_t published;	 /* publish sequence numbers handed out */
	uint64_t confirmed;	 /* how many of them the broker answered */
	unsigned char *answered; /* [tag - 1]: answered yet */
	size_t answered_cap;
	uint64_t low; /* every tag below it is answered */
	bool nacked;
	bool returned;	/* a mandatory publish came back unrouted */
	bool cancelled; /* seen while waiting for confirms */
	char *consumer_tag;
	struct pending *head, *tail; /* deliveries read while waiting */
};

static void set_error(struct mq *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(struct mq *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->error, sizeof(m->error), fmt, ap);
	va_end(ap);
}

/* An rpc reply in words; records the broker's reply code. 0 if normal. */
static int check_reply(struct mq *m, amqp_rpc_reply_t r, const char *what)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		return 0;
	case AMQP_RESPONSE_NONE:
		set_error(m, "%s: missing reply", what);
		break;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		set_error(m, "%s: %s", what,
			  amqp_error_string2(r.library_error));
		if (r.library_error == AMQP_STATUS_CONNECTION_CLOSED ||
		    r.library_error == AMQP_STATUS_SOCKET_ERROR ||
		    r.library_error == AMQP_STATUS_HEARTBEAT_TIMEOUT ||
		    r.library_error == AMQP_STATUS_SOCKET_CLOSED)
			m->closed = true;
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			amqp_connection_close_t *c = r.reply.decoded;

			m->reply_code = c->reply_code;
			set_error(m,
				  "%s: broker closed the connection: %u %.*s",
				  what, c->reply_code, (int)c->reply_text.len,
				  (char *)c->reply_text.bytes);
			m->closed = true;
		} else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			amqp_channel_close_t *c = r.reply.decoded;

			m->reply_code = c->reply_code;
			set_error(m, "%s: broker closed the channel: %u %.*s",
				  what, c->reply_code, (int)c->reply_text.len,
				  (char *)c->reply_text.bytes);
			m->closed = true;
		} else {
			set_error(m, "%s: unexpected method 0x%08x", what,
				  r.reply.id);
		}
		break;
	}
	return -1;
}

static int check_status(struct mq *m, int status, const char *what)
{
	if (status >= 0)
		return 0;
	set_error(m, "%s: %s", what, amqp_error_string2(status));
	if (status != AMQP_STATUS_TIMEOUT)
		m->closed = true;
	return -1;
}

int mq_url_check(const char *url, char *err, size_t errlen)
{
	struct amqp_connection_info ci;
	char *copy = xstrdup(url);
	int r = amqp_parse_url(copy, &ci);

	free(copy);
	if (r != AMQP_STATUS_OK) {
		snprintf(err, errlen, "not an amqp:// or amqps:// URL");
		return -1;
	}
	return 0;
}

char *mq_url_redacted(const char *url)
{
	struct amqp_connection_info ci;
	char *copy = xstrdup(url), *out;

	if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
		free(copy);
		return xstrdup("(bad url)");
	}
	if (asprintf(&out, "%s://%s@%s:%d/%s", ci.ssl ? "amqps" : "amqp",
		     ci.user, ci.host, ci.port,
		     strcmp(ci.vhost, "/") == 0 ? "" : ci.vhost) == -1)
		fatal("asprintf");
	free(copy);
	return out;
}

/* First line of a password file, without its newline. */
static char *read_password(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (f == NULL) {
		snprintf(err, errlen, "password_file %s: %s", path,
			 strerror(errno));
		return NULL;
	}
	n = getline(&line, &cap, f);
	fclose(f);
	if (n < 0) {
		free(line);
		snprintf(err, errlen, "password_file %s: empty", path);
		return NULL;
	}
	line[strcspn(line, "\r\n")] = '\0';
	return line;
}

static amqp_socket_t *new_socket(amqp_connection_state_t conn, bool ssl,
				 const struct tls_conf *t, char *err,
				 size_t errlen)
{
	amqp_socket_t *s;
	const char *ca;

	if (!ssl) {
		s = amqp_tcp_socket_new(conn);
		if (s == NULL)
			snprintf(err, errlen, "cannot create a socket");
		return s;
	}
	s = amqp_ssl_socket_new(conn);
	if (s == NULL) {
		snprintf(err, errlen, "cannot create a TLS socket");
		return NULL;
	}
	amqp_ssl_socket_set_verify_peer(s, t->verify_peer);
	amqp_ssl_socket_set_verify_hostname(s, t->verify_hostname);
	/* rabbitmq-c 0.11 never reads the system's trust store itself */
	ca = t->ca_cert != NULL			   ? t->ca_cert
	     : access(SYSTEM_CA_BUNDLE, R_OK) == 0 ? SYSTEM_CA_BUNDLE
						   : NULL;
	if (ca != NULL && amqp_ssl_socket_set_cacert(s, ca) != AMQP_STATUS_OK) {
		snprintf(err, errlen, "tls ca_cert %s: cannot load", ca);
		return NULL;
	}
	if (t->cert != NULL && t->key != NULL &&
	    amqp_ssl_socket_set_key(s, t->cert, t->key) != AMQP_STATUS_OK) {
		snprintf(err, errlen, "tls cert/key %s: cannot load", t->cert);
		return NULL;
	}
	return s;
}

/* Client properties: a connection name, and the capabilities we handle. */
static int do_login(struct mq *m, struct amqp_connection_info *ci,
		    int heartbeat, const char *name)
{
	amqp_table_entry_t caps[] = {
	    {amqp_cstring_bytes("consumer_cancel_notify"),
	     {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
	    {amqp_cstring_bytes("publisher_confirms"),
	     {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
	    {amqp_cstring_bytes("basic.nack"),
	     {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
	    {amqp_cstring_bytes("authentication_failure_close"),
	     {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
	};
	amqp_table_entry_t props[2];
	amqp_table_t t;
	amqp_rpc_reply_t r;

	props[0].key = amqp_cstring_bytes("capabilities");
	props[0].value.kind = AMQP_FIELD_KIND_TABLE;
	props[0].value.value.table.num_entries = 4;
	props[0].value.value.table.entries = caps;
	props[1].key = amqp_cstring_bytes("connection_name");
	props[1].value.kind = AMQP_FIELD_KIND_UTF8;
	props[1].value.value.bytes = amqp_cstring_bytes(name);
	t.num_entries = 2;
	t.entries = props;
	r = amqp_login_with_properties(
	    m->conn, ci->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat, &t,
	    AMQP_SASL_METHOD_PLAIN, ci->user, ci->password);
	if (check_reply(m, r, "login") == 0)
		return 0;
	if (m->reply_code == 0 && !m->closed)
		m->closed = true;
	return -1;
}

/* One node: connect, log in, open the channel. */
static int try_url(struct mq *m, const struct broker_conf *b, const char *url,
		   const char *name, int *status)
{
	struct amqp_connection_info ci;
	struct timeval tv = {RPC_TIMEOUT_S, 0};
	char *copy = xstrdup(url), *pw = NULL, *safe = mq_url_redacted(url);
	char err[256];
	amqp_socket_t *s;
	int r = -1;

	*status = WORKER_EXIT_CONNECT;
	if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
		set_error(m, "%s: bad url", safe);
		goto out;
	}
	if (ci.vhost[0] == '\0')
		ci.vhost = "/"; /* "amqp://host/": no vhost is named "" */
	if (b->password_file != NULL) {
		pw = read_password(b->password_file, err, sizeof(err));
		if (pw == NULL) {
			set_error(m, "%s", err);
			*status = WORKER_EXIT_LOGIN;
			goto out;
		}
		ci.password = pw;
	}
	m->conn = amqp_new_connection();
	amqp_set_handshake_timeout(m->conn, &tv);
	amqp_set_rpc_timeout(m->conn, &tv);
	s = new_socket(m->conn, ci.ssl, &b->tls, err, sizeof(err));
	if (s == NULL) {
		set_error(m, "%s: %s", safe, err);
		goto out;
	}
	r = amqp_socket_open_noblock(s, ci.host, ci.port, &tv);
	if (r != AMQP_STATUS_OK) {
		set_error(m, "%s: cannot connect: %s", safe,
			  amqp_error_string2(r));
		r = -1;
		goto out;
	}
	r = do_login(m, &ci, b->heartbeat, name);
	if (r != 0) {
		/* 403 ACCESS_REFUSED or a close during the handshake */
		if (m->reply_code == AMQP_ACCESS_REFUSED ||
		    m->reply_code == AMQP_NOT_ALLOWED)
			*status = WORKER_EXIT_LOGIN;
		char tmp[sizeof(m->error)];

		memcpy(tmp, m->error, sizeof(tmp));
		set_error(m, "%s: %.400s", safe, tmp);
		goto out;
	}
	amqp_channel_open(m->conn, CHANNEL);
	r = check_reply(m, amqp_get_rpc_reply(m->conn), "channel.open");
out:
	if (r != 0 && m->conn != NULL) {
		amqp_destroy_connection(m->conn);
		m->conn = NULL;
	}
	if (pw != NULL) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	free(copy);
	free(safe);
	return r;
}

struct mq *mq_connect(const struct broker_conf *b, const char *name,
		      int *status, char *err, size_t errlen)
{
	struct mq *m = xcalloc(1, sizeof(*m));

	for (int i = 0; i < b->nurls; i++) {
		m->closed = false;
		m->reply_code = 0;
		if (try_url(m, b, b->urls[i], name, status) == 0)
			return m;
		if (*status == WORKER_EXIT_LOGIN && i == b->nurls - 1)
			break;
	}
	snprintf(err, errlen, "%s", m->error);
	free(m);
	return NULL;
}

void mq_close(struct mq *m)
{
	struct pending *p, *next;

	if (m == NULL)
		return;
	if (m->conn != NULL) {
		if (!m->closed) {
			amqp_channel_close(m->conn, CHANNEL,
					   AMQP_REPLY_SUCCESS);
			amqp_connection_close(m->conn, AMQP_REPLY_SUCCESS);
		}
		amqp_destroy_connection(m->conn);
	}
	for (p = m->head; p != NULL; p = next) {
		next = p->next;
		delivery_free(p->d);
		free(p);
	}
	free(m->consumer_tag);
	free(m->answered);
	free(m);
}

int mq_fd(struct mq *m)
{
	return amqp_get_sockfd(m->conn);
}

const char *mq_error(struct mq *m)
{
	return m->error;
}

bool mq_buffered(struct mq *m)
{
	return amqp_frames_enqueued(m->conn) || amqp_data_in_buffer(m->conn);
}

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

/* queue.declare with these arguments, its reply in words. */
static int declare(struct mq *m, const char *name, bool durable,
		   amqp_table_t args)
{
	char what[300];

	snprintf(what, sizeof(what), "queue.declare %s", name);
	amqp_queue_declare(m->conn, CHANNEL, amqp_cstring_bytes(name), 0,
			   durable, 0, 0, args);
	return check_reply(m, amqp_get_rpc_reply(m->conn), what);
}

int mq_declare_named(struct mq *m, const char *name, bool durable,
		     enum queue_type type)
{
	amqp_table_entry_t e[1];

	return declare(m, name, durable, queue_args(type, e));
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
	return declare(m, name, true, t);
}

int mq_declare(struct mq *m, const struct queue_conf *q)
{
	return mq_declare_named(m, q->name, q->durable, q->type);
}

int mq_consume(struct mq *m, const char *queue, int prefetch)
{
	amqp_basic_consume_ok_t *ok;

	amqp_basic_qos(m->conn, CHANNEL, 0, (uint16_t)prefetch, 0);
	if (check_reply(m, amqp_get_rpc_reply(m->conn), "basic.qos"))
		return -1;
	ok = amqp_basic_consume(m->conn, CHANNEL, amqp_cstring_bytes(queue),
				amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
	if (check_reply(m, amqp_get_rpc_reply(m->conn), "basic.consume"))
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
	return check_status(m, r, "basic.cancel");
}

/* Bytes as a C string, or NULL when unset or holding a NUL. */
static char *bytes_str(amqp_bytes_t b)
{
	char *s;

	if (b.bytes == NULL || memchr(b.bytes, '\0', b.len) != NULL)
		return NULL;
	s = xcalloc(b.len + 1, 1);
	memcpy(s, b.bytes, b.len);
	return s;
}

#define PROP(flag, field) ((p->_flags & (flag)) ? bytes_str(p->field) : NULL)

static void copy_headers(struct delivery *d, const amqp_table_t *t)
{
	d->headers = xcalloc((size_t)t->num_entries, sizeof(struct header));
	for (int i = 0; i < t->num_entries; i++) {
		const amqp_table_entry_t *e = &t->entries[i];
		const amqp_field_value_t *v = &e->value;
		struct header *h = &d->headers[d->nheaders];
		char num[32] = "";

		switch (v->kind) {
		case AMQP_FIELD_KIND_UTF8:
		case AMQP_FIELD_KIND_BYTES:
			h->value = xcalloc(v->value.bytes.len + 1, 1);
			memcpy(h->value, v->value.bytes.bytes,
			       v->value.bytes.len);
			h->len = v->value.bytes.len;
			break;
		case AMQP_FIELD_KIND_I8:
			snprintf(num, sizeof(num), "%d", v->value.i8);
			break;
		case AMQP_FIELD_KIND_U8:
			snprintf(num, sizeof(num), "%u", v->value.u8);
			break;
		case AMQP_FIELD_KIND_I16:
			snprintf(num, sizeof(num), "%d", v->value.i16);
			break;
		case AMQP_FIELD_KIND_U16:
			snprintf(num, sizeof(num), "%u", v->value.u16);
			break;
		case AMQP_FIELD_KIND_I32:
			snprintf(num, sizeof(num), "%" PRId32, v->value.i32);
			break;
		case AMQP_FIELD_KIND_U32:
			snprintf(num, sizeof(num), "%" PRIu32, v->value.u32);
			break;
		case AMQP_FIELD_KIND_I64:
			snprintf(num, sizeof(num), "%" PRId64, v->value.i64);
			break;
		case AMQP_FIELD_KIND_U64:
		case AMQP_FIELD_KIND_TIMESTAMP:
			snprintf(num, sizeof(num), "%" PRIu64, v->value.u64);
			break;
		default:
			continue; /* neither string nor integer */
		}
		if (h->value == NULL) {
			h->value = xstrdup(num);
			h->len = strlen(num);
			h->integer = true;
		}
		h->name = xcalloc(e->key.len + 1, 1);
		memcpy(h->name, e->key.bytes, e->key.len);
		d->nheaders++;
	}
}

static void free_envelope(void *p)
{
	amqp_destroy_envelope(p);
	free(p);
}

/* The envelope as a delivery; the envelope is kept for republishing. */
static struct delivery *to_delivery(amqp_envelope_t *env)
{
	struct delivery *d = xcalloc(1, sizeof(*d));
	amqp_basic_properties_t *p = &env->message.properties;
	amqp_envelope_t *keep = xcalloc(1, sizeof(*keep));

	d->tag = env->delivery_tag;
	d->redelivered = env->redelivered;
	d->exchange = bytes_str(env->exchange);
	d->routing_key = bytes_str(env->routing_key);
	d->message_id = PROP(AMQP_BASIC_MESSAGE_ID_FLAG, message_id);
	d->correlation_id =
	    PROP(AMQP_BASIC_CORRELATION_ID_FLAG, correlation_id);
	d->reply_to = PROP(AMQP_BASIC_REPLY_TO_FLAG, reply_to);
	d->content_type = PROP(AMQP_BASIC_CONTENT_TYPE_FLAG, content_type);
	d->content_encoding =
	    PROP(AMQP_BASIC_CONTENT_ENCODING_FLAG, content_encoding);
	d->type = PROP(AMQP_BASIC_TYPE_FLAG, type);
	d->app_id = PROP(AMQP_BASIC_APP_ID_FLAG, app_id);
	if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
		char ts[32];

		snprintf(ts, sizeof(ts), "%" PRIu64, p->timestamp);
		d->timestamp = xstrdup(ts);
	}
	if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
		copy_headers(d, &p->headers);
	d->body = env->message.body.bytes;
	d->body_len = env->message.body.len;
	*keep = *env;
	d->amqp = keep;
	d->amqp_free = free_envelope;
	return d;
}

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

static void mark_answered(struct mq *m, uint64_t tag)
{
	if (tag == 0 || tag > m->published || m->answered[tag - 1])
		return;
	m->answered[tag - 1] = 1;
	m->confirmed++;
}

/*
 * basic.ack / basic.nack from the broker. Confirms may come out of order;
 * "multiple" answers every tag up to and including this one.
 */
static void on_confirm(struct mq *m, uint64_t tag, bool multiple, bool ack)
{
	if (!ack)
		m->nacked = true;
	if (multiple) {
		for (uint64_t t = m->low + 1; t <= tag && t <= m->published;
		     t++)
			mark_answered(m, t);
	} else {
		mark_answered(m, tag);
	}
	while (m->low < m->published && m->answered[m->low])
		m->low++;
}

/* Read and drop the content of a basic.return: the copy was unroutable. */
static void on_return(struct mq *m, amqp_channel_t channel)
{
	amqp_message_t msg;
	amqp_rpc_reply_t r = amqp_read_message(m->conn, channel, &msg, 0);

	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		amqp_destroy_message(&msg);
	m->returned = true;
}

/* A frame that is not a delivery: returns the event it means. */
static enum mq_event on_frame(struct mq *m, amqp_frame_t *f)
{
	if (f->frame_type != AMQP_FRAME_METHOD)
		return MQ_NONE;
	switch (f->payload.method.id) {
	case AMQP_BASIC_ACK_METHOD: {
		amqp_basic_ack_t *a = f->payload.method.decoded;

		on_confirm(m, a->delivery_tag, a->multiple, true);
		return MQ_NONE;
	}
	case AMQP_BASIC_NACK_METHOD: {
		amqp_basic_nack_t *a = f->payload.method.decoded;

		on_confirm(m, a->delivery_tag, a->multiple, false);
		return MQ_NONE;
	}
	case AMQP_BASIC_RETURN_METHOD:
		on_return(m, f->channel);
		return MQ_NONE;
	case AMQP_BASIC_CANCEL_METHOD:
		set_error(m,
			  "the broker cancelled the consumer (queue deleted?)");
		free(m->consumer_tag);
		m->consumer_tag = NULL;
		return MQ_CANCELLED;
	case AMQP_CHANNEL_CLOSE_METHOD: {
		amqp_channel_close_t *c = f->payload.method.decoded;
		amqp_channel_close_ok_t ok = {0};

		m->reply_code = c->reply_code;
		set_error(m, "broker closed the channel: %u %.*s",
			  c->reply_code, (int)c->reply_text.len,
			  (char *)c->reply_text.bytes);
		amqp_send_method(m->conn, f->channel,
				 AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
		m->closed = true;
		return MQ_CLOSED;
	}
	case AMQP_CONNECTION_CLOSE_METHOD: {
		amqp_connection_close_t *c = f->payload.method.decoded;
		amqp_connection_close_ok_t ok = {0};

		m->reply_code = c->reply_code;
		set_error(m, "broker closed the connection: %u %.*s",
			  c->reply_code, (int)c->reply_text.len,
			  (char *)c->reply_text.bytes);
		amqp_send_method(m->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD,
				 &ok);
		m->closed = true;
		return MQ_CLOSED;
	}
	default:
		return MQ_NONE;
	}
}

/*
 * Read one thing within tv: a delivery (queued), a control frame, or
 * nothing. Returns MQ_DELIVERY when a delivery was queued.
 */
static enum mq_event read_one(struct mq *m, struct timeval *tv)
{
	amqp_envelope_t env;
	amqp_rpc_reply_t r;
	amqp_frame_t f;
	int st;

	if (m->closed)
		return MQ_CLOSED;
	amqp_maybe_release_buffers(m->conn);
	r = amqp_consume_message(m->conn, &env, tv, 0);
	if (r.reply_type == AMQP_RESPONSE_NORMAL) {
		push_pending(m, to_delivery(&env));
		return MQ_DELIVERY;
	}
	if (r.reply_type != AMQP_RESPONSE_LIBRARY_EXCEPTION) {
		check_reply(m, r, "receive");
		return MQ_CLOSED;
	}
	if (r.library_error == AMQP_STATUS_TIMEOUT)
		return MQ_NONE;
	if (r.library_error != AMQP_STATUS_UNEXPECTED_STATE) {
		check_status(m, r.library_error, "receive");
		return MQ_CLOSED;
	}
	st = amqp_simple_wait_frame(m->conn, &f);
	if (check_status(m, st, "receive"))
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

		e = read_one(m, &tv0);
		if (e != MQ_DELIVERY)
			return e;
	}
}

enum mq_event mq_service(struct mq *m)
{
	enum mq_event e;

	do {
		struct timeval tv0 = {0, 0};

		e = read_one(m, &tv0);
	} while (e == MQ_DELIVERY);
	if (e == MQ_NONE && m->cancelled) {
		m->cancelled = false;
		return MQ_CANCELLED;
	}
	return e;
}

int mq_ack(struct mq *m, uint64_t tag)
{
	return check_status(m, amqp_basic_ack(m->conn, CHANNEL, tag, 0),
			    "basic.ack");
}

int mq_nack(struct mq *m, uint64_t tag, bool requeue)
{
	return check_status(m,
			    amqp_basic_nack(m->conn, CHANNEL, tag, 0, requeue),
			    "basic.nack");
}

int mq_confirm_select(struct mq *m)
{
	if (m->confirming)
		return 0;
	amqp_confirm_select(m->conn, CHANNEL);
	if (check_reply(m, amqp_get_rpc_reply(m->conn), "confirm.select"))
		return -1;
	m->confirming = true;
	return 0;
}

static bool key_is(amqp_bytes_t key, const char *name)
{
	return key.len == strlen(name) && memcmp(key.bytes, name, key.len) == 0;
}

/* like's headers with p's added or replaced, in a table on the stack */
static amqp_table_t merge_headers(const amqp_basic_properties_t *like,
				  const struct publish *p,
				  amqp_table_entry_t *e, int cap)
{
	amqp_table_t t = {0, e};

	if (like != NULL && (like->_flags & AMQP_BASIC_HEADERS_FLAG)) {
		for (int i = 0;
		     i < like->headers.num_entries && t.num_entries < cap;
		     i++) {
			const amqp_table_entry_t *o = &like->headers.entries[i];
			bool replaced = false;

			for (int j = 0; j < p->nheaders; j++)
				if (key_is(o->key, p->headers[j].name))
					replaced = true;
			/* the broker's count belongs to the original */
			if (key_is(o->key, "x-delivery-count") ||
			    (p->drop_header != NULL &&
			     key_is(o->key, p->drop_header)))
				replaced = true;
			if (!replaced)
				e[t.num_entries++] = *o;
		}
	}
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

int mq_publish(struct mq *m, const struct publish *p)
{
	const amqp_basic_properties_t *like = NULL;
	amqp_basic_properties_t props;
	amqp_table_entry_t *props_table = NULL;
	amqp_bytes_t body = {p->body_len, (void *)p->body};
	int r, cap;

	if (p->like != NULL && p->like->amqp != NULL)
		like = &((amqp_envelope_t *)p->like->amqp)->message.properties;
	if (like != NULL)
		props = *like;
	else
		memset(&props, 0, sizeof(props));
	props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
	props.delivery_mode = 2;
	if (p->message_id != NULL) {
		props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
		props.message_id = amqp_cstring_bytes(p->message_id);
	}
	if (p->expiration != NULL) {
		props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
		props.expiration = amqp_cstring_bytes(p->expiration);
	} else {
		props._flags &= ~AMQP_BASIC_EXPIRATION_FLAG;
	}
	if (p->nheaders > 0 ||
	    (like != NULL && (like->_flags & AMQP_BASIC_HEADERS_FLAG))) {
		cap = p->nheaders;
		if (like != NULL && (like->_flags & AMQP_BASIC_HEADERS_FLAG))
			cap += like->headers.num_entries;
		props_table = xcalloc((size_t)cap, sizeof(*props_table));
		props._flags |= AMQP_BASIC_HEADERS_FLAG;
		props.headers = merge_headers(like, p, props_table, cap);
	}
	/* the broker checks user_id against our login: not ours to copy */
	props._flags &= ~AMQP_BASIC_USER_ID_FLAG;
	/* mandatory: a copy to a queue deleted meanwhile comes back */
	r = amqp_basic_publish(
	    m->conn, CHANNEL,
	    amqp_cstring_bytes(p->exchange ? p->exchange : ""),
	    amqp_cstring_bytes(p->routing_key), 1, 0, &props, body);
	free(props_table);
	if (check_status(m, r, "basic.publish"))
		return -1;
	if (m->confirming) {
		if (m->published == m->answered_cap) {
			m->answered_cap =
			    m->answered_cap ? m->answered_cap * 2 : 64;
			m->answered = realloc(m->answered, m->answered_cap);
			if (m->answered == NULL)
				fatal("realloc");
		}
		m->answered[m->published++] = 0;
	}
	return 0;
}

int mq_wait_confirms(struct mq *m, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	while (m->confirmed < m->published) {
		int64_t left = deadline - now_ms();
		struct timeval tv;
		enum mq_event e;

		if (left <= 0) {
			set_error(m, "no publisher confirm within %d ms",
				  timeout_ms);
			return -1;
		}
		tv.tv_sec = left / 1000;
		tv.tv_usec = (left % 1000) * 1000;
		e = read_one(m, &tv);
		if (e == MQ_CLOSED)
			return -1;
		if (e == MQ_CANCELLED)
			m->cancelled = true;
	}
	if (m->nacked) {
		set_error(m, "the broker refused (nacked) a message");
		m->nacked = false;
		return -1;
	}
	if (m->returned) {
		set_error(m, "the broker could not route a message "
			     "(its queue was deleted?)");
		m->returned = false;
		return -1;
	}
	return 0;
}
