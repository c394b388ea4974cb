"""queue.max_body: a message whose body is over the limit is never run nor
read into memory; the worker stays up, other messages flow, and the big one
is parked with its reason (or, when its body cannot be kept, rejected to the
queue's dead-letter target), said once in the log and counted as failed."""
import os
import re
import urllib.request

from conftest import free_port, read_lines, wait_for, write_script

RECORD = r"""
#!/bin/sh
# argv: RESULTS. "MESSAGE_ID BYTES PPID", one atomic append per message.
n=$(wc -c)
printf '%s %s %s\n' "${WARREN_MESSAGE_ID:--}" "$n" "$PPID" >>"$1"
"""

BIG = 2 * (1 << 20) + 1  # over max_body = 1 (MiB)


def metric(port, queue, outcome):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    m = re.search(rf'^warren_messages_total\{{queue="{re.escape(queue)}",'
                  rf'outcome="{outcome}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def start(warrend, tmp_path, results, queue_extra, env_extra):
    h = write_script(tmp_path / "record.sh", RECORD)
    port = free_port()
    env = dict(os.environ)
    env.update(env_extra)
    w = warrend([h, str(results)], queue_extra="    max_body = 1\n" + queue_extra,
                extra=f'metrics {{ listen = "127.0.0.1:{port}" }}', env=env)
    w.wait_consuming(1)
    [worker] = w.wait_children(1)
    return w, worker, port


def publish_three(broker, w, big):
    broker.publish_many(w.queue, [
        (b"before", None, "small-1", {}),
        (big, {"x-custom": "kept"}, "big-1", {"content_type": "application/x-big"}),
        (b"after", None, "small-2", {}),
    ])


def check_flow(w, worker, results):
    """The small ones ran, the big one did not, by the same worker."""
    wait_for(lambda: len(read_lines(results)) >= 2, timeout=30,
             message="the two small messages handled")
    rows = [l.split() for l in read_lines(results)]
    assert sorted(r[0] for r in rows) == ["small-1", "small-2"], rows
    assert {int(r[2]) for r in rows} == {worker}
    assert w.children() == [worker], "the worker died and was respawned"


def big_lines(w):
    return [l for l in w.log().splitlines() if "big-1" in l]


def test_message_over_max_body_is_parked_unread(broker, warrend, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    results = tmp_path / "results"
    w, worker, port = start(warrend, tmp_path, results, "",
                            {"TMPDIR": str(spool)})
    big = os.urandom(BIG)
    publish_three(broker, w, big)

    failed = w.queue + ".failed"
    wait_for(lambda: broker.ready_count(failed) >= 1, timeout=30,
             interval=0.2, message="the big message parked")
    check_flow(w, worker, results)
    method, props, body = broker.get(failed)
    assert body == big, "the parked copy lost or changed the body"
    assert props.message_id == "big-1"
    assert props.content_type == "application/x-big"
    hd = props.headers
    assert hd["x-warren-reason"] == f"body {BIG} bytes over max_body 1 MiB"
    assert hd["x-warren-attempts"] == 0
    assert hd["x-custom"] == "kept"
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="the original acked")
    assert broker.ready_count(failed) == 0, "parked more than once"

    lines = big_lines(w)
    assert len(lines) == 1, lines
    assert f"body {BIG} bytes over max_body 1 MiB" in lines[0]
    assert "parked" in lines[0]
    wait_for(lambda: metric(port, w.queue, "failed") == 1, timeout=20,
             message="warren_messages_total{outcome=failed} == 1")
    assert metric(port, w.queue, "ack") == 2
    assert list(spool.iterdir()) == [], "a spool file was left behind"
    w.stop()


def test_unkept_body_is_rejected_to_the_dead_letter_target(broker, warrend,
                                                           tmp_path):
    """No spool file can be made (TMPDIR is missing): the message cannot
    be parked with its body, so it is rejected, and the queue's
    dead-letter target keeps it whole."""
    results = tmp_path / "results"
    dlq = "max-body-dlq"
    conn = broker.connect()
    conn.channel().queue_declare(dlq, durable=True)
    conn.close()
    args = ('    arguments = {"x-dead-letter-exchange=", '
            f'"x-dead-letter-routing-key={dlq}"}}\n')
    w, worker, port = start(warrend, tmp_path, results, args,
                            {"TMPDIR": str(tmp_path / "missing")})
    big = os.urandom(BIG)
    publish_three(broker, w, big)

    wait_for(lambda: broker.ready_count(dlq) >= 1, timeout=30,
             interval=0.2, message="the big message dead-lettered")
    check_flow(w, worker, results)
    method, props, body = broker.get(dlq)
    broker.delete_queue(dlq)
    assert body == big
    assert props.message_id == "big-1"
    assert props.headers["x-death"][0]["reason"] == "rejected"
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="the original settled")
    assert broker.ready_count(w.queue + ".failed") == 0

    lines = big_lines(w)
    assert len(lines) == 2, lines  # why it is not kept, then its end
    assert "could not be kept" in lines[0] and "missing" in lines[0]
    assert "over max_body 1 MiB, not kept" in lines[1]
    assert "rejected" in lines[1]
    wait_for(lambda: metric(port, w.queue, "failed") == 1, timeout=20,
             message="warren_messages_total{outcome=failed} == 1")
    w.stop()
