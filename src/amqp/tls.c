/*
 * tls.c: why a TLS connection failed, in an operator's words. rabbitmq-c
 * does the TLS (it owns the SSL_CTX and the handshake) but reports only
 * "peer verify failed" or "connection failed"; this reads OpenSSL's own
 * verdict on rabbitmq-c's context: the certificate error its
 * verification met, and the reason of the handshake's last error. The
 * only user of OpenSSL, and only to diagnose.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "mq_int.h"

/*
 * The CAs to trust, parsed by the master at start and at every reload, so
 * that each worker it forks starts with them (rabbitmq-c
 * would parse the whole bundle again at every connect of every worker).
 */
static X509_STORE *ca_store;
static char ca_path[4096];

int tls_load_ca(const char *path)
{
	X509_STORE *st;

	/* parsed anew each time: a bundle replaced in place counts */
	st = X509_STORE_new();
	if (st == NULL || X509_STORE_load_locations(st, path, NULL) != 1) {
		X509_STORE_free(st);
		ERR_clear_error();
		return -1; /* the worker's own load will say why */
	}
	X509_STORE_free(ca_store);
	ca_store = st;
	snprintf(ca_path, sizeof(ca_path), "%s", path);
	return 0;
}

bool tls_use_ca(void *ssl_ctx, const char *path)
{
	if (ca_store == NULL || strcmp(ca_path, path) != 0)
		return false;
	SSL_CTX_set1_cert_store(ssl_ctx, ca_store);
	return true;
}

/* The first certificate error of the current handshake (one per worker). */
static int verify_error = X509_V_OK;

/* Records the error, changes nothing: rabbitmq-c judges afterwards. */
static int on_verify(int ok, X509_STORE_CTX *ctx)
{
	if (!ok && verify_error == X509_V_OK)
		verify_error = X509_STORE_CTX_get_error(ctx);
	return ok;
}

void tls_watch(void *ssl_ctx)
{
	SSL_CTX *ctx = ssl_ctx;

	verify_error = X509_V_OK;
	ERR_clear_error();
	if (ctx != NULL)
		SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx),
				   on_verify);
}

/* The certificate's fault, from the error verification met. */
static void why_untrusted(char *buf, size_t len)
{
	switch (verify_error) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		snprintf(buf, len, "the broker's certificate has expired");
		break;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		snprintf(buf, len,
			 "the broker's certificate is not valid yet "
			 "(check the clocks)");
		break;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		snprintf(buf, len,
			 "the broker's certificate is signed by an unknown CA "
			 "(tls ca_cert names the CAs to trust)");
		break;
	case X509_V_OK:
		snprintf(buf, len, "the broker's certificate is not trusted");
		break;
	default:
		snprintf(buf, len,
			 "the broker's certificate is not trusted: %s",
			 X509_verify_cert_error_string(verify_error));
	}
}

/* The handshake's fault, from OpenSSL's last error reason. */
static void why_handshake(bool have_cert, char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	if (r == NULL)
		r = "";
	if (strstr(r, "wrong version number") || strstr(r, "packet length") ||
	    strstr(r, "record layer") || strstr(r, "http request"))
		snprintf(buf, len,
			 "the port does not speak TLS (an amqp:// "
			 "port? then use amqp://)");
	else if (strstr(r, "protocol version") ||
		 strstr(r, "unsupported protocol") ||
		 strstr(r, "no protocols available"))
		snprintf(buf, len,
			 "the broker refused the TLS handshake (protocol "
			 "version: warrend speaks TLS 1.2 and later only)");
	else if (!have_cert && (strstr(r, "certificate required") ||
				strstr(r, "handshake failure") ||
				strstr(r, "bad certificate") || r[0] == '\0'))
		/* TLS 1.3 sends its refusal after the handshake: the first
		 * read meets it, or only the closed connection */
		snprintf(buf, len,
			 "the broker refused the TLS handshake: it "
			 "asks for a client certificate (set tls cert "
			 "and key)");
	else if (r[0] != '\0')
		snprintf(buf, len, "the broker refused the TLS handshake: %s",
			 r);
	else
		snprintf(buf, len,
			 "the TLS handshake failed (connection "
			 "closed: does the port speak TLS?)");
}

void tls_why(enum tls_failure f, const char *host, bool have_cert, char *buf,
	     size_t len)
{
	switch (f) {
	case TLS_UNTRUSTED:
		why_untrusted(buf, len);
		break;
	case TLS_WRONG_NAME:
		snprintf(buf, len,
			 "the broker's certificate does not name %s (connect "
			 "by a name it holds, or set verify_hostname = false)",
			 host);
		break;
	case TLS_HANDSHAKE:
		why_handshake(have_cert, buf, len);
		break;
	}
	ERR_clear_error();
}
