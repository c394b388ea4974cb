/* reply.c: rabbitmq-c's statuses and the broker's closes, kept as words. */
#include "config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mq_int.h"

void mq_set_error(struct mq *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->error, sizeof(m->error), fmt, ap);
	va_end(ap);
}

/*
 * Channel 2 (publishing) is reopened on demand; channel 1 closed means
 * starting afresh.
 */
void mq_channel_closed(struct mq *m, amqp_channel_t ch,
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

/* The broker's connection.close or channel.close as an rpc's reply. */
static void server_exception(struct mq *m, amqp_rpc_reply_t r, const char *what,
			     amqp_channel_t ch)
{
	if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
		amqp_connection_close_t *c = r.reply.decoded;
		amqp_connection_close_ok_t ok = {0};

		m->reply_code = c->reply_code;
		mq_set_error(m, "%s: broker closed the connection: %u %.*s",
			     what, c->reply_code, (int)c->reply_text.len,
			     (char *)c->reply_text.bytes);
		(void)amqp_send_method(m->conn, 0,
				       AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
		m->closed = true;
	} else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_t *c = r.reply.decoded;

		mq_set_error(m, "%s: broker closed the channel: %u %.*s", what,
			     c->reply_code, (int)c->reply_text.len,
			     (char *)c->reply_text.bytes);
		mq_channel_closed(m, ch, c);
	} else {
		mq_set_error(m, "%s: unexpected method 0x%08x", what,
			     r.reply.id);
		m->closed = true;
	}
}

/*
 * Records the broker's reply code. Any failure but a refusal on channel 2
 * leaves the connection unfit for use: only an abortive close follows.
 */
int mq_check_reply_on(struct mq *m, amqp_rpc_reply_t r, const char *what,
		      amqp_channel_t ch)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		return 0;
	case AMQP_RESPONSE_NONE:
		mq_set_error(m, "%s: missing reply", what);
		m->closed = true;
		break;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		mq_set_error(m, "%s: %s", what,
			     amqp_error_string2(r.library_error));
		m->lib_error = r.library_error;
		m->closed = true;
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		server_exception(m, r, what, ch);
		break;
	}
	return -1;
}

int mq_check_reply(struct mq *m, amqp_rpc_reply_t r, const char *what)
{
	return mq_check_reply_on(m, r, what, CHANNEL);
}

/* A timeout leaves the connection sound; any other failure does not. */
int mq_check_status(struct mq *m, int status, const char *what)
{
	if (status >= 0)
		return 0;
	mq_set_error(m, "%s: %s", what, amqp_error_string2(status));
	if (status != AMQP_STATUS_TIMEOUT)
		m->closed = true;
	return -1;
}

/*
 * RabbitMQ's words: "PRECONDITION_FAILED - delivery acknowledgement on
 * channel 1 timed out. Timeout value used: 1800000 ms. ..."
 */
int mq_timeout_of_close(int reply_code, const char *text)
{
	const char *v;
	long n;

	if (reply_code != AMQP_PRECONDITION_FAILED ||
	    strstr(text, "delivery acknowledgement") == NULL ||
	    strstr(text, "timed out") == NULL)
		return -1;
	v = strstr(text, "Timeout value used: ");
	if (v == NULL)
		return 0;
	n = strtol(v + 20, NULL, 10);
	return n < 0 ? 0 : n > INT_MAX ? INT_MAX : (int)n;
}

int mq_consumer_timeout_ms(const struct mq *m)
{
	return mq_timeout_of_close(m->reply_code, m->close_text);
}

const char *mq_error(struct mq *m)
{
	return m->error;
}

bool mq_lost(const struct mq *m)
{
	return m->closed;
}

const char *mq_blocked(const struct mq *m)
{
	return m->blocked ? m->blocked_reason : NULL;
}
