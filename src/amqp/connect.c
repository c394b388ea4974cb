/* connect.c: one connection to the first node that answers, logged in. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mq_int.h"

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

#define CAP(name)                                                              \
	{                                                                      \
		amqp_cstring_bytes(name),                                      \
		{                                                              \
			AMQP_FIELD_KIND_BOOLEAN,                               \
			{                                                      \
				.boolean = 1                                   \
			}                                                      \
		}                                                              \
	}

/* Client properties: a connection name, and the capabilities we handle. */
static int do_login(struct mq *m, const struct mq_url *u, int heartbeat,
		    const char *name)
{
	amqp_table_entry_t caps[] = {
	    CAP("consumer_cancel_notify"),
	    CAP("publisher_confirms"),
	    CAP("basic.nack"),
	    CAP("authentication_failure_close"),
	    CAP("connection.blocked"),
	};
	amqp_table_entry_t props[2];
	amqp_table_t t = {2, props};
	amqp_rpc_reply_t r;

	props[0].key = amqp_cstring_bytes("capabilities");
	props[0].value.kind = AMQP_FIELD_KIND_TABLE;
	props[0].value.value.table.num_entries =
	    (int)(sizeof(caps) / sizeof(caps[0]));
	props[0].value.value.table.entries = caps;
	props[1].key = amqp_cstring_bytes("connection_name");
	props[1].value.kind = AMQP_FIELD_KIND_UTF8;
	props[1].value.value.bytes = amqp_cstring_bytes(name);
	r = amqp_login_with_properties(
	    m->conn, u->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat, &t,
	    AMQP_SASL_METHOD_PLAIN, u->user, u->password);
	if (mq_check_reply(m, r, "login") == 0)
		return 0;
	if (m->reply_code == 0 && !m->closed)
		m->closed = true;
	return -1;
}

/* The AMQP handshake failed: the broker's words, or a hint at the cause. */
static void login_failed(struct mq *m, const char *safe, const struct mq_url *u,
			 const struct broker_conf *b)
{
	char tmp[sizeof(m->error)], why[300];
	int e = m->lib_error;

	memcpy(tmp, m->error, sizeof(tmp));
	if (m->reply_code == AMQP_ACCESS_REFUSED && b->password_file != NULL) {
		mq_set_error(m,
			     "%s: %.300s (the password is password_file %s's)",
			     safe, tmp, b->password_file);
	} else if (m->reply_code != 0 || e == 0) {
		mq_set_error(m, "%s: %.400s", safe, tmp);
	} else if (e == AMQP_STATUS_TIMEOUT) {
		mq_set_error(m,
			     "%s: login: no answer within %d s "
			     "(connect_timeout)",
			     safe, b->connect_timeout);
	} else if (u->ssl) {
		/* TLS 1.3: a refused client certificate comes after the
		 * handshake, at the first read */
		tls_why(TLS_HANDSHAKE, u->host, b->tls.cert != NULL, why,
			sizeof(why));
		mq_set_error(m, "%s: TLS: %s", safe, why);
	} else {
		mq_set_error(m, "%s: %.300s (a TLS port? then use amqps://)",
			     safe, tmp);
	}
}

/* Socket, connect, TLS, login, channel 1: 0, or -1 with m->error set. */
static int open_and_login(struct mq *m, const struct broker_conf *b,
			  const struct mq_url *u, const char *safe,
			  const char *name, int *status)
{
	struct timeval tv = {b->connect_timeout, 0};
	struct timeval rpc = {RPC_TIMEOUT_S, 0};
	char err[256];
	amqp_socket_t *s;
	int r;

	m->conn = amqp_new_connection();
	/* connect, TLS and the AMQP handshake: connect_timeout each */
	amqp_set_handshake_timeout(m->conn, &tv);
	amqp_set_rpc_timeout(m->conn, &rpc);
	s = mq_new_socket(m->conn, u->ssl, &b->tls, err, sizeof(err));
	if (s == NULL) {
		mq_set_error(m, "%s: %s", safe, err);
		return -1;
	}
	r = amqp_socket_open_noblock(s, u->host, u->port, &tv);
	if (r != AMQP_STATUS_OK) {
		mq_open_failed(m, r, safe, u, b);
		return -1;
	}
	if (do_login(m, u, b->heartbeat, name) != 0) {
		/* 403 ACCESS_REFUSED or a close during the handshake */
		if (m->reply_code == AMQP_ACCESS_REFUSED ||
		    m->reply_code == AMQP_NOT_ALLOWED)
			*status = MQ_FAIL_LOGIN;
		login_failed(m, safe, u, b);
		return -1;
	}
	amqp_channel_open(m->conn, CHANNEL);
	/* channel 2 opens at the first side queue or copy: a worker that
	 * only acks never costs the broker a second channel */
	return mq_check_reply(m, amqp_get_rpc_reply(m->conn), "channel.open");
}

/* One node: connect, log in, open the channel. */
static int try_url(struct mq *m, const struct broker_conf *b, const char *url,
		   const char *name, int *status)
{
	struct mq_url u;
	char *pw = NULL, *safe = mq_url_redacted(url);
	char err[256];
	int r = -1;

	*status = MQ_FAIL_CONNECT;
	if (mq_url_parse(url, &u) != 0) {
		mq_set_error(m, "%s: bad url", safe);
		free(safe);
		return -1;
	}
	if (u.vhost[0] == '\0')
		u.vhost = "/"; /* "amqp://host/": no vhost is named "" */
	if (b->password_file != NULL) {
		pw = read_password(b->password_file, err, sizeof(err));
		if (pw == NULL) {
			mq_set_error(m, "%s", err);
			*status = MQ_FAIL_LOGIN;
			goto out;
		}
		u.password = pw;
	}
	r = open_and_login(m, b, &u, safe, name, status);
out:
	if (r != 0 && m->conn != NULL) {
		amqp_destroy_connection(m->conn);
		m->conn = NULL;
	}
	if (pw != NULL) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	mq_url_free(&u);
	free(safe);
	return r;
}

/*
 * The k-th node to try: first, then the others in turn from a point that
 * rotate moves, so that the workers of one node fall back to different
 * nodes and the survivors share them evenly.
 */
int mq_node_order(int n, int first, int rotate, int k)
{
	if (k == 0 || n < 2)
		return first % n;
	return (first + 1 + (k - 1 + rotate) % (n - 1)) % n;
}

/* Every node failed: the first node's words, and how many others did. */
static void all_failed(const struct broker_conf *b, char *err, size_t errlen)
{
	char one[512];

	if (b->nurls < 2)
		return;
	snprintf(one, sizeof(one), "%s", err);
	snprintf(err, errlen, "%s (and the other %d nodes failed too)", one,
		 b->nurls - 1);
}

struct mq *mq_connect(const struct broker_conf *b, const char *name, int first,
		      int rotate, int *node, int *status, char *err,
		      size_t errlen)
{
	struct mq *m = xcalloc(1, sizeof(*m));
	int low = b->nurls, low_status = MQ_FAIL_CONNECT;

	for (int k = 0; k < b->nurls; k++) {
		int i = mq_node_order(b->nurls, first, rotate, k);

		m->closed = false;
		m->reply_code = m->lib_error = 0;
		if (try_url(m, b, b->urls[i], name, status) == 0) {
			if (node == NULL)
				return m;
			*node = i;
			if (i != first % b->nurls)
				mq_resolve_home(m, b->urls[first % b->nurls]);
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
	all_failed(b, err, errlen);
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
	mq_track_free(&m->track);
	free(m);
}

int mq_fd(struct mq *m)
{
	return amqp_get_sockfd(m->conn);
}

bool mq_buffered(struct mq *m)
{
	return amqp_frames_enqueued(m->conn) || amqp_data_in_buffer(m->conn);
}

bool mq_has_news(struct mq *m)
{
	return m->head != NULL || m->cancelled || m->closed || mq_buffered(m);
}
