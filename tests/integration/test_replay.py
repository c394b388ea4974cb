"""warrenctl failed and replay (SPEC: warrenctl), against the private broker,
and warrenctl's exit statuses.

Most tests park messages by publishing them to QUEUE.failed with the
parking headers, as warrend's settle.c writes them; one parks them for real
through warrend and a failing handler, and watches the replayed messages
run again from attempt 1. What a queue holds is read back over AMQP, in
order, after warrenctl is done: "left unchanged" means the same messages,
bodies, properties and headers, in the same order.

The socket commands (status, pause, resume, metrics) are tested against
warrend's master elsewhere; here only warrenctl's side: its words and exit
statuses when nothing listens, and how it renders answers from a stand-in
server.
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter

import pika
import pika.exceptions
import pytest

from conftest import (BUILDDIR, conf_string, queue_name_for, read_lines,
                      retry_conf, wait_for, write_script)

WARRENCTL = BUILDDIR / "src" / "warrenctl"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PARKING = ("x-warren-attempts", "x-warren-reason", "x-warren-stderr",
           "x-warren-failed-at", "x-warren-attempt")


# ---------------------------------------------------------------------------
# helpers


def write_conf(path, url, queue, extra=""):
    path.write_text("\n".join([
        "broker {", f"    url = {conf_string(url)}", "}", extra,
        f"queue {conf_string(queue)} {{",
        '    command = {"/bin/true"}', "}", ""]))
    return path


class Ctl:
    """A queue named after the test, its configuration, and warrenctl."""

    def __init__(self, broker, tmp_path, queue):
        self.broker = broker
        self.queue = queue
        self.failed = queue + ".failed"
        self.conf = write_conf(tmp_path / "warrend.conf", broker.url, queue)

    def run(self, *args, conf=True, timeout=120):
        argv = [str(WARRENCTL)] + (["-c", str(self.conf)] if conf else [])
        r = subprocess.run(argv + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
        return r

    def ok(self, *args):
        r = self.run(*args)
        assert r.returncode == 0, f"warrenctl {args}: {r.returncode}\n{r.stderr}{r.stdout}"
        return r.stdout

    def declare(self, *queues):
        conn = self.broker.connect()
        try:
            ch = conn.channel()
            for q in queues:
                ch.queue_declare(q, durable=True)
        finally:
            conn.close()

    def park(self, n, reasons=("exit 3",), start=0, body=None, extra_headers=None):
        """Publish n parked messages m<start>..; returns their ids."""
        self.declare(self.failed)
        now = int(time.time())
        msgs, ids = [], []
        for i in range(start, start + n):
            mid = f"m{i:05d}"
            headers = {
                "x-warren-attempts": 5,
                "x-warren-reason": reasons[i % len(reasons)],
                "x-warren-stderr": f"starting {mid}\nTraceback: {mid} failed\n",
                "x-warren-failed-at": now - i,
                "tenant": "acme",
                "x-death": [{"count": 4, "reason": "expired",
                             "queue": self.queue + ".retry.10s"}],
            }
            headers.update(extra_headers or {})
            msgs.append((body if body is not None else f"body of {mid}", headers,
                         mid, {"content_type": "application/json",
                               "correlation_id": "c-" + mid,
                               "timestamp": 1700000000 + i}))
            ids.append(mid)
        self.broker.publish_many(self.failed, msgs)
        return ids

    def drain(self, queue):
        """Every message of queue, in order, removed: [(props, body)]."""
        out = []
        conn = self.broker.connect()
        try:
            ch = conn.channel()
            while True:
                method, props, body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    return out
                out.append((props, body))
        finally:
            conn.close()

    def snapshot(self, queue):
        """What queue holds, in order, left in place (get, then requeue
        everything by closing the channel)."""
        out = []
        conn = self.broker.connect()
        try:
            ch = conn.channel()
            while True:
                method, props, body = ch.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                out.append((props.message_id, props.headers, props.content_type,
                            props.correlation_id, props.timestamp, body))
        finally:
            conn.close()
        # the broker has them back once the connection is gone
        wait_for(lambda: self.broker.ready_count(queue) == len(out), 10,
                 message=f"{queue} to hold its {len(out)} messages again")
        return out


@pytest.fixture
def ctl(broker, tmp_path, request):
    if not WARRENCTL.exists():
        pytest.fail(f"{WARRENCTL} is not built")
    c = Ctl(broker, tmp_path, queue_name_for(request.node.name))
    yield c
    broker.delete_queue(c.queue, c.failed, c.queue + ".retry.1s")


def ids_of(queue_items):
    return [p.message_id for p, _ in queue_items]


# ---------------------------------------------------------------------------
# failed


def test_failed_lists_and_leaves_the_queue_as_it_was(ctl):
    ids = ctl.park(6, reasons=("exit 3", "signal 9", "timeout 30s"))
    before = ctl.snapshot(ctl.failed)
    out = ctl.ok("failed", ctl.queue)
    lines = out.splitlines()
    assert lines[0].split() == ["MESSAGE", "ATTEMPTS", "FAILED-AT", "REASON",
                                "REPLAYED-FROM", "STDERR"]
    rows = lines[1:7]
    assert [r.split()[0] for r in rows] == ids
    for i, r in enumerate(rows):
        f = r.split()
        assert f[1] == "5"
        assert ISO.match(f[2]), r
        assert time.strftime("%Y-%m-%dT%H:%M:%SZ",
                             time.gmtime(before[i][1]["x-warren-failed-at"])) == f[2]
        assert ("exit 3", "signal 9", "timeout 30s")[i % 3] in r
        # the stderr tail's last line, not its first
        assert r.endswith(f"Traceback: {ids[i]} failed"), r
        assert "starting" not in r
    assert lines[7] == f"6 parked messages in {ctl.failed}"
    # twice over, and nothing moved: same messages, same order
    ctl.ok("failed", ctl.queue)
    assert ctl.snapshot(ctl.failed) == before


def test_failed_json_and_limit(ctl):
    ids = ctl.park(5, extra_headers={"x-warren-replayed-from": "exit 1"})
    before = ctl.snapshot(ctl.failed)
    items = json.loads(ctl.ok("failed", ctl.queue, "--json"))
    assert [m["message_id"] for m in items] == ids
    for m, b in zip(items, before):
        assert m["reason"] == "exit 3"
        assert m["attempts"] == 5
        assert m["failed_at"] == b[1]["x-warren-failed-at"]
        assert ISO.match(m["failed_at_utc"])
        # whole, in JSON
        assert m["stderr"] == f"starting {m['message_id']}\nTraceback: {m['message_id']} failed\n"
        assert m["replayed_from"] == "exit 1"
        assert m["body_bytes"] == len(f"body of {m['message_id']}")
    two = json.loads(ctl.ok("failed", ctl.queue, "--json", "--limit", "2"))
    assert [m["message_id"] for m in two] == ids[:2]
    out = ctl.ok("failed", ctl.queue, "--limit=3")
    assert [l.split()[0] for l in out.splitlines()[1:4]] == ids[:3]
    assert "3 parked messages" in out and "more follow" in out
    assert ctl.snapshot(ctl.failed) == before


def test_failed_of_an_empty_queue_and_control_characters(ctl):
    ctl.declare(ctl.failed)
    r = ctl.run("failed", ctl.queue)
    assert r.returncode == 0 and r.stdout == f"no parked messages in {ctl.failed}\n"
    assert json.loads(ctl.ok("failed", ctl.queue, "--json")) == []
    # what a handler wrote never reaches the terminal raw
    ctl.park(1, extra_headers={"x-warren-stderr": "bad \x1b]0;owned\x07 news\n"})
    out = ctl.ok("failed", ctl.queue)
    assert "\x1b" not in out and "\x07" not in out
    assert "bad ?]0;owned? news" in out
    item = json.loads(ctl.ok("failed", ctl.queue, "--json"))[0]
    assert item["stderr"] == "bad \x1b]0;owned\x07 news\n"


# ---------------------------------------------------------------------------
# replay


def test_replay_moves_them_back_with_fresh_headers(ctl):
    ctl.declare(ctl.queue)
    ids = ctl.park(4)
    out = ctl.ok("replay", ctl.queue)
    assert out == f"replayed 4 messages from {ctl.failed} to {ctl.queue}\n"
    assert ctl.broker.ready_count(ctl.failed) == 0
    got = ctl.drain(ctl.queue)
    assert ids_of(got) == ids
    for props, body in got:
        mid = props.message_id
        assert body == f"body of {mid}".encode()
        assert props.delivery_mode == 2
        assert props.content_type == "application/json"
        assert props.correlation_id == "c-" + mid
        assert props.timestamp == 1700000000 + int(mid[1:])
        h = props.headers
        assert h["tenant"] == "acme"
        assert h["x-warren-replayed-from"] == "exit 3"
        for k in PARKING + ("x-death",):
            assert k not in h, (k, h)


def test_replay_reason_keeps_the_others_in_order(ctl):
    ctl.declare(ctl.queue)
    ids = ctl.park(9, reasons=("exit 3", "timeout 30s", "signal 9"))
    before = ctl.snapshot(ctl.failed)
    out = ctl.ok("replay", ctl.queue, "--reason", "timeout")
    assert out == (f"replayed 3 messages from {ctl.failed} to {ctl.queue}; "
                   f'kept 6 whose reason does not contain "timeout"\n')
    assert ids_of(ctl.drain(ctl.queue)) == ids[1::3]
    kept = ctl.snapshot(ctl.failed)
    assert kept == [b for i, b in enumerate(before) if i % 3 != 1]
    # and a limit counts replayed messages, not the ones kept
    out = ctl.ok("replay", ctl.queue, "--reason", "signal", "--limit", "2")
    assert out.startswith(f"replayed 2 messages from {ctl.failed}")
    assert ids_of(ctl.drain(ctl.queue)) == [ids[2], ids[5]]
    assert [m[0] for m in ctl.snapshot(ctl.failed)] == [ids[0], ids[3], ids[6], ids[8]]


def test_replay_limit(ctl):
    ctl.declare(ctl.queue)
    ids = ctl.park(5)
    assert ctl.ok("replay", ctl.queue, "--limit", "2") == \
        f"replayed 2 messages from {ctl.failed} to {ctl.queue}\n"
    assert ids_of(ctl.drain(ctl.queue)) == ids[:2]
    assert [m[0] for m in ctl.snapshot(ctl.failed)] == ids[2:]


def test_replay_progress_on_a_terminal(ctl):
    """stderr a terminal: a progress line; not one: none."""
    import pty
    ctl.declare(ctl.queue)
    ctl.park(20)
    master, slave = pty.openpty()
    try:
        r = subprocess.run([str(WARRENCTL), "-c", str(ctl.conf), "replay", ctl.queue],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=slave, timeout=60)
        os.close(slave)
        slave = None
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert r.returncode == 0
    assert b"replayed 20/20" in seen, seen
    r = ctl.run("replay", ctl.queue)
    assert r.returncode == 0 and r.stderr == ""


def test_replay_killed_halfway_loses_none(ctl):
    """1,000 parked messages; warrenctl SIGKILLed with about half moved,
    then run again: every id in QUEUE, at most one twice."""
    n = 1000
    ctl.declare(ctl.queue)
    ids = ctl.park(n, body="x" * 2048)
    proc = subprocess.Popen([str(WARRENCTL), "-c", str(ctl.conf), "replay", ctl.queue],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    conn = ctl.broker.connect()
    try:
        ch = conn.channel()

        def half_moved():
            assert proc.poll() is None, "replay finished before it could be killed"
            return ch.queue_declare(ctl.queue, passive=True).method.message_count >= n // 2

        wait_for(half_moved, 60, interval=0.005,
                 message=f"{n // 2} messages replayed to {ctl.queue}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        conn.close()
    moved = ctl.broker.ready_count(ctl.queue)
    assert moved < n, "the kill came after the end"
    # the broker takes the unacked one back when the connection drops
    wait_for(lambda: ctl.broker.ready_count(ctl.queue) + ctl.broker.ready_count(ctl.failed) >= n,
             20, message="every message ready in one queue or the other")
    out = ctl.ok("replay", ctl.queue)
    assert re.match(rf"replayed \d+ messages from {re.escape(ctl.failed)}", out)
    assert ctl.broker.ready_count(ctl.failed) == 0
    counts = Counter(ids_of(ctl.drain(ctl.queue)))
    lost = set(ids) - set(counts)
    twice = [i for i, c in counts.items() if c > 1]
    assert not lost, f"lost {len(lost)}: {sorted(lost)[:10]}"
    assert len(twice) <= 1 and all(counts[i] == 2 for i in twice), twice
    assert set(counts) == set(ids)


def test_replay_through_warrend_runs_again_from_attempt_1(broker, warrend, ctl, tmp_path):
    """Parked for real: a handler fails twice (attempt 1, its retry 2) while
    a flag file exists; once fixed, replay runs it again as attempt 1."""
    runs, flag = tmp_path / "runs", tmp_path / "broken"
    flag.write_text("")
    h = write_script(tmp_path / "h.py", r"""
#!/usr/bin/python3
import json, os, sys
body = sys.stdin.buffer.read()
e = os.environ
line = json.dumps({"mid": e.get("WARREN_MESSAGE_ID"), "attempt": e.get("WARREN_ATTEMPT"),
                   "from": e.get("WARREN_HEADER_X_WARREN_REPLAYED_FROM"),
                   "death": e.get("WARREN_HEADER_X_DEATH"),
                   "warren": sorted(k for k in e if k.startswith("WARREN_HEADER_X_WARREN_"))})
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (line + "\n").encode())
os.close(fd)
if os.path.exists(sys.argv[2]):
    sys.stderr.write("cannot reach the database\n")
    sys.exit(3)
""")
    w = warrend([h, str(runs), str(flag)], queue=ctl.queue,
                queue_extra=retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    broker.publish_many(ctl.queue, [("job", None, f"real{i}", {}) for i in range(3)])
    wait_for(lambda: broker.ready_count(ctl.failed) == 3, 60, interval=0.2,
             message="3 messages parked")
    items = json.loads(ctl.ok("failed", ctl.queue, "--json"))
    assert sorted(m["message_id"] for m in items) == ["real0", "real1", "real2"]
    for m in items:
        assert m["reason"] == "exit 3" and m["attempts"] == 2
        assert m["stderr"] == "cannot reach the database\n"
        assert abs(m["failed_at"] - time.time()) < 120
        assert m["replayed_from"] is None
    table = ctl.ok("failed", ctl.queue)
    assert table.count("cannot reach the database") == 3
    flag.unlink()
    out = ctl.ok("replay", ctl.queue)
    assert out == f"replayed 3 messages from {ctl.failed} to {ctl.queue}\n"

    def replayed_runs():
        rs = [json.loads(l) for l in read_lines(runs)]
        rs = [r for r in rs if r["from"] is not None]
        return rs if len(rs) == 3 else None

    rs = wait_for(replayed_runs, 30, interval=0.1, message="3 replayed runs")
    for r in rs:
        assert r["attempt"] == "1", r
        assert r["from"] == "exit 3"
        assert r["death"] is None, "x-death came along"
        assert r["warren"] == ["WARREN_HEADER_X_WARREN_REPLAYED_FROM"], r
    # handled: gone for good, nothing parked again
    wait_for(lambda: broker.ready_count(ctl.queue) == 0, 10)
    w.stop()
    assert broker.ready_count(ctl.queue) == 0
    assert broker.ready_count(ctl.failed) == 0
    assert len(read_lines(runs)) == 9  # 3 x (attempt 1, retry) + 3 replays


# ---------------------------------------------------------------------------
# exit statuses and words


@pytest.mark.parametrize("args", [
    [], ["bogus"], ["pause"], ["resume"], ["failed"], ["replay"],
    ["status", "extra"], ["failed", "q", "--limit", "0"],
    ["failed", "q", "--limit", "x"], ["replay", "q", "--limit"],
    ["failed", "q", "--reason", "x"], ["status", "--limit", "3"],
    ["-x", "status"], ["pause", "a\nb"], ["-s", "/tmp/x.sock", "failed", "q"],
])
def test_usage_errors_exit_64(args):
    r = subprocess.run([str(WARRENCTL), *args], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 64, (args, r.returncode, r.stderr)
    assert "usage: warrenctl" in r.stderr
    assert r.stdout == ""


def test_help_exits_0():
    r = subprocess.run([str(WARRENCTL), "-h"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("usage: warrenctl")


def test_missing_parked_queue_exits_1(ctl):
    for cmd in (["failed", ctl.queue], ["replay", ctl.queue]):
        r = ctl.run(*cmd)
        assert r.returncode == 1, (cmd, r.stderr)
        assert f"there is no queue {ctl.failed}" in r.stderr
    # and replay declares neither queue
    assert ctl.broker.queue_counts(ctl.failed) is None


def test_replay_to_a_missing_queue_exits_1_and_keeps_them(ctl):
    ids = ctl.park(2)
    r = ctl.run("replay", ctl.queue)
    assert r.returncode == 1
    assert f"there is no queue {ctl.queue} to replay to" in r.stderr
    assert [m[0] for m in ctl.snapshot(ctl.failed)] == ids
    assert ctl.broker.queue_counts(ctl.queue) is None


def test_broker_errors_never_show_the_password(ctl, broker, tmp_path):
    url = broker.url.replace("guest:guest", "guest:Sup3r-s3cret-pw")
    conf = write_conf(tmp_path / "bad.conf", url, ctl.queue)
    for cmd in ("failed", "replay"):
        r = subprocess.run([str(WARRENCTL), "-c", str(conf), cmd, ctl.queue],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert "Sup3r-s3cret-pw" not in r.stderr + r.stdout
        assert "warrenctl:" in r.stderr and "guest@127.0.0.1" in r.stderr, r.stderr


def test_bad_configuration_exits_1(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("broker {\n")
    r = subprocess.run([str(WARRENCTL), "-c", str(bad), "failed", "q"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and str(bad) in r.stderr


def test_no_warrend_exits_69(tmp_path, broker):
    path = tmp_path / "none.sock"
    r = subprocess.run([str(WARRENCTL), "-s", str(path), "status"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 69
    assert r.stderr == f"warrenctl: warrend is not running (no socket at {path})\n"
    # a stale socket file of a dead warrend: ECONNREFUSED
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    r = subprocess.run([str(WARRENCTL), "-s", str(stale), "pause", "q"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 69 and "warrend is not running" in r.stderr
    # -c: the configuration's control_socket
    conf = write_conf(tmp_path / "c.conf", broker.url, "q",
                      extra=f"control_socket = {conf_string(path)}")
    r = subprocess.run([str(WARRENCTL), "-c", str(conf), "metrics"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 69 and str(path) in r.stderr


# ---------------------------------------------------------------------------
# the socket client, against a stand-in for warrend's master


class FakeMaster:
    """Answers each connection's request line with answer(line) and
    closes; records the requests."""

    def __init__(self, path, answer):
        self.path, self.answer, self.requests = str(path), answer, []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                line = b""
                while not line.endswith(b"\n"):
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    line += chunk
                self.requests.append(line)
                reply = self.answer(line.decode().rstrip("\n"))
                if reply is not None:
                    c.sendall(reply.encode())

    def close(self):
        self.sock.close()


STATUS = {
    "ok": True, "pid": 812, "config": "/etc/warren/warrend.conf", "ready": True,
    "stopping": False,
    "queues": [{"name": "images", "workers": 2, "paused": False, "starting": 0,
                "idle": 1, "busy": 1, "paused_workers": 0, "down": 0, "acked": 2020,
                "retried": 5, "failed": 1, "requeued": 0, "restarts": 0,
                "last_error": None},
               {"name": "mail", "workers": 1, "paused": True, "starting": 0,
                "idle": 0, "busy": 0, "paused_workers": 0, "down": 1, "acked": 0,
                "retried": 0, "failed": 0, "requeued": 0, "restarts": 3,
                "last_error": "cannot connect"}],
    "workers": [{"queue": "images", "number": 1, "pid": 815, "state": "busy",
                 "retiring": False, "message_id": "img-4417", "busy_ms": 12345,
                 "acked": 1022, "retried": 3, "failed": 1, "requeued": 0,
                 "node": "127.0.0.1:5672"},
                {"queue": "images", "number": 2, "pid": 816, "state": "idle",
                 "retiring": False, "message_id": None, "busy_ms": None,
                 "acked": 998, "retried": 2, "failed": 0, "requeued": 0,
                 "node": "mq2:5672"},
                {"queue": "mail", "number": 1, "pid": 0, "state": "down",
                 "retiring": False, "message_id": None, "busy_ms": None,
                 "acked": 0, "retried": 0, "failed": 0, "requeued": 0,
                 "node": None}],
}


def answers(line):
    if line == "status":
        return json.dumps(STATUS) + "\n"
    if line == "metrics":
        return json.dumps({"ok": True, "text": "# TYPE warren_x counter\nwarren_x 1\n"}) + "\n"
    cmd, _, q = line.partition(" ")
    if cmd in ("pause", "resume") and q == "images":
        return json.dumps({"ok": True, "queue": q, "paused": cmd == "pause"}) + "\n"
    if cmd in ("pause", "resume"):
        return json.dumps({"ok": False, "error": f"no such queue: {q}"}) + "\n"
    return json.dumps({"ok": False, "error": f"unknown request: {line}"}) + "\n"


@pytest.fixture
def fake(tmp_path):
    m = FakeMaster(tmp_path / "w.sock", answers)
    yield m
    m.close()


def ctl_sock(fake, *args, timeout=30):
    return subprocess.run([str(WARRENCTL), "-s", fake.path, *args],
                          capture_output=True, text=True, timeout=timeout)


def test_status_table(fake):
    r = ctl_sock(fake, "status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "warrend 812 (/etc/warren/warrend.conf): ready"
    assert lines[1].split() == ["QUEUE", "WORKER", "PID", "STATE", "MESSAGE", "BUSY",
                                "HANDLED", "RETRIED", "FAILED", "NODE"]
    assert lines[2].split() == ["images", "1", "815", "busy", "img-4417", "12.3s",
                                "1022", "3", "1", "127.0.0.1:5672"]
    assert lines[3].split() == ["images", "2", "816", "idle", "-", "-", "998", "2", "0",
                                "mq2:5672"]
    assert lines[4].split() == ["mail", "1", "-", "down", "-", "-", "0", "0", "0", "-"]
    # columns line up
    col = lines[1].index("HANDLED")
    assert all(l[col - 2:col] == "  " for l in lines[2:5])
    assert lines[6].startswith("queue images: running, 2 workers")
    assert "handled 2020, retried 5, failed 1" in lines[6]
    assert lines[7].startswith("queue mail: paused, 1 worker (")
    assert lines[7].endswith("last error: cannot connect")
    assert fake.requests == [b"status\n"]


def test_status_json_as_received(fake):
    r = ctl_sock(fake, "status", "--json")
    assert r.returncode == 0
    assert r.stdout == json.dumps(STATUS) + "\n"


def test_metrics_pause_resume_and_errors(fake):
    r = ctl_sock(fake, "metrics")
    assert r.returncode == 0 and r.stdout == "# TYPE warren_x counter\nwarren_x 1\n"
    r = ctl_sock(fake, "pause", "images")
    assert r.returncode == 0 and r.stdout == "queue images paused\n"
    r = ctl_sock(fake, "resume", "images")
    assert r.returncode == 0 and r.stdout == "queue images resumed\n"
    r = ctl_sock(fake, "pause", "nope")
    assert r.returncode == 1 and r.stderr == "warrenctl: no such queue: nope\n"
    assert r.stdout == ""
    assert fake.requests[-1] == b"pause nope\n"


def test_garbage_and_silence_are_failures(tmp_path):
    m = FakeMaster(tmp_path / "g.sock", lambda line: "HTTP/1.0 200 OK\r\n\r\n")
    try:
        r = ctl_sock(m, "status")
        assert r.returncode == 1 and "not warrend's JSON" in r.stderr
    finally:
        m.close()
    m = FakeMaster(tmp_path / "s.sock", lambda line: time.sleep(15))
    try:
        t = time.monotonic()
        r = ctl_sock(m, "status")
        took = time.monotonic() - t
        assert r.returncode == 1 and "did not answer within 10 s" in r.stderr
        assert 9 <= took < 14, took
    finally:
        m.close()


def test_socket_of_another_user_is_refused_with_words(tmp_path):
    """A socket the caller may not write to: EACCES, exit 1, said as such."""
    import shutil
    import tempfile
    if os.geteuid() != 0:
        pytest.skip("needs root to run warrenctl as another user")
    d = tempfile.mkdtemp(prefix="warrenctl-acl-")
    try:
        os.chmod(d, 0o755)
        m = FakeMaster(os.path.join(d, "w.sock"), answers)
        try:
            os.chmod(m.path, 0o600)
            r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                                "--clear-groups", str(WARRENCTL), "-s", m.path, "status"],
                               capture_output=True, text=True, timeout=10)
            assert r.returncode == 1, r.stderr
            assert r.stderr == (f"warrenctl: {m.path}: permission denied (only root "
                                "and warrend's user may use it)\n")
            assert m.requests == []
        finally:
            m.close()
    finally:
        shutil.rmtree(d)
