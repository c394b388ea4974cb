/* request.c: the requester's side of RPC: direct reply-to on channel 2. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mq_int.h"

int mq_reply_consume(struct mq *m)
{
	if (mq_pub_channel(m) != 0)
		return -1;
	/* no-ack, on the channel that publishes the request: RabbitMQ's
	 * rule for amq.rabbitmq.reply-to */
	amqp_basic_consume(m->conn, PUB_CHANNEL,
			   amqp_cstring_bytes(MQ_REPLY_TO), amqp_empty_bytes, 0,
			   1, 0, amqp_empty_table);
	return mq_check_reply_on(m, amqp_get_rpc_reply(m->conn),
				 "basic.consume " MQ_REPLY_TO, PUB_CHANNEL);
}

int mq_wait_delivery(struct mq *m, int timeout_ms, struct delivery **out)
{
	int64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		int64_t left = deadline - now_ms();
		struct timeval tv;
		enum mq_event e;

		if (m->head != NULL)
			return mq_poll(m, out) == MQ_DELIVERY ? 1 : -1;
		if (left <= 0)
			return 0;
		tv.tv_sec = left / 1000;
		tv.tv_usec = (left % 1000) * 1000;
		e = mq_read_one(m, &tv);
		if (e == MQ_CLOSED)
			return -1;
	}
}
