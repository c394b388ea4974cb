"""Persistent handlers (SPEC: "Persistent handlers", warren-handler(7)):
one long-lived process per worker, one frame per message on its stdin, one
status line per frame on its stdout. Everything exec mode promises holds
per message: metadata, outcomes, timeout, crashes, stop and reload.

The handler below speaks the protocol and appends one JSON line per event
to a results file: "start" (its environment, fds, process group), "msg"
(a frame: its metadata and body checksum), "eof" (stdin closed). What it
does with a message is chosen by the body's first word.
"""
import hashlib
import json
import os
import re
import signal
import time

import pytest

from conftest import (HANDLER_PATH, pid_alive, queue_name_for, read_lines,
                      retry_conf, wait_for, write_script)

HANDLER = r"""#!/usr/bin/python3
import hashlib, json, os, sys, time

results = sys.argv[1]
exit_after = "--exit-after" in sys.argv

def record(**kv):
    kv["pid"] = os.getpid()
    fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (json.dumps(kv) + "\n").encode())
    os.close(fd)

def unescape(v):
    out, i = [], 0
    while i < len(v):
        if v[i] == "\\" and i + 1 < len(v):
            out.append("\n" if v[i + 1] == "n" else v[i + 1])
            i += 2
        else:
            out.append(v[i])
            i += 1
    return "".join(out)

raw = open("/proc/self/environ", "rb").read()
env = dict(e.decode().split("=", 1) for e in raw.split(b"\0") if e)
fds = sorted(int(f) for f in os.listdir("/proc/self/fd")
             if os.path.exists("/proc/self/fd/" + f))
record(event="start", env=env, fds=fds, pgid=os.getpgid(0), ppid=os.getppid(),
       cwd=os.getcwd())
inp, out = sys.stdin.buffer, sys.stdout
while True:
    head = inp.readline()
    if not head:
        record(event="eof")
        sys.exit(0)
    tag, n, length = head.decode().split()
    assert tag == "warren", head
    meta = {}
    for _ in range(int(n)):
        name, _, value = inp.readline().decode().rstrip("\n").partition("=")
        meta[name] = unescape(value)
    body = inp.read(int(length))
    assert len(body) == int(length)
    word = body.split(b" ")[0].decode("latin-1") if body else ""
    first = meta.get("WARREN_ATTEMPT") == "1"
    record(event="msg", meta=meta, len=len(body),
           sha256=hashlib.sha256(body).hexdigest(), word=word)
    sys.stderr.write("working on %s\n" % meta.get("WARREN_MESSAGE_ID", "-"))
    sys.stderr.flush()
    if word == "crash" and first:
        sys.exit(3)
    if word == "hang" and first:
        time.sleep(3600)
    if word == "block" and meta.get("WARREN_REDELIVERED") == "0":
        time.sleep(3600)
    if word == "slow":
        time.sleep(float(body.split()[1]))
    if word == "garbage" and first:
        answer = "yes please"
    elif word == "retry":
        answer = "retry db busy"
    elif word == "fail":
        answer = "fail bad input"
    else:
        answer = "ok"
    out.write(answer + "\n")
    out.flush()
    record(event="answered", answer=answer, word=word)
    if exit_after:
        sys.exit(0)
"""


def events(path, kind=None):
    out = [json.loads(l) for l in read_lines(path)]
    return [e for e in out if kind is None or e["event"] == kind]


def wait_events(path, kind, n, timeout=30, where=None):
    def enough():
        got = [e for e in events(path, kind) if where is None or where(e)]
        return got if len(got) >= n else None
    return wait_for(enough, timeout=timeout, interval=0.05,
                    message=f"{n} {kind} event(s) in {path}")


def msgs_of(path, mid):
    return [e for e in events(path, "msg")
            if e["meta"].get("WARREN_MESSAGE_ID") == mid]


def result_lines(w, mid):
    pat = re.compile(rf": {re.escape(mid)} (ack|retry|failed|requeued), ")
    return [l for l in w.log().splitlines() if pat.search(l)]


def wait_result(w, mid, n=1, timeout=30):
    return wait_for(lambda: len(result_lines(w, mid)) >= n and result_lines(w, mid),
                    timeout=timeout, interval=0.05,
                    message=f"{n} result line(s) for {mid}")


@pytest.fixture
def cleanup(broker, request):
    """Deletes the side queues of the short retry delays these tests use
    (request it before `warrend`)."""
    yield
    q = queue_name_for(request.node.name)
    broker.delete_queue(q, q + ".failed", *(f"{q}.retry.{d}s" for d in (1, 2, 4)))


@pytest.fixture
def persistent(warrend, tmp_path):
    """Factory: a warrend whose queue runs HANDLER in persistent mode;
    returns (warrend, results path)."""
    def start(*args, workers=1, queue_extra="", **kw):
        results = tmp_path / "results"
        h = write_script(tmp_path / "handler.py", HANDLER)
        w = warrend([h, str(results), *args], workers=workers,
                    queue_extra='    mode = "persistent"\n' + queue_extra, **kw)
        w.wait_consuming(workers)
        return w, results
    return start


def test_one_process_handles_many_messages(broker, persistent):
    w, results = persistent(environment=["GREETING=hi there"])
    [start] = wait_events(results, "start", 1)
    broker.publish_many(w.queue, [(f"m{i}", None, f"m{i}", {}) for i in range(6)])
    msgs = wait_events(results, "answered", 6)
    assert {e["pid"] for e in msgs} == {start["pid"]}
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20)
    for i in range(6):
        assert re.search(rf"m{i} ack, ok, \d+ ms$", wait_result(w, f"m{i}")[0])
        assert f"m{i}: stderr: working on m{i}" in w.log()
    # its own world: a clean environment without per-message variables,
    # fds 0-2 only, a process group of its own, the workdir
    [worker] = w.children()
    assert start["env"] == {"PATH": HANDLER_PATH, "GREETING": "hi there",
                            "WARREN_QUEUE": w.queue, "WARREN_WORKER": "1"}
    assert start["fds"] == [0, 1, 2]
    assert start["pgid"] == start["pid"] and start["ppid"] == worker
    assert start["cwd"] == "/"
    assert len(events(results, "start")) == 1
    w.stop()
    # at the stop it sees EOF and exits by itself
    wait_events(results, "eof", 1, where=lambda e: e["pid"] == start["pid"])


def test_metadata_equals_exec_mode(broker, warrend, persistent, handlers, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    ex = warrend([handlers.dumper(outdir), str(outdir)])
    ex.wait_consuming(1)
    w, results = persistent()
    props = dict(correlation_id="c-1", reply_to="r", content_type="text/plain",
                 content_encoding="utf-8", type="job", app_id="tests",
                 timestamp=1700000000, priority=3)
    headers = {"x-trace": "abc", "X-Count": 42, "x-note": "two\nlines \\ and \\n",
               "x-list": ["a", 1]}
    for q in (ex.queue, w.queue):
        broker.publish(q, b"body", message_id="meta", headers=headers, **props)
    wait_for((outdir / "meta.json").exists, timeout=30)
    exec_env = json.loads((outdir / "meta.json").read_text())["env"]
    [msg] = wait_events(results, "msg", 1)
    want = {k: v for k, v in exec_env.items() if k.startswith("WARREN_")}
    want["WARREN_QUEUE"] = want["WARREN_ROUTING_KEY"] = w.queue
    assert msg["meta"] == want
    assert msg["meta"]["WARREN_HEADER_X_NOTE"] == "two\nlines \\ and \\n"
    assert msg["meta"]["WARREN_ATTEMPT"] == "1"


def test_binary_and_16_mib_bodies_pass_exactly(broker, persistent):
    w, results = persistent(heartbeat=2)
    bodies = {"all-bytes": bytes(range(256)) * 16, "empty": b"",
              "nl": b"\n\nwarren 0 0\n", "big": os.urandom(16 << 20)}
    broker.publish_many(w.queue, [(b, None, k, {}) for k, b in bodies.items()])
    wait_events(results, "answered", len(bodies), timeout=60)
    for mid, body in bodies.items():
        [m] = msgs_of(results, mid)
        assert m["len"] == len(body), mid
        assert m["sha256"] == hashlib.sha256(body).hexdigest(), mid
    assert len({e["pid"] for e in events(results, "msg")}) == 1
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20)
    assert "heartbeat" not in w.log()


def test_crash_mid_message_costs_one_attempt(broker, cleanup, persistent):
    w, results = persistent(queue_extra=retry_conf(attempts=3, delay=1))
    [first] = wait_events(results, "start", 1)
    broker.publish(w.queue, "crash now", message_id="c-1")
    lines = wait_result(w, "c-1", 2, timeout=30)
    assert re.search(r"c-1 retry, exit 3, \d+ ms, attempt 1, again in 1 s$", lines[0])
    assert re.search(r"c-1 ack, ok, ", lines[1])
    runs = msgs_of(results, "c-1")
    assert [r["meta"]["WARREN_ATTEMPT"] for r in runs] == ["1", "2"]
    assert runs[0]["pid"] == first["pid"] and runs[1]["pid"] != first["pid"]
    assert not pid_alive(first["pid"])
    assert len(events(results, "start")) == 2


def test_garbage_answer_fails_the_attempt(broker, cleanup, persistent):
    w, results = persistent(queue_extra=retry_conf(attempts=3, delay=1))
    [first] = wait_events(results, "start", 1)
    broker.publish(w.queue, "garbage", message_id="g-1")
    lines = wait_result(w, "g-1", 2)
    assert re.search(r"g-1 retry, bad answer, \d+ ms, attempt 1", lines[0])
    assert re.search(r"g-1 ack, ok, ", lines[1])
    runs = msgs_of(results, "g-1")
    assert runs[1]["pid"] != first["pid"]
    wait_for(lambda: not pid_alive(first["pid"]), timeout=10)
    assert w.log().count(
        "is not \"ok\", \"retry\", \"fail\" or \"tempfail\"") == 1


def test_timeout_stops_and_restarts_the_handler(broker, cleanup, persistent):
    w, results = persistent(queue_extra="    timeout = 2\n    kill_grace = 1\n" +
                            retry_conf(attempts=2, delay=1))
    [first] = wait_events(results, "start", 1)
    broker.publish(w.queue, "hang", message_id="t-1")
    lines = wait_result(w, "t-1", 2, timeout=30)
    assert re.search(r"t-1 retry, timeout 2s, (\d+) ms, attempt 1", lines[0])
    ms = int(re.search(r"timeout 2s, (\d+) ms", lines[0]).group(1))
    assert 2000 <= ms < 5000, ms
    assert re.search(r"t-1 ack, ok, ", lines[1])
    assert not pid_alive(first["pid"])
    assert msgs_of(results, "t-1")[1]["pid"] != first["pid"]


def test_handler_exiting_after_each_message_is_restarted(broker, persistent):
    w, results = persistent("--exit-after")
    broker.publish_many(w.queue, [(f"e{i}", None, f"e{i}", {}) for i in range(5)])
    answered = wait_events(results, "answered", 5, timeout=30)
    assert len({e["pid"] for e in answered}) == 5
    for i in range(5):
        assert re.search(r" ack, ok, ", wait_result(w, f"e{i}")[0])
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20)
    # said once, then at debug
    assert w.log().count("exited between messages") == 1
    assert "backing off" not in w.log()


def test_max_messages_restarts_every_n(broker, persistent):
    w, results = persistent(queue_extra="    max_messages = 3\n")
    broker.publish_many(w.queue, [(f"x{i}", None, f"x{i}", {}) for i in range(7)])
    wait_events(results, "answered", 7, timeout=30)
    pids = [msgs_of(results, f"x{i}")[0]["pid"] for i in range(7)]
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5] != pids[0]
    assert pids[6] not in (pids[0], pids[3])
    # the retired ones were told by EOF and exited by themselves
    eofs = {e["pid"] for e in wait_events(results, "eof", 2)}
    assert {pids[0], pids[3]} <= eofs
    assert "exited between messages" not in w.log()


def test_retry_and_fail_answers(broker, cleanup, persistent):
    w, results = persistent(queue_extra=retry_conf(attempts=2, delay=1))
    broker.publish(w.queue, "fail", message_id="f-1")
    broker.publish(w.queue, "retry", message_id="r-1")
    line = wait_result(w, "f-1")[0]
    assert re.search(r"f-1 failed, bad input, \d+ ms, attempt 1, parked$", line)
    lines = wait_result(w, "r-1", 2, timeout=30)
    assert re.search(r"r-1 retry, db busy, \d+ ms, attempt 1, again in 1 s$", lines[0])
    assert re.search(r"r-1 failed, db busy, \d+ ms, attempt 2, parked$", lines[1])
    failed = w.queue + ".failed"
    wait_for(lambda: broker.ready_count(failed) == 2, timeout=10)
    got = {}
    for _ in range(2):
        _, props, body = broker.get(failed)
        got[props.message_id] = props.headers
    assert got["f-1"]["x-warren-reason"] == "bad input"
    assert got["r-1"]["x-warren-reason"] == "db busy"
    assert "working on f-1" in got["f-1"]["x-warren-stderr"]
    # answers are no crashes: one process did all of it
    assert len(events(results, "start")) == 1


@pytest.mark.parametrize("how", ["reload", "stop"])
def test_reload_and_stop_let_the_message_finish(broker, persistent, how):
    w, results = persistent(shutdown_timeout=20)
    [first] = wait_events(results, "start", 1)
    broker.publish(w.queue, "slow 2", message_id="busy")
    wait_events(results, "msg", 1)
    if how == "reload":
        w.conf.write_text(w.conf.read_text().replace(
            'mode = "persistent"', 'mode = "persistent"\n    max_messages = 100'))
        w.signal(signal.SIGHUP)
    else:
        w.signal(signal.SIGTERM)
    assert re.search(r"busy ack, ok, ", wait_result(w, "busy", timeout=20)[0])
    # then its stdin closes: it sees EOF and exits by itself
    wait_events(results, "eof", 1, where=lambda e: e["pid"] == first["pid"])
    wait_for(lambda: not pid_alive(first["pid"]), timeout=10)
    if how == "reload":
        # the new worker's handler takes the next message
        wait_events(results, "start", 2)
        broker.publish(w.queue, "after", message_id="after")
        [m] = wait_events(results, "msg", 1, where=lambda e: e["word"] == "after")
        assert m["pid"] != first["pid"]
        w.stop()
    else:
        assert w.proc.wait(20) == 0
    assert broker.queue_counts(w.queue) == (0, 0)


def test_sigkill_of_the_worker_leaves_no_handler(broker, persistent):
    w, results = persistent()
    [first] = wait_events(results, "start", 1)
    [worker] = w.children()
    broker.publish(w.queue, "block", message_id="k-1")
    wait_events(results, "msg", 1)
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not pid_alive(first["pid"]), timeout=10,
             message="the old handler gone")
    # redelivered to the respawned worker, handled by its new handler
    [m] = wait_events(results, "answered", 1, timeout=30)
    assert m["pid"] != first["pid"]
    runs = msgs_of(results, "k-1")
    assert [r["meta"]["WARREN_REDELIVERED"] for r in runs] == ["0", "1"]
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20)
    assert worker not in w.children()
