#!/usr/bin/python3
"""examples/rpc_client.py: ask a warren queue for a result, with pika.

    rpc_client.py URL QUEUE [BODY] [--timeout S]

The queue's section says `reply = true`. The request goes out with
reply_to "amq.rabbitmq.reply-to" (RabbitMQ's direct reply-to: no reply
queue to declare or clean up) and a fresh correlation_id; the reply with
that correlation_id is printed. Exit status as warren-submit --wait: 0 for
x-warren-outcome ok, 1 for failed (reason on stderr), 75 for no reply in
time. BODY defaults to stdin.

    $ ./rpc_client.py amqp://guest:guest@localhost/ thumbnails < photo.jpg
"""

import argparse
import sys
import uuid

import pika
import pika.exceptions


def call(url, queue, body, timeout):
    """(outcome, reason, body) of the reply, or None after timeout s."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        got = {}
        corr = uuid.uuid4().hex

        def on_reply(ch, method, props, reply):
            if props.correlation_id == corr:  # a late one for another call
                headers = props.headers or {}
                got["reply"] = (headers.get("x-warren-outcome", "ok"),
                                headers.get("x-warren-reason", ""), reply)

        # consume before publishing, on the same channel, without acks
        ch.basic_consume("amq.rabbitmq.reply-to", on_reply, auto_ack=True)
        ch.confirm_delivery()
        try:
            ch.basic_publish("", queue, body, pika.BasicProperties(
                reply_to="amq.rabbitmq.reply-to", correlation_id=corr,
                message_id=corr, delivery_mode=2), mandatory=True)
        except pika.exceptions.UnroutableError:
            raise SystemExit(f"rpc_client: no queue {queue!r} to take it")
        conn.call_later(timeout, lambda: got.setdefault("reply", None))
        while "reply" not in got:
            conn.process_data_events(time_limit=1)
        return got["reply"]
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description="one RPC to a warren queue")
    ap.add_argument("url")
    ap.add_argument("queue")
    ap.add_argument("body", nargs="?")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    body = a.body.encode() if a.body is not None else sys.stdin.buffer.read()
    reply = call(a.url, a.queue, body, a.timeout)
    if reply is None:
        print(f"rpc_client: no reply within {a.timeout:g} s", file=sys.stderr)
        return 75
    outcome, reason, data = reply
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    if outcome == "failed":
        print(f"rpc_client: failed: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
