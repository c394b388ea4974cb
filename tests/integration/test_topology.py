"""Topology (SPEC: queue.bind, queue.arguments, queue.declare): routing from
an exchange by key, queue arguments such as priorities, consuming a queue
another application owns without touching its arguments, and what
warrend -t can tell of them offline."""

import shutil
import subprocess

import pika
import pika.exceptions
import pytest

from conftest import (WARREND, retry_conf, runs_of, wait_for,
                      write_script)

# Appends {"id", "key", "priority", "attempt"} to argv[1]; a body "block"
# waits for the file argv[2] first, a body "low" takes 0.2 s; a body
# "fail-once" fails its first attempt.
HANDLER = r"""
#!/usr/bin/python3
import json, os, sys, time
body = sys.stdin.buffer.read()
if body == b"block":
    open(sys.argv[2] + ".started", "w").close()
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.02)
if body == b"low":
    time.sleep(0.2)
e = os.environ
row = {"id": e.get("WARREN_MESSAGE_ID"), "key": e.get("WARREN_ROUTING_KEY"),
       "exchange": e.get("WARREN_EXCHANGE"), "priority": e.get("WARREN_PRIORITY"),
       "attempt": e.get("WARREN_ATTEMPT")}
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(row) + "\n")
if body == b"fail-once" and e.get("WARREN_ATTEMPT") == "1":
    sys.exit(3)
"""


def channel(broker):
    conn = broker.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    return conn, ch


def arguments_of(broker, queue):
    """The queue's arguments as rabbitmqctl lists them (a string)."""
    info = broker.queue_info(queue, "arguments")
    assert info is not None, f"no queue {queue}"
    return info["arguments"]


def test_topic_exchange_routes_exactly_the_matching_keys(broker, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = write_script(tmp_path / "h.py", HANDLER)
    exchange = "t.x.uploads"
    w = warrend([h, str(runs), str(tmp_path / "go")], queue_extra=f"""
    bind "{exchange}" {{
        type = "topic"
        keys = {{"img.*", "doc.pdf"}}
    }}""")
    conn = None
    try:
        w.wait_consuming(1)
        conn, ch = channel(broker)
        match = ["img.png", "img.jpg", "doc.pdf"]
        miss = ["doc.txt", "img.a.b", "img", "other"]
        for key in match + miss:
            try:
                ch.basic_publish(exchange, key, key.encode(), mandatory=True,
                                 properties=pika.BasicProperties(
                                     message_id=key, delivery_mode=2))
                routed = True
            except pika.exceptions.UnroutableError:
                routed = False
            # the broker itself says which keys reach a queue
            assert routed == (key in match), key
        wait_for(lambda: len(runs_of(runs)) >= len(match), 30,
                 message="the matching messages handled")
        # a marker after them: once it is handled, nothing else came
        ch.basic_publish(exchange, "img.marker", b"m",
                         properties=pika.BasicProperties(message_id="marker"))
        wait_for(lambda: any(r["id"] == "marker" for r in runs_of(runs)), 30,
                 message="the marker handled")
        rows = runs_of(runs)
        assert sorted(r["id"] for r in rows) == sorted(match + ["marker"])
        assert all(r["exchange"] == exchange and r["key"] == r["id"]
                   for r in rows if r["id"] != "marker"), rows
        # the exchange is durable, of the configured type
        ex = [l.split("\t") for l in broker.ctl(
            "-q", "list_exchanges", "name", "type", "durable",
            "--no-table-headers").splitlines()]
        assert [exchange, "topic", "true"] in ex, ex
        w.stop()
    finally:
        if conn is not None and conn.is_open:
            conn.channel().exchange_delete(exchange)
            conn.close()


def test_bind_to_a_builtin_amq_exchange(broker, warrend, tmp_path):
    """amq.* exchanges exist already and may not be declared (403): they
    are only checked, then bound."""
    runs = tmp_path / "runs"
    h = write_script(tmp_path / "h.py", HANDLER)
    key = f"t.key.{tmp_path.name}"
    w = warrend([h, str(runs), str(tmp_path / "go")], queue_extra=f"""
    bind "amq.direct" {{
        keys = {{"{key}"}}
    }}""")
    w.wait_consuming(1)
    conn, ch = channel(broker)
    try:
        ch.basic_publish("amq.direct", key, b"x", mandatory=True,
                         properties=pika.BasicProperties(message_id="via-amq"))
    finally:
        conn.close()
    wait_for(lambda: [r["id"] for r in runs_of(runs)] == ["via-amq"], 30,
             message="the message routed by amq.direct")
    assert "ACCESS_REFUSED" not in w.log()
    w.stop()


def test_declare_false_consumes_a_foreign_queue_untouched(broker, warrend, tmp_path):
    """A queue declared by another application with a dead-letter argument:
    warrend with the default declare would be refused (406 inequivalent
    arg); with declare = false it consumes it and leaves it as it was."""
    runs = tmp_path / "runs"
    h = write_script(tmp_path / "h.py", HANDLER)
    queue = "t.foreign.billing"
    conn, ch = channel(broker)
    try:
        ch.queue_delete(queue)
        ch.queue_declare(queue, durable=True, arguments={
            "x-dead-letter-exchange": "t.billing.dlx", "x-message-ttl": 600000})
    finally:
        conn.close()
    before = arguments_of(broker, queue)
    assert "t.billing.dlx" in before, before
    w = warrend([h, str(runs), str(tmp_path / "go")], queue=queue,
                queue_extra="    declare = false\n" + retry_conf(attempts=2, delay=1))
    try:
        w.wait_consuming(1)
        broker.publish_many(queue, [(b"x", None, f"b-{i}", {}) for i in range(3)]
                            + [(b"fail-once", None, "b-retry", {})])
        wait_for(lambda: len(runs_of(runs)) == 5, 30,
                 message="three messages and a retried one handled")
        ids = sorted(r["id"] for r in runs_of(runs))
        assert ids == ["b-0", "b-1", "b-2", "b-retry", "b-retry"], ids
        assert "406" not in w.log() and "PRECONDITION" not in w.log(), w.log()
        assert arguments_of(broker, queue) == before
        w.stop()
    finally:
        broker.delete_queue(queue, queue + ".retry.1s", queue + ".failed")


def test_declare_false_on_a_missing_queue_creates_nothing(broker, warrend, tmp_path):
    queue = "t.foreign.missing"
    broker.delete_queue(queue)
    w = warrend(["/bin/cat"], queue=queue, queue_extra="    declare = false")
    wait_for(lambda: "NOT_FOUND" in w.log(), 30, message="the broker's 404 logged")
    assert broker.queue_info(queue, "name") is None, "the queue was declared"
    w.stop()


def test_priority_message_runs_next_and_keeps_its_priority_on_retry(broker, warrend, tmp_path):
    runs = tmp_path / "runs"
    go = tmp_path / "go"
    h = write_script(tmp_path / "h.py", HANDLER)
    w = warrend([h, str(runs), str(go)], workers=1,
                queue_extra='    arguments = {"x-max-priority=10"}\n'
                + retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    broker.publish(w.queue, b"block", message_id="block")
    wait_for(lambda: (tmp_path / "go.started").exists(), 30,
             message="the single worker busy")
    broker.publish_many(w.queue, [(b"low", None, f"low-{i}", {"priority": 0})
                                  for i in range(20)]
                        + [(b"fail-once", None, "high", {"priority": 9})])
    wait_for(lambda: broker.ready_count(w.queue) == 21, 10,
             message="21 messages waiting")
    go.touch()
    wait_for(lambda: len(runs_of(runs)) >= 3, 30, message="the next messages")
    order = [r["id"] for r in runs_of(runs)]
    assert order[:2] == ["block", "high"], order
    # its retry comes back through NAME.retry.1s with priority 9: ahead of
    # the low ones still waiting
    wait_for(lambda: sum(r["id"] == "high" for r in runs_of(runs)) == 2, 30,
             message="the retry of high")
    rows = runs_of(runs)
    [retry] = [r for r in rows if r["id"] == "high" and r["attempt"] == "2"]
    assert retry["priority"] == "9", retry
    # 20 low ones take 4 s or more; the retry waited 1 s
    lows_before = sum(r["id"].startswith("low") for r in rows[:rows.index(retry)])
    assert lows_before < 20, f"the retry ran after every low-priority message: {rows}"
    wait_for(lambda: len(runs_of(runs)) == 23, 60, message="all handled")
    assert "x-max-priority" in arguments_of(broker, w.queue)
    w.stop()


# ---------------------------------------------------------------------------
# warrend -t: what can be told offline


def check(tmp_path, queue_lines):
    conf = tmp_path / "w.conf"
    conf.write_text('broker { url = "amqp://localhost/" }\n'
                    'queue "q" {\n'
                    '    command = {"/bin/true"}\n'
                    + queue_lines + "\n}\n")
    return subprocess.run([str(WARREND), "-t", "-c", str(conf)],
                          capture_output=True, text=True, timeout=30), conf


@pytest.mark.parametrize("lines,line,words", [
    ('    arguments = {"x-max-priority=ten"}', 4, "x-max-priority must be an integer"),
    ('    arguments = {"no-value"}', 4, "is not NAME=VALUE"),
    ('    arguments = {"a=1", "a=2"}', 4, "a is given twice"),
    ('    arguments = {"x-queue-type=quorum"}', 4, "set by the key type"),
    ('    arguments = {"x-single-active-consumer=yes"}', 4, "true or false"),
    ('    bind "ex" {\n        type = "topics"\n    }', 5, 'type = "topics"'),
    ('    bind "" {\n    }', 5, "default exchange"),  # where it closes
    ('    bind "ex" {\n    }\n    bind "ex" {\n    }', 6, "duplicate"),
    ('    declare = false\n    arguments = {"x-max-priority=3"}', 6,
     "with declare = false they would never be used"),
    ('    delivery_limit = 3', 5, "quorum"),
    ('    type = "quorum"\n    arguments = {"x-max-priority=3"}', 6,
     "a quorum queue has no priorities"),
])
def test_check_refuses_bad_topology_with_file_and_line(tmp_path, lines, line, words):
    r, conf = check(tmp_path, lines)
    assert r.returncode == 78, r.stdout + r.stderr
    assert r.stderr.startswith(f"{conf}:{line}: "), r.stderr
    assert words in r.stderr, r.stderr


def test_check_accepts_topology_and_allows_bind_without_declare(tmp_path):
    r, _ = check(tmp_path, '''
    declare = false
    bind "amq.topic" {
        type = "topic"
        keys = {"a.#"}
    }
    bind "events" {
        type = "fanout"
    }''')
    assert r.returncode == 0 and r.stdout.strip() == "configuration OK", r.stderr
    r, _ = check(tmp_path, '    arguments = {"x-max-priority=10", '
                 '"x-single-active-consumer=true", "x-dead-letter-routing-key=7"}')
    assert r.returncode == 0, r.stderr


def test_submit_declares_the_queue_as_warrend_does(broker, warrend, tmp_path):
    """warren-submit -c gives the queue the same arguments (a plain declare
    of a queue with x-max-priority is refused: 406), and with
    declare = false only checks it."""
    runs = tmp_path / "runs"
    h = write_script(tmp_path / "h.py", HANDLER)
    w = warrend([h, str(runs), str(tmp_path / "go")],
                queue_extra='    arguments = {"x-max-priority=5", "x-max-length=1000"}')
    w.wait_consuming(1)
    submit = str(WARREND.parent / "warren-submit")
    r = subprocess.run([submit, "-c", str(w.conf), "-q", w.queue, "-i", "s-1", "hi"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: [r["id"] for r in runs_of(runs)] == ["s-1"], 30,
             message="the submitted message handled")
    # the same without the configuration: a plain declare, refused
    r = subprocess.run([submit, "-u", broker.url, "-q", w.queue, "hi"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "PRECONDITION_FAILED" in r.stderr, r.stderr
    w.stop()


def test_topology_paths_are_clean_under_memcheck(broker, warrend, tmp_path):
    """Bindings, arguments, a traced message, a retry and a reload that
    changes a key (it rolls the workers), under valgrind's memcheck."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    logdir, hdir = tmp_path / "vg", tmp_path / "h"
    logdir.mkdir()
    hdir.mkdir()
    runs = tmp_path / "runs"
    h = write_script(hdir / "h.py", HANDLER)
    exchange = "t.x.memcheck"
    w = warrend([h, str(runs), str(tmp_path / "go")], shutdown_timeout=20,
                queue_extra=f"""
    arguments = {{"x-max-priority=4", "x-single-active-consumer=false"}}
    bind "{exchange}" {{
        type = "direct"
        keys = {{"a", "b"}}
    }}
""" + retry_conf(attempts=2, delay=1),
                prefix=[valgrind, "-q", "--leak-check=full",
                        "--show-leak-kinds=definite,indirect",
                        "--errors-for-leak-kinds=definite,indirect",
                        "--trace-children=yes",
                        f"--trace-children-skip={hdir}/*,/bin/*,/usr/*",
                        f"--log-file={logdir}/vg.%p.log"])
    conn = None
    try:
        w.wait_consuming(1, timeout=90)
        conn, ch = channel(broker)
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        for mid, key, body in (("m-a", "a", b"x"), ("m-b", "b", b"fail-once")):
            ch.basic_publish(exchange, key, body, properties=pika.BasicProperties(
                message_id=mid, headers={"traceparent": tp, "baggage": "k=v"}))
        wait_for(lambda: len(runs_of(runs)) == 3, 120, message="three runs")
        conf = w.conf.read_text()
        w.conf.write_text(conf.replace('{"a", "b"}', '{"a", "c"}'))
        w.signal(1)
        wait_for(lambda: "rolling its workers" in w.log(), 60, message="the roll")
        w.wait_consuming(1, timeout=90)
        ch.basic_publish(exchange, "c", b"x",
                         properties=pika.BasicProperties(message_id="m-c"))
        wait_for(lambda: len(runs_of(runs)) == 4, 120, message="m-c by the new key")
        w.stop(timeout=90)
        logs = list(logdir.glob("vg.*.log"))
        assert len(logs) >= 3, [p.name for p in logs]  # master, 2 workers
        bad = {p.name: p.read_text() for p in logdir.glob("vg.*.log")
               if p.read_text().strip()}
        assert not bad, "\n\n".join(f"== {k}\n{v}" for k, v in bad.items())
    finally:
        if conn is not None and conn.is_open:
            conn.channel().exchange_delete(exchange)
            conn.close()
