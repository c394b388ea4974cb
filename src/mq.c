/*
 * mq.c: the only user of rabbitmq-c. One connection with one channel,
 * turned into the plain operations a worker and warren-submit need. Every
 * reply is checked and kept as words in mq_error().
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "warren.h"

#define CHANNEL 1     /* consuming: basic.consume, ack, nack */
#define PUB_CHANNEL 2 /* publishing: side queues and copies, confirmed */
#define RPC_TIMEOUT_S 30
#define CLOSE_TIMEOUT_S 2 /* a graceful close of a sound connection */
#define SEND_MIN_S 30	  /* a publish may take this long, or 1 s per MiB */
#define MAX_DEPTH 64	  /* nesting of header tables shown to handlers */
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt" /* Debian */

struct pending {
	struct delivery *d;
	struct pending *next;
};

/* A delivery's own copy of its properties and body, for republishing. */
struct kept {
	amqp_pool_t pool;
	amqp_basic_properties_t props;
	void *body;
};

struct mq {
	amqp_connection_state_t conn;
	char error[512];
	int reply_code;
	int lib_error; /* rabbitmq-c's status of the last library failure */
	char close_text[256]; /* the broker's words when it closed channel 1 */
	bool closed;	      /* channel 1 or the connection is gone */
	bool pub_open;	      /* channel 2 is open */
	bool confirming;      /* channel 2 wants confirm mode */
	bool refused;	      /* the broker refused a publish or declare */
	bool blocked;	      /* connection.blocked, until unblocked */
	char blocked_reason[128];
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

/*
 * The broker closed channel ch: note its words, answer close-ok. Channel 2
 * (publishing) is reopened on demand; channel 1 means starting afresh.
 */
static void channel_closed(struct mq *m, amqp_channel_t ch,
			   const amqp_channel_close_t *c)
{
	amqp_channel_close_ok_t ok = {0};

	m->reply_code = c->reply_code;
	(void)amqp_send_method(m->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
	if (ch == PUB_CHANNEL) {
		m->pub_open = false;
		m->refused = true;
		return;
	}
	snprintf(m->close_text, sizeof(m->close_text), "%.*s",
		 (int)c->reply_text.len, (char *)c->reply_text.bytes);
	m->closed = true;
}

/*
 * An rpc reply on channel ch in words; records the broker's reply code.
 * 0 if normal. Any failure but a refusal on channel 2 leaves the
 * connection unfit for use: only an abortive close follows.
 */
static int check_reply_on(struct mq *m, amqp_rpc_reply_t r, const char *what,
			  amqp_channel_t ch)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		return 0;
	case AMQP_RESPONSE_NONE:
		set_error(m, "%s: missing reply", what);
		m->closed = true;
		break;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		set_error(m, "%s: %s", what,
			  amqp_error_string2(r.library_error));
		m->lib_error = r.library_error;
		m->closed = true;
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			amqp_connection_close_t *c = r.reply.decoded;
			amqp_connection_close_ok_t ok = {0};

			m->reply_code = c->reply_code;
			set_error(m,
				  "%s: broker closed the connection: %u %.*s",
				  what, c->reply_code, (int)c->reply_text.len,
				  (char *)c->reply_text.bytes);
			(void)amqp_send_method(
			    m->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
			m->closed = true;
		} else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			amqp_channel_close_t *c = r.reply.decoded;

			set_error(m, "%s: broker closed the channel: %u %.*s",
				  what, c->reply_code, (int)c->reply_text.len,
				  (char *)c->reply_text.bytes);
			channel_closed(m, ch, c);
		} else {
			set_error(m, "%s: unexpected method 0x%08x", what,
				  r.reply.id);
			m->closed = true;
		}
		break;
	}
	return -1;
}

static int check_reply(struct mq *m, amqp_rpc_reply_t r, const char *what)
{
	return check_reply_on(m, r, what, CHANNEL);
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

int mq_probe(const char *url, int timeout_ms)
{
	struct amqp_connection_info ci;
	struct addrinfo hints = {0}, *res = NULL;
	char *copy = xstrdup(url), port[16];
	int fd = -1, ok = -1;

	if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK)
		goto out;
	snprintf(port, sizeof(port), "%d", ci.port);
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(ci.host, port, &hints, &res) != 0 || res == NULL)
		goto out;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    0);
	if (fd == -1)
		goto out;
	if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
		ok = 0;
	} else if (errno == EINPROGRESS) {
		struct pollfd p = {fd, POLLOUT, 0};
		int e = 0;
		socklen_t el = sizeof(e);

		if (poll(&p, 1, timeout_ms) == 1 &&
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 &&
		    e == 0)
			ok = 0;
	}
out:
	if (fd >= 0)
		close(fd);
	if (res != NULL)
		freeaddrinfo(res);
	free(copy);
	return ok;
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

char *mq_url_node(const char *url)
{
	struct amqp_connection_info ci;
	char *copy = xstrdup(url), *out;

	if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
		free(copy);
		return xstrdup("?");
	}
	if (asprintf(&out, strchr(ci.host, ':') ? "[%s]:%d" : "%s:%d", ci.host,
		     ci.port) == -1)
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

/* rabbitmq-c 0.11 never reads the system's trust store itself */
static const char *ca_file(const struct tls_conf *t)
{
	if (t->ca_cert != NULL)
		return t->ca_cert;
	return access(SYSTEM_CA_BUNDLE, R_OK) == 0 ? SYSTEM_CA_BUNDLE : NULL;
}

void mq_preload_ca(const struct broker_conf *b)
{
	const char *ca = ca_file(&b->tls);

	for (int i = 0; i < b->nurls; i++)
		if (strncmp(b->urls[i], "amqps://", 8) == 0 && ca != NULL) {
			(void)tls_load_ca(ca);
			return;
		}
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
	/* TLS 1.2 at least; SNI and verification are rabbitmq-c's */
	if (amqp_ssl_socket_set_ssl_versions(
		s, AMQP_TLSv1_2, AMQP_TLSvLATEST) != AMQP_STATUS_OK) {
		snprintf(err, errlen, "cannot require TLS 1.2");
		return NULL;
	}
	tls_watch(amqp_ssl_socket_get_context(s));
	amqp_ssl_socket_set_verify_peer(s, t->verify_peer);
	amqp_ssl_socket_set_verify_hostname(s, t->verify_hostname);
	ca = ca_file(t);
	if (ca != NULL && !tls_use_ca(amqp_ssl_socket_get_context(s), ca) &&
	    amqp_ssl_socket_set_cacert(s, ca) != AMQP_STATUS_OK) {
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
	    {amqp_cstring_bytes("connection.blocked"),
	     {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
	};
	amqp_table_entry_t props[2];
	amqp_table_t t;
	amqp_rpc_reply_t r;

	props[0].key = amqp_cstring_bytes("capabilities");
	props[0].value.kind = AMQP_FIELD_KIND_TABLE;
	props[0].value.value.table.num_entries =
	    (int)(sizeof(caps) / sizeof(caps[0]));
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

/* Channel 2, for declaring side queues and publishing: open it if needed. */
static int pub_channel(struct mq *m)
{
	if (m->closed)
		return -1;
	if (m->pub_open)
		return 0;
	amqp_channel_open(m->conn, PUB_CHANNEL);
	if (check_reply_on(m, amqp_get_rpc_reply(m->conn), "channel.open",
			   PUB_CHANNEL))
		return -1;
	m->pub_open = true;
	/* what the closed channel refused is told already */
	m->refused = m->nacked = m->returned = false;
	if (m->confirming) {
		/* a reopened channel counts its publishes from 1 again */
		m->published = m->confirmed = m->low = 0;
		amqp_confirm_select(m->conn, PUB_CHANNEL);
		if (check_reply_on(m, amqp_get_rpc_reply(m->conn),
				   "confirm.select", PUB_CHANNEL))
			return -1;
	}
	return 0;
}

/* TCP or TLS could not be set up: why, in words. */
static void open_failed(struct mq *m, int r, const char *safe,
			const struct amqp_connection_info *ci,
			const struct broker_conf *b)
{
	char why[300];
	enum tls_failure f;

	switch (r) {
	case AMQP_STATUS_SSL_PEER_VERIFY_FAILED:
		f = TLS_UNTRUSTED;
		break;
	case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED:
		f = TLS_WRONG_NAME;
		break;
	case AMQP_STATUS_SSL_CONNECTION_FAILED:
	case AMQP_STATUS_SSL_ERROR:
		f = TLS_HANDSHAKE;
		break;
	case AMQP_STATUS_TIMEOUT:
		set_error(m,
			  "%s: cannot connect: no answer within %d s "
			  "(connect_timeout)",
			  safe, b->connect_timeout);
		return;
	case AMQP_STATUS_SOCKET_ERROR:
		set_error(m, "%s: cannot connect: refused, or no route", safe);
		return;
	default:
		set_error(m, "%s: cannot connect: %s", safe,
			  amqp_error_string2(r));
		return;
	}
	tls_why(f, ci->host, b->tls.cert != NULL, why, sizeof(why));
	set_error(m, "%s: TLS: %s", safe, why);
}

/* The AMQP handshake failed: the broker's words, or a hint at the cause. */
static void login_failed(struct mq *m, const char *safe,
			 const struct amqp_connection_info *ci,
			 const struct broker_conf *b)
{
	char tmp[sizeof(m->error)], why[300];
	int e = m->lib_error;

	memcpy(tmp, m->error, sizeof(tmp));
	if (m->reply_code == AMQP_ACCESS_REFUSED && b->password_file != NULL) {
		set_error(m, "%s: %.300s (the password is password_file %s's)",
			  safe, tmp, b->password_file);
	} else if (m->reply_code != 0 || e == 0) {
		set_error(m, "%s: %.400s", safe, tmp);
	} else if (e == AMQP_STATUS_TIMEOUT) {
		set_error(m,
			  "%s: login: no answer within %d s "
			  "(connect_timeout)",
			  safe, b->connect_timeout);
	} else if (ci->ssl) {
		/* TLS 1.3: a refused client certificate comes after the
		 * handshake, at the first read */
		tls_why(TLS_HANDSHAKE, ci->host, b->tls.cert != NULL, why,
			sizeof(why));
		set_error(m, "%s: TLS: %s", safe, why);
	} else {
		set_error(m, "%s: %.300s (a TLS port? then use amqps://)", safe,
			  tmp);
	}
}

/* One node: connect, log in, open the channels. */
static int try_url(struct mq *m, const struct broker_conf *b, const char *url,
		   const char *name, int *status)
{
	struct amqp_connection_info ci;
	struct timeval tv = {b->connect_timeout, 0};
	struct timeval rpc = {RPC_TIMEOUT_S, 0};
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
	/* connect, TLS and the AMQP handshake: connect_timeout each */
	amqp_set_handshake_timeout(m->conn, &tv);
	amqp_set_rpc_timeout(m->conn, &rpc);
	s = new_socket(m->conn, ci.ssl, &b->tls, err, sizeof(err));
	if (s == NULL) {
		set_error(m, "%s: %s", safe, err);
		goto out;
	}
	r = amqp_socket_open_noblock(s, ci.host, ci.port, &tv);
	if (r != AMQP_STATUS_OK) {
		open_failed(m, r, safe, &ci, b);
		r = -1;
		goto out;
	}
	r = do_login(m, &ci, b->heartbeat, name);
	if (r != 0) {
		/* 403 ACCESS_REFUSED or a close during the handshake */
		if (m->reply_code == AMQP_ACCESS_REFUSED ||
		    m->reply_code == AMQP_NOT_ALLOWED)
			*status = WORKER_EXIT_LOGIN;
		login_failed(m, safe, &ci, b);
		goto out;
	}
	amqp_channel_open(m->conn, CHANNEL);
	r = check_reply(m, amqp_get_rpc_reply(m->conn), "channel.open");
	/* channel 2 opens at the first side queue or copy: a worker that
	 * only acks never costs the broker a second channel */
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

/*
 * The k-th node to try: first, then the others in turn from a point that
 * rotate moves, so that the workers of one node fall back to different
 * nodes and the survivors share them evenly.
 */
static int node_order(int n, int first, int rotate, int k)
{
	if (k == 0 || n < 2)
		return first % n;
	return (first + 1 + (k - 1 + rotate) % (n - 1)) % n;
}

struct mq *mq_connect(const struct broker_conf *b, const char *name, int first,
		      int rotate, int *node, int *status, char *err,
		      size_t errlen)
{
	struct mq *m = xcalloc(1, sizeof(*m));
	int low = b->nurls, low_status = WORKER_EXIT_CONNECT;

	for (int k = 0; k < b->nurls; k++) {
		int i = node_order(b->nurls, first, rotate, k);

		m->closed = false;
		m->reply_code = m->lib_error = 0;
		if (try_url(m, b, b->urls[i], name, status) == 0) {
			if (node != NULL)
				*node = i;
			return m;
		}
		/* the same words from every worker, whatever its order:
		 * those of the first node of the list */
		if (i < low) {
			low = i;
			low_status = *status;
			snprintf(err, errlen, "%s", m->error);
		}
	}
	*status = low_status;
	if (b->nurls > 1) {
		char one[512];

		snprintf(one, sizeof(one), "%s", err);
		snprintf(err, errlen, "%s (and the other %d nodes failed too)",
			 one, b->nurls - 1);
	}
	free(m);
	return NULL;
}

void mq_close(struct mq *m)
{
	struct pending *p, *next;

	if (m == NULL)
		return;
	if (m->conn != NULL) {
		/* only a sound connection gets the graceful close, and that
		 * briefly: a broker that stopped answering is not waited for */
		if (!m->closed) {
			struct timeval tv = {CLOSE_TIMEOUT_S, 0};

			amqp_set_rpc_timeout(m->conn, &tv);
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

/* queue.declare with these arguments on channel ch, its reply in words. */
static int declare(struct mq *m, amqp_channel_t ch, const char *name,
		   bool durable, amqp_table_t args)
{
	char what[300];

	snprintf(what, sizeof(what), "queue.declare %s", name);
	if (ch == PUB_CHANNEL && pub_channel(m) != 0)
		return -1;
	amqp_queue_declare(m->conn, ch, amqp_cstring_bytes(name), 0, durable, 0,
			   0, args);
	return check_reply_on(m, amqp_get_rpc_reply(m->conn), what, ch);
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

int mq_declare(struct mq *m, const struct queue_conf *q)
{
	amqp_table_entry_t e[1];

	return declare(m, CHANNEL, q->name, q->durable, queue_args(q->type, e));
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

static void to_field(const amqp_field_value_t *v, struct field *f, int depth);

/* An array or table as plain data, its items allocated. */
static void to_list(const amqp_field_value_t *v, struct field *f, int depth)
{
	bool array = v->kind == AMQP_FIELD_KIND_ARRAY;
	int n = array ? v->value.array.num_entries : v->value.table.num_entries;
	struct field *items = xcalloc(n > 0 ? (size_t)n : 1, sizeof(*items));

	for (int i = 0; i < n; i++) {
		if (array) {
			to_field(&v->value.array.entries[i], &items[i],
				 depth + 1);
			continue;
		}
		to_field(&v->value.table.entries[i].value, &items[i],
			 depth + 1);
		items[i].key = v->value.table.entries[i].key.bytes;
		items[i].key_len = v->value.table.entries[i].key.len;
	}
	f->kind = array ? FIELD_ARRAY : FIELD_TABLE;
	f->v.list.items = items;
	f->v.list.n = n;
}

/* An AMQP value as plain data (fields.c renders it); release after. */
static void to_field(const amqp_field_value_t *v, struct field *f, int depth)
{

	f->kind = FIELD_VOID;
	switch (v->kind) {
	case AMQP_FIELD_KIND_BOOLEAN:
		f->kind = FIELD_BOOL;
		f->v.b = v->value.boolean != 0;
		break;
	case AMQP_FIELD_KIND_I8:
		f->kind = FIELD_INT;
		f->v.i = v->value.i8;
		break;
	case AMQP_FIELD_KIND_I16:
		f->kind = FIELD_INT;
		f->v.i = v->value.i16;
		break;
	case AMQP_FIELD_KIND_I32:
		f->kind = FIELD_INT;
		f->v.i = v->value.i32;
		break;
	case AMQP_FIELD_KIND_I64:
		f->kind = FIELD_INT;
		f->v.i = v->value.i64;
		break;
	case AMQP_FIELD_KIND_U8:
		f->kind = FIELD_UINT;
		f->v.u = v->value.u8;
		break;
	case AMQP_FIELD_KIND_U16:
		f->kind = FIELD_UINT;
		f->v.u = v->value.u16;
		break;
	case AMQP_FIELD_KIND_U32:
		f->kind = FIELD_UINT;
		f->v.u = v->value.u32;
		break;
	case AMQP_FIELD_KIND_U64:
		f->kind = FIELD_UINT;
		f->v.u = v->value.u64;
		break;
	case AMQP_FIELD_KIND_F32:
		f->kind = FIELD_FLOAT;
		f->v.d = v->value.f32;
		break;
	case AMQP_FIELD_KIND_F64:
		f->kind = FIELD_DOUBLE;
		f->v.d = v->value.f64;
		break;
	case AMQP_FIELD_KIND_DECIMAL:
		f->kind = FIELD_DECIMAL;
		f->v.dec.scale = v->value.decimal.decimals;
		f->v.dec.value = (int32_t)v->value.decimal.value;
		break;
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		f->kind = v->kind == AMQP_FIELD_KIND_UTF8 ? FIELD_STRING
							  : FIELD_BYTES;
		f->v.s.bytes = v->value.bytes.bytes;
		f->v.s.len = v->value.bytes.len;
		break;
	case AMQP_FIELD_KIND_TIMESTAMP:
		f->kind = FIELD_TIMESTAMP;
		f->v.u = v->value.u64;
		break;
	case AMQP_FIELD_KIND_ARRAY:
	case AMQP_FIELD_KIND_TABLE:
		if (depth < MAX_DEPTH) /* deeper than anyone means: void */
			to_list(v, f, depth);
		break;
	default:
		break; /* void */
	}
}

static void field_release(struct field *f)
{
	if (f->kind != FIELD_ARRAY && f->kind != FIELD_TABLE)
		return;
	for (int i = 0; i < f->v.list.n; i++)
		field_release((struct field *)&f->v.list.items[i]);
	free((void *)f->v.list.items);
}

/* Headers as the handler sees them; an empty name is left out. */
static void copy_headers(struct delivery *d, const amqp_table_t *t)
{
	d->headers = xcalloc((size_t)t->num_entries + 1, sizeof(struct header));
	for (int i = 0; i < t->num_entries; i++) {
		const amqp_table_entry_t *e = &t->entries[i];
		struct header *h = &d->headers[d->nheaders];
		struct field f = {0};

		if (e->key.len == 0)
			continue;
		to_field(&e->value, &f, 0);
		h->value = field_text(&f, &h->len);
		h->integer = f.kind == FIELD_INT || f.kind == FIELD_UINT;
		field_release(&f);
		h->name = xcalloc(e->key.len + 1, 1);
		memcpy(h->name, e->key.bytes, e->key.len);
		d->nheaders++;
	}
}

/*
 * Deep copies into a pool of our own. rabbitmq-c's amqp_table_clone
 * refuses a table with an empty key, which a publisher may send and the
 * broker routes; these copy whatever was decoded.
 */
static amqp_bytes_t keep_bytes(amqp_pool_t *pool, amqp_bytes_t b)
{
	amqp_bytes_t o = {b.len, NULL};

	if (b.len == 0)
		return amqp_empty_bytes;
	o.bytes = amqp_pool_alloc(pool, b.len);
	if (o.bytes == NULL)
		fatal("amqp_pool_alloc");
	memcpy(o.bytes, b.bytes, b.len);
	return o;
}

static void keep_table(amqp_pool_t *pool, const amqp_table_t *src,
		       amqp_table_t *dst);

static void keep_value(amqp_pool_t *pool, const amqp_field_value_t *src,
		       amqp_field_value_t *dst)
{
	*dst = *src;
	switch (src->kind) {
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		dst->value.bytes = keep_bytes(pool, src->value.bytes);
		break;
	case AMQP_FIELD_KIND_TABLE:
		keep_table(pool, &src->value.table, &dst->value.table);
		break;
	case AMQP_FIELD_KIND_ARRAY: {
		int n = src->value.array.num_entries;

		if (n <= 0)
			break;
		dst->value.array.entries = amqp_pool_alloc(
		    pool, (size_t)n * sizeof(amqp_field_value_t));
		if (dst->value.array.entries == NULL)
			fatal("amqp_pool_alloc");
		for (int i = 0; i < n; i++)
			keep_value(pool, &src->value.array.entries[i],
				   &dst->value.array.entries[i]);
		break;
	}
	default:
		break;
	}
}

static void keep_table(amqp_pool_t *pool, const amqp_table_t *src,
		       amqp_table_t *dst)
{
	*dst = *src;
	if (src->num_entries <= 0)
		return;
	dst->entries = amqp_pool_alloc(pool, (size_t)src->num_entries *
						 sizeof(amqp_table_entry_t));
	if (dst->entries == NULL)
		fatal("amqp_pool_alloc");
	for (int i = 0; i < src->num_entries; i++) {
		dst->entries[i].key = keep_bytes(pool, src->entries[i].key);
		keep_value(pool, &src->entries[i].value,
			   &dst->entries[i].value);
	}
}

static void keep_props(amqp_pool_t *pool, const amqp_basic_properties_t *src,
		       amqp_basic_properties_t *dst)
{
	struct {
		amqp_flags_t flag;
		amqp_bytes_t *field;
	} strs[] = {
	    {AMQP_BASIC_CONTENT_TYPE_FLAG, &dst->content_type},
	    {AMQP_BASIC_CONTENT_ENCODING_FLAG, &dst->content_encoding},
	    {AMQP_BASIC_CORRELATION_ID_FLAG, &dst->correlation_id},
	    {AMQP_BASIC_REPLY_TO_FLAG, &dst->reply_to},
	    {AMQP_BASIC_EXPIRATION_FLAG, &dst->expiration},
	    {AMQP_BASIC_MESSAGE_ID_FLAG, &dst->message_id},
	    {AMQP_BASIC_TYPE_FLAG, &dst->type},
	    {AMQP_BASIC_USER_ID_FLAG, &dst->user_id},
	    {AMQP_BASIC_APP_ID_FLAG, &dst->app_id},
	    {AMQP_BASIC_CLUSTER_ID_FLAG, &dst->cluster_id},
	};

	/* a field whose flag is unset holds whatever its memory held */
	*dst = *src;
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		*strs[i].field = (src->_flags & strs[i].flag)
				     ? keep_bytes(pool, *strs[i].field)
				     : amqp_empty_bytes;
	if (src->_flags & AMQP_BASIC_HEADERS_FLAG)
		keep_table(pool, &src->headers, &dst->headers);
	else
		dst->headers = amqp_empty_table;
}

/* Roughly the encoded size of a table or value (keys, strings, nesting). */
static size_t value_size(const amqp_field_value_t *v);

static size_t table_size(const amqp_table_t *t)
{
	size_t n = 4;

	for (int i = 0; i < t->num_entries; i++)
		n += 1 + t->entries[i].key.len +
		     value_size(&t->entries[i].value);
	return n;
}

static size_t value_size(const amqp_field_value_t *v)
{
	size_t n = 9; /* a type byte and at most 8 bytes of number */

	switch (v->kind) {
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		return 5 + v->value.bytes.len;
	case AMQP_FIELD_KIND_TABLE:
		return 1 + table_size(&v->value.table);
	case AMQP_FIELD_KIND_ARRAY:
		for (int i = 0; i < v->value.array.num_entries; i++)
			n += value_size(&v->value.array.entries[i]);
		return n;
	default:
		return n;
	}
}

size_t mq_headers_size(const struct delivery *d)
{
	const struct kept *k = d->amqp;

	if (k == NULL || !(k->props._flags & AMQP_BASIC_HEADERS_FLAG))
		return 0;
	return table_size(&k->props.headers);
}

static void free_kept(void *p)
{
	struct kept *k = p;

	empty_amqp_pool(&k->pool);
	free(k->body);
	free(k);
}

#define PROP(flag, field) ((p->_flags & (flag)) ? bytes_str(p->field) : NULL)

/* A delivery from its method fields and kept properties and body. */
static struct delivery *to_delivery(const amqp_basic_deliver_t *dv,
				    struct kept *k, size_t body_len)
{
	struct delivery *d = xcalloc(1, sizeof(*d));
	const amqp_basic_properties_t *p = &k->props;
	char num[32];

	d->tag = dv->delivery_tag;
	d->redelivered = dv->redelivered;
	d->exchange = bytes_str(dv->exchange);
	d->routing_key = bytes_str(dv->routing_key);
	d->message_id = PROP(AMQP_BASIC_MESSAGE_ID_FLAG, message_id);
	d->correlation_id =
	    PROP(AMQP_BASIC_CORRELATION_ID_FLAG, correlation_id);
	d->reply_to = PROP(AMQP_BASIC_REPLY_TO_FLAG, reply_to);
	d->content_type = PROP(AMQP_BASIC_CONTENT_TYPE_FLAG, content_type);
	d->content_encoding =
	    PROP(AMQP_BASIC_CONTENT_ENCODING_FLAG, content_encoding);
	d->type = PROP(AMQP_BASIC_TYPE_FLAG, type);
	d->app_id = PROP(AMQP_BASIC_APP_ID_FLAG, app_id);
	d->expiration = PROP(AMQP_BASIC_EXPIRATION_FLAG, expiration);
	d->user_id = PROP(AMQP_BASIC_USER_ID_FLAG, user_id);
	if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
		snprintf(num, sizeof(num), "%" PRIu64, p->timestamp);
		d->timestamp = xstrdup(num);
	}
	if (p->_flags & AMQP_BASIC_PRIORITY_FLAG) {
		snprintf(num, sizeof(num), "%u", p->priority);
		d->priority = xstrdup(num);
	}
	if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
		copy_headers(d, &p->headers);
	d->body = k->body;
	d->body_len = body_len;
	d->amqp = k;
	d->amqp_free = free_kept;
	d->received = now_ms();
	d->key = delivery_key(d);
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
			set_error(m,
				  "receive: a message's content did not "
				  "follow within %d s",
				  RPC_TIMEOUT_S);
			m->closed = true;
			return -1;
		}
		if (check_status(m, st, "receive"))
			return -1;
		if (f->channel == ch && f->frame_type == type)
			return 0;
		if (f->channel == ch) {
			set_error(m,
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

/* Read (and, with body, keep) the content of a message on channel ch. */
static int read_content(struct mq *m, amqp_channel_t ch, struct kept *k,
			size_t *body_len)
{
	amqp_frame_t f;
	size_t size, got = 0;

	if (content_frame(m, ch, &f, AMQP_FRAME_HEADER) != 0)
		return -1;
	size = (size_t)f.payload.properties.body_size;
	if (k != NULL) {
		keep_props(&k->pool, f.payload.properties.decoded, &k->props);
		k->body = malloc(size > 0 ? size : 1);
		if (k->body == NULL)
			fatal("malloc %zu", size);
	}
	while (got < size) {
		if (content_frame(m, ch, &f, AMQP_FRAME_BODY) != 0)
			return -1;
		if (f.payload.body_fragment.len > size - got) {
			set_error(m, "receive: body longer than announced");
			m->closed = true;
			return -1;
		}
		if (k != NULL)
			memcpy((char *)k->body + got,
			       f.payload.body_fragment.bytes,
			       f.payload.body_fragment.len);
		got += f.payload.body_fragment.len;
	}
	if (body_len != NULL)
		*body_len = size;
	return 0;
}

/*
 * basic.deliver has come: read its properties and body frame by frame.
 * Properties the library cannot decode leave the connection unusable;
 * the message is then rejected (a dead-letter policy catches it), so that
 * it cannot kill worker after worker.
 */
static enum mq_event on_deliver(struct mq *m, const amqp_basic_deliver_t *in)
{
	amqp_basic_deliver_t dv = *in;
	struct kept *k = xcalloc(1, sizeof(*k));
	size_t len = 0;
	char *rk;

	/* the method's strings live in a pool the next frames recycle */
	init_amqp_pool(&k->pool, 4096);
	dv.exchange = keep_bytes(&k->pool, in->exchange);
	dv.routing_key = keep_bytes(&k->pool, in->routing_key);
	dv.consumer_tag = amqp_empty_bytes;
	if (read_content(m, CHANNEL, k, &len) == 0) {
		push_pending(m, to_delivery(&dv, k, len));
		return MQ_DELIVERY;
	}
	if (strstr(m->error, amqp_error_string2(AMQP_STATUS_BAD_AMQP_DATA))) {
		rk = bytes_str(dv.routing_key);
		(void)amqp_basic_nack(m->conn, CHANNEL, dv.delivery_tag, 0, 0);
		set_error(
		    m,
		    "a message (routing key %s) has properties that "
		    "cannot be decoded: rejected it (a dead-letter policy "
		    "on the queue keeps it)",
		    rk ? rk : "-");
		free(rk);
	}
	free_kept(k);
	return MQ_CLOSED;
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
			on_confirm(m, a->delivery_tag, a->multiple, true);
		return MQ_NONE;
	}
	case AMQP_BASIC_NACK_METHOD: {
		amqp_basic_nack_t *a = f->payload.method.decoded;

		if (f->channel == PUB_CHANNEL)
			on_confirm(m, a->delivery_tag, a->multiple, false);
		return MQ_NONE;
	}
	case AMQP_BASIC_RETURN_METHOD:
		/* its content follows: read past it */
		if (read_content(m, f->channel, NULL, NULL) != 0)
			return MQ_CLOSED;
		m->returned = true;
		return MQ_NONE;
	case AMQP_BASIC_DELIVER_METHOD:
		if (f->channel == CHANNEL)
			return on_deliver(m, f->payload.method.decoded);
		return MQ_NONE;
	case AMQP_BASIC_CANCEL_METHOD:
		set_error(m,
			  "the broker cancelled the consumer (queue deleted?)");
		free(m->consumer_tag);
		m->consumer_tag = NULL;
		/* kept for mq_poll/mq_service, should a caller drop it */
		m->cancelled = true;
		return MQ_CANCELLED;
	case AMQP_CONNECTION_BLOCKED_METHOD: {
		amqp_connection_blocked_t *b = f->payload.method.decoded;

		m->blocked = true;
		snprintf(m->blocked_reason, sizeof(m->blocked_reason), "%.*s",
			 (int)b->reason.len, (char *)b->reason.bytes);
		return MQ_NONE;
	}
	case AMQP_CONNECTION_UNBLOCKED_METHOD:
		m->blocked = false;
		return MQ_NONE;
	case AMQP_CHANNEL_CLOSE_METHOD: {
		amqp_channel_close_t *c = f->payload.method.decoded;

		set_error(m, "broker closed the channel: %u %.*s",
			  c->reply_code, (int)c->reply_text.len,
			  (char *)c->reply_text.bytes);
		channel_closed(m, f->channel, c);
		return f->channel == PUB_CHANNEL ? MQ_NONE : MQ_CLOSED;
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
	amqp_frame_t f;
	int st;

	if (m->closed)
		return MQ_CLOSED;
	amqp_maybe_release_buffers(m->conn);
	st = amqp_simple_wait_frame_noblock(m->conn, &f, tv);
	if (st == AMQP_STATUS_TIMEOUT)
		return MQ_NONE;
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

		e = read_one(m, &tv0);
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
	if (!m->pub_open) { /* pub_channel() selects it when it opens */
		m->confirming = true;
		return 0;
	}
	amqp_confirm_select(m->conn, PUB_CHANNEL);
	if (check_reply_on(m, amqp_get_rpc_reply(m->conn), "confirm.select",
			   PUB_CHANNEL))
		return -1;
	m->confirming = true;
	return 0;
}

bool mq_lost(const struct mq *m)
{
	return m->closed;
}

const char *mq_blocked(const struct mq *m)
{
	return m->blocked ? m->blocked_reason : NULL;
}

int mq_consumer_timeout_ms(const struct mq *m)
{
	const char *t = m->close_text, *v;

	if (m->reply_code != AMQP_PRECONDITION_FAILED ||
	    strstr(t, "delivery acknowledgement") == NULL ||
	    strstr(t, "timed out") == NULL)
		return -1;
	v = strstr(t, "Timeout value used: ");
	return v != NULL ? atoi(v + 20) : 0;
}

/*
 * A deadline for one publish. rabbitmq-c 0.11 waits for the socket without
 * limit while it sends, and a broker that blocked publishing (an alarm)
 * stops reading: a copy larger than the socket buffers would hang the
 * worker. The alarm's handler shuts the socket down, its one
 * async-signal-safe act, which ends the send with an error.
 */
static volatile sig_atomic_t send_fd = -1;

static void on_send_alarm(int sig)
{
	int saved = errno;

	(void)sig;
	if (send_fd >= 0)
		shutdown(send_fd, SHUT_RDWR);
	errno = saved;
}

static void send_deadline(struct mq *m, size_t bytes)
{
	struct sigaction sa;
	struct itimerval it = {{0, 0}, {SEND_MIN_S, 0}};

	if (bytes / (1 << 20) > SEND_MIN_S)
		it.it_value.tv_sec = (time_t)(bytes / (1 << 20));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_send_alarm;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	send_fd = amqp_get_sockfd(m->conn);
	setitimer(ITIMER_REAL, &it, NULL);
}

static void send_done(void)
{
	struct itimerval off = {{0, 0}, {0, 0}};

	setitimer(ITIMER_REAL, &off, NULL);
	send_fd = -1;
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
			for (int j = 0; p->drop_headers != NULL &&
					p->drop_headers[j] != NULL;
			     j++)
				if (key_is(o->key, p->drop_headers[j]))
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

	if (pub_channel(m) != 0)
		return -1;
	if (p->like != NULL && p->like->amqp != NULL)
		like = &((struct kept *)p->like->amqp)->props;
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
		props_table = xcalloc((size_t)cap + 1, sizeof(*props_table));
		props._flags |= AMQP_BASIC_HEADERS_FLAG;
		props.headers = merge_headers(like, p, props_table, cap);
	}
	/* the broker checks user_id against our login: not ours to copy */
	props._flags &= ~AMQP_BASIC_USER_ID_FLAG;
	/* mandatory: a copy to a queue deleted meanwhile comes back */
	send_deadline(m, p->body_len);
	r = amqp_basic_publish(
	    m->conn, PUB_CHANNEL,
	    amqp_cstring_bytes(p->exchange ? p->exchange : ""),
	    amqp_cstring_bytes(p->routing_key), 1, 0, &props, body);
	send_done();
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

enum mq_confirm mq_confirm_state(struct mq *m)
{
	if (m->closed)
		return MQ_CONFIRM_LOST;
	if (m->refused) {
		m->refused = false;
		return MQ_CONFIRM_REFUSED; /* channel 2 closed: error set */
	}
	if (m->confirmed < m->published)
		return MQ_CONFIRM_PENDING;
	if (m->nacked) {
		set_error(m, "the broker refused (nacked) a message");
		m->nacked = false;
		m->returned = false;
		return MQ_CONFIRM_REFUSED;
	}
	if (m->returned) {
		set_error(m, "the broker could not route a message "
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
		enum mq_event e;

		if (left <= 0) {
			set_error(m, "no publisher confirm within %d ms",
				  timeout_ms);
			return -1;
		}
		tv.tv_sec = left / 1000;
		tv.tv_usec = (left % 1000) * 1000;
		e = read_one(m, &tv);
		if (e == MQ_CANCELLED)
			m->cancelled = true;
	}
	return c == MQ_CONFIRM_OK ? 0 : -1;
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
	if (check_reply(m, amqp_get_rpc_reply(m->conn), what))
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
	if (check_reply(m, r, "basic.get"))
		return -1;
	if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
		return 0;
	if (r.reply.id != AMQP_BASIC_GET_OK_METHOD) {
		set_error(m, "basic.get: unexpected method 0x%08x", r.reply.id);
		m->closed = true;
		return -1;
	}
	ok = r.reply.decoded;
	k = xcalloc(1, sizeof(*k));
	/* as in on_deliver: the method's strings go with the next frames */
	init_amqp_pool(&k->pool, 4096);
	dv.delivery_tag = ok->delivery_tag;
	dv.redelivered = ok->redelivered;
	dv.exchange = keep_bytes(&k->pool, ok->exchange);
	dv.routing_key = keep_bytes(&k->pool, ok->routing_key);
	if (read_content(m, CHANNEL, k, &len) != 0) {
		free_kept(k); /* unacked: the broker has it back at the close */
		return -1;
	}
	*out = to_delivery(&dv, k, len);
	return 1;
}

int mq_requeue_upto(struct mq *m, uint64_t tag)
{
	if (tag == 0)
		return 0;
	return check_status(m, amqp_basic_nack(m->conn, CHANNEL, tag, 1, 1),
			    "basic.nack");
}
