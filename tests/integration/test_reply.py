"""Replies (SPEC: queue.reply, warren-submit --wait): a message with
reply_to gets the handler's result with its correlation_id on the default
exchange, confirmed before the original is acked; a parked message's
requester gets x-warren-outcome failed; retried attempts send nothing.
The requesters here are pika clients on direct reply-to, as an
application would be, and warren-submit --wait."""

import os
import subprocess
import time
from pathlib import Path

import pika
import pytest

from conftest import REPO, SUBMIT, read_lines, retry_conf, wait_for, write_script

EXAMPLES = REPO / "examples"


class Requester:
    """A pika client on amq.rabbitmq.reply-to: publishes requests and
    collects the replies, as an RPC client does."""

    def __init__(self, broker, reply_queue=None):
        self.conn = broker.connect()
        self.ch = self.conn.channel()
        self.replies = []
        self.reply_to = reply_queue or "amq.rabbitmq.reply-to"
        if reply_queue:  # a durable queue of its own instead
            self.ch.queue_declare(reply_queue, durable=True)
        self.ch.basic_consume(self.reply_to, self._on_reply, auto_ack=True)

    def _on_reply(self, ch, method, props, body):
        self.replies.append((props, body))

    def request(self, queue, body, corr, **props):
        self.ch.basic_publish(
            "", queue, body,
            pika.BasicProperties(reply_to=self.reply_to,
                                 correlation_id=corr, delivery_mode=2,
                                 message_id=corr, **props))

    def wait(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.replies) < n and time.monotonic() < deadline:
            self.conn.process_data_events(time_limit=0.2)
        return self.replies

    def settle(self, seconds):
        """Keep listening a while, for replies that should not come."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.conn.process_data_events(time_limit=0.2)
        return self.replies

    def close(self):
        if self.conn.is_open:
            self.conn.close()


@pytest.fixture
def requester(broker):
    made = []

    def make(reply_queue=None):
        r = Requester(broker, reply_queue)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def echo_exec(tmp_path):
    """An exec handler whose stdout (the result) is "echo:" + the body."""
    return write_script(tmp_path / "echo.sh", """
#!/bin/sh
printf 'echo:'
cat
""")


def echo_persistent(tmp_path):
    return write_script(tmp_path / "echo.py", f"""
#!/usr/bin/python3
import sys
sys.path.insert(0, {str(EXAMPLES)!r})
import warren_handler

def handle(msg):
    if msg.body == b"bad":
        raise warren_handler.Fail("bad body")
    return b"echo:" + msg.body

warren_handler.serve(handle)
""")


def outcome_of(props):
    return (props.headers or {}).get("x-warren-outcome")


def check_100(w, requester):
    w.wait_consuming(2)
    r = requester()
    for i in range(100):
        r.request(w.queue, f"m-{i}".encode(), f"c-{i}")
    replies = r.wait(100, timeout=60)
    by_corr = {}
    for props, body in replies:
        by_corr.setdefault(props.correlation_id, []).append((props, body))
    missing = [i for i in range(100) if f"c-{i}" not in by_corr]
    assert not missing, f"no reply for {missing[:10]}...; log:\n{w.log()[-3000:]}"
    assert len(replies) == 100, "duplicate replies without any failure"
    for i in range(100):
        (props, body), = by_corr[f"c-{i}"]
        assert body == f"echo:m-{i}".encode()
        assert outcome_of(props) == "ok"
    wait_for(lambda: w.broker.ready_count(w.queue) == 0, 10,
             message="every request acked")


def test_exec_replies_carry_stdout_and_correlation_id(warrend, requester,
                                                      tmp_path):
    w = warrend([echo_exec(tmp_path)], workers=2,
                queue_extra="    reply = true\n")
    check_100(w, requester)
    # the result is the reply's, not the log's
    assert "echo:m-7" not in w.log()


def test_persistent_replies_carry_the_answers_result(warrend, requester,
                                                     tmp_path):
    w = warrend(["/usr/bin/python3", echo_persistent(tmp_path)], workers=2,
                queue_extra='    reply = true\n    mode = "persistent"\n')
    check_100(w, requester)


def test_persistent_fail_answer_replies_failed(warrend, requester, tmp_path):
    w = warrend(["/usr/bin/python3", echo_persistent(tmp_path)],
                queue_extra='    reply = true\n    mode = "persistent"\n')
    w.wait_consuming(1)
    r = requester()
    r.request(w.queue, b"bad", "c-bad")
    (props, body), = r.wait(1, timeout=30)
    assert outcome_of(props) == "failed"
    assert props.headers["x-warren-reason"] == "bad body"
    assert body == b""


def test_parked_message_replies_failed_and_retries_send_nothing(
        warrend, requester, tmp_path):
    runs = tmp_path / "runs"
    h = write_script(tmp_path / "fail.sh", f"""
#!/bin/sh
cat >/dev/null
echo "$WARREN_ATTEMPT" >>{runs}
echo partial output
exit 3
""")
    w = warrend([h], queue_extra="    reply = true\n" +
                retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    r = requester()
    r.request(w.queue, b"x", "c-fail")
    replies = r.wait(1, timeout=30)
    assert len(replies) == 1, f"no reply; log:\n{w.log()[-3000:]}"
    # the reply comes only once the last attempt failed: two runs by then
    assert read_lines(runs) == ["1", "2"]
    props, body = replies[0]
    assert props.correlation_id == "c-fail"
    assert outcome_of(props) == "failed"
    assert props.headers["x-warren-reason"] == "exit 3"
    assert body == b""
    assert w.broker.ready_count(w.queue + ".failed") == 1
    # nothing more comes (the retried attempt sent nothing)
    assert len(r.settle(1.5)) == 1


def test_messages_without_reply_to_are_acked_and_logged(warrend, broker,
                                                        tmp_path):
    w = warrend([echo_exec(tmp_path)], queue_extra="    reply = true\n")
    w.wait_consuming(1)
    broker.publish(w.queue, b"plain", message_id="no-reply")
    wait_for(lambda: "echo:plain" in w.log(), 20,
             message="stdout logged for a message without reply_to")
    wait_for(lambda: " no-reply ack" in w.log(), 20, message="acked")


def submit(broker, *args, input=None, timeout=60):
    return subprocess.run([str(SUBMIT), "-u", broker.url, *args], input=input,
                          capture_output=True, timeout=timeout)


def test_submit_wait_prints_the_reply(warrend, broker, tmp_path):
    w = warrend([echo_exec(tmp_path)], queue_extra="    reply = true\n")
    w.wait_consuming(1)
    r = submit(broker, "-q", w.queue, "--wait", "--timeout", "30", "hello",
               "world")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"echo:hello world"


def test_submit_wait_exits_1_when_it_failed(warrend, broker, tmp_path):
    h = write_script(tmp_path / "bad.sh", "#!/bin/sh\ncat >/dev/null\nexit 65\n")
    w = warrend([h], queue_extra="    reply = true\n")
    w.wait_consuming(1)
    r = submit(broker, "-q", w.queue, "--wait", "--timeout", "30", "x")
    assert r.returncode == 1, r.stderr
    assert r.stdout == b""
    assert b"exit 65" in r.stderr


def test_submit_wait_times_out_with_75(broker):
    queue = "reply-nobody-home"
    broker.delete_queue(queue)
    try:
        t0 = time.monotonic()
        r = submit(broker, "-q", queue, "--wait", "--timeout", "2", "x")
        took = time.monotonic() - t0
        assert r.returncode == 75, r.stderr
        assert b"no reply within 2 s" in r.stderr
        assert 1.5 < took < 20
        # the request itself was published and confirmed
        assert broker.ready_count(queue) == 1
    finally:
        broker.delete_queue(queue)


def test_submit_timeout_needs_wait(broker):
    r = submit(broker, "-q", "whatever", "--timeout", "2", "x")
    assert r.returncode == 64


def test_python_examples_round_trip(warrend, broker, tmp_path):
    """examples/handler.py answers a requester with a JSON result, and
    examples/rpc_client.py is that requester."""
    import hashlib
    import json
    w = warrend(["/usr/bin/python3", str(EXAMPLES / "handler.py"),
                 str(tmp_path / "records.jsonl")],
                queue_extra='    reply = true\n    mode = "persistent"\n')
    w.wait_consuming(1)
    client = ["/usr/bin/python3", str(EXAMPLES / "rpc_client.py"), broker.url,
               w.queue]
    r = subprocess.run(client + ["some body", "--timeout", "30"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "len": 9, "sha256": hashlib.sha256(b"some body").hexdigest()}
    # an empty body is bad input for it: failed, with the reason
    r = subprocess.run(client + ["--timeout", "30"], input=b"",
                       capture_output=True, timeout=60)
    assert r.returncode == 1
    assert b"failed: empty body" in r.stderr
    # nobody serving: 75 after the timeout
    broker.delete_queue("reply-example-nobody")
    conn = broker.connect()
    conn.channel().queue_declare("reply-example-nobody", durable=True)
    conn.close()
    try:
        r = subprocess.run(["/usr/bin/python3", str(EXAMPLES / "rpc_client.py"),
                            broker.url, "reply-example-nobody", "x",
                            "--timeout", "1"], capture_output=True, timeout=60)
        assert r.returncode == 75, r.stderr
    finally:
        broker.delete_queue("reply-example-nobody")


@pytest.mark.parametrize("reply_to", ["direct", "queue"])
def test_workers_killed_around_replies_lose_none(warrend, broker, requester,
                                                 tmp_path, reply_to):
    """SIGKILL the worker that sent a reply the moment the reply arrives,
    racing its ack: the message then runs again (a duplicate reply) or was
    acked already; either way every request is answered, at most once
    more per kill."""
    pids = tmp_path / "pids"
    h = write_script(tmp_path / "slow-echo.sh", f"""
#!/bin/sh
echo "$WARREN_MESSAGE_ID $PPID" >>{pids}
sleep 0.1
printf 'echo:'
cat
""")
    w = warrend([h], workers=2, queue_extra="    reply = true\n")
    w.wait_consuming(2)
    # a durable reply queue: the broker confirms a persistent reply once
    # it is on disk, later than it delivers it, which widens the window
    # between the reply and the ack that the kill aims at
    name = w.queue + ".replies" if reply_to == "queue" else None
    r = requester(name)
    n, victims = 40, {"c-5", "c-15", "c-25"}
    for i in range(n):
        r.request(w.queue, f"m-{i}".encode(), f"c-{i}")
    killed = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r.conn.process_data_events(time_limit=0.05)
        for props, _ in r.replies:
            c = props.correlation_id
            if c in victims and c not in killed:
                killed.add(c)
                # the worker that ran it last
                pid = [l.split()[1] for l in read_lines(pids)
                       if l.split()[0] == c][-1]
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
        if len({p.correlation_id for p, _ in r.replies}) == n:
            break
    r.settle(3)  # a duplicate may trail
    seen = {}
    for props, body in r.replies:
        seen.setdefault(props.correlation_id, []).append(body)
    assert killed == victims
    missing = [i for i in range(n) if f"c-{i}" not in seen]
    assert not missing, f"lost replies {missing}; log:\n{w.log()[-3000:]}"
    for c, bodies in seen.items():
        i = int(c[2:])
        assert all(b == f"echo:m-{i}".encode() for b in bodies)
        assert len(bodies) <= 2, (c, len(bodies))
    dups = len(r.replies) - n
    assert dups <= len(victims)
    print(f"{reply_to}: {dups} duplicate replies after {len(victims)} kills")
    if name:
        broker.delete_queue(name)


def test_rejected_message_replies_failed_too(warrend, requester, tmp_path):
    """park = false: a message that fails for good is rejected, and its
    requester still hears that it failed."""
    h = write_script(tmp_path / "bad.sh", "#!/bin/sh\ncat >/dev/null\nexit 65\n")
    w = warrend([h], queue_extra="    reply = true\n    park = false\n")
    w.wait_consuming(1)
    r = requester()
    r.request(w.queue, b"x", "c-rejected")
    (props, body), = r.wait(1, timeout=30)
    assert outcome_of(props) == "failed"
    assert props.headers["x-warren-reason"] == "exit 65"
    wait_for(lambda: "c-rejected failed, exit 65" in w.log() and
             "rejected" in w.log(), 10, message="rejected")
    assert w.broker.ready_count(w.queue) == 0
    assert w.broker.ready_count(w.queue + ".failed") == 0
