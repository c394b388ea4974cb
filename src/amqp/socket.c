/* socket.c: a connection's TCP or TLS socket, and the probe of a home node. */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "mq_int.h"

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt" /* Debian */

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

/* TLS 1.2 at least; SNI and verification are rabbitmq-c's */
static amqp_socket_t *tls_socket(amqp_connection_state_t conn,
				 const struct tls_conf *t, char *err,
				 size_t errlen)
{
	amqp_socket_t *s = amqp_ssl_socket_new(conn);
	const char *ca;

	if (s == NULL) {
		snprintf(err, errlen, "cannot create a TLS socket");
		return NULL;
	}
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

amqp_socket_t *mq_new_socket(amqp_connection_state_t conn, bool ssl,
			     const struct tls_conf *t, char *err, size_t errlen)
{
	amqp_socket_t *s;

	if (ssl)
		return tls_socket(conn, t, err, errlen);
	s = amqp_tcp_socket_new(conn);
	if (s == NULL)
		snprintf(err, errlen, "cannot create a socket");
	return s;
}

/* TCP or TLS could not be set up: why, in words. */
void mq_open_failed(struct mq *m, int r, const char *safe,
		    const struct mq_url *u, const struct broker_conf *b)
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
		mq_set_error(m,
			     "%s: cannot connect: no answer within %d s "
			     "(connect_timeout)",
			     safe, b->connect_timeout);
		return;
	case AMQP_STATUS_SOCKET_ERROR:
		mq_set_error(m, "%s: cannot connect: refused, or no route",
			     safe);
		return;
	default:
		mq_set_error(m, "%s: cannot connect: %s", safe,
			     amqp_error_string2(r));
		return;
	}
	tls_why(f, u->host, b->tls.cert != NULL, why, sizeof(why));
	mq_set_error(m, "%s: TLS: %s", safe, why);
}

/*
 * Blocking (a name lookup), so done while connecting, which blocks anyway:
 * the idle worker's probes then never wait on a resolver.
 */
void mq_resolve_home(struct mq *m, const char *url)
{
	struct addrinfo hints = {0}, *res = NULL;
	struct mq_url u;
	char port[16];

	m->home_len = 0;
	if (mq_url_parse(url, &u) != 0)
		return;
	snprintf(port, sizeof(port), "%d", u.port);
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(u.host, port, &hints, &res) == 0 && res != NULL &&
	    res->ai_addrlen <= sizeof(m->home)) {
		memcpy(&m->home, res->ai_addr, res->ai_addrlen);
		m->home_len = res->ai_addrlen;
	}
	if (res != NULL)
		freeaddrinfo(res);
	mq_url_free(&u);
}

int mq_probe_home(struct mq *m, int timeout_ms)
{
	struct pollfd p = {-1, POLLOUT, 0};
	int e = 0, ok = -1;
	socklen_t el = sizeof(e);

	if (m->home_len == 0)
		return -1;
	p.fd = socket(m->home.ss_family,
		      SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (p.fd == -1)
		return -1;
	if (connect(p.fd, (struct sockaddr *)&m->home, m->home_len) == 0)
		ok = 0;
	else if (errno == EINPROGRESS && poll(&p, 1, timeout_ms) == 1 &&
		 getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0)
		ok = 0;
	close(p.fd);
	return ok;
}
