"""The persistent handlers of examples/ speak warren-handler(7).

First each example is driven DIRECTLY: the test spawns it, writes frames
to its stdin as warrend would and reads its answer lines, in one process
for many messages: text, every byte value, a body that looks like frames,
metadata values with escaped newlines and backslashes, an empty body.
Then (only when src/warrend knows `mode = "persistent"`) each runs under
warrend against the session's broker, and the messages' fates are read
back from the broker.
"""

import hashlib
import json
import os
import selectors
import subprocess
import time
import zlib
from pathlib import Path

import pika
import pytest

from conftest import WARREND, children_of, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PYTHON = "/usr/bin/python3"
ANSWER_TIMEOUT = 10  # seconds for one answer; they take milliseconds
EXAMPLE_NAMES = ["sh", "py", "c"]


# ---------------------------------------------------------------------------
# the protocol, from the test's side


def escape(value):
    return value.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")


def frame(meta, body):
    """meta: [(name, value bytes)], as warrend writes them."""
    out = [b"warren %d %d\n" % (len(meta), len(body))]
    out += [name.encode() + b"=" + escape(value) + b"\n" for name, value in meta]
    return b"".join(out) + body


def std_meta(msg_id, attempt=1, **headers):
    meta = [("WARREN_QUEUE", b"examples"), ("WARREN_WORKER", b"1"),
            ("WARREN_ATTEMPT", str(attempt).encode()),
            ("WARREN_REDELIVERED", b"0")]
    if msg_id is not None:
        meta.append(("WARREN_MESSAGE_ID", msg_id))
    meta += [("WARREN_HEADER_" + k.upper(), v) for k, v in headers.items()]
    return meta


class Speaker:
    """One example process; send() a frame, answer() its reply line."""

    def __init__(self, argv, stderr_path, env=None):
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err,
                                     env=env)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b""

    def ask(self, meta, body):
        self.proc.stdin.write(frame(meta, body))
        self.proc.stdin.flush()
        return self.answer()

    def answer(self, timeout=ANSWER_TIMEOUT):
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise AssertionError(
                    f"no answer within {timeout}s; stderr: {self.stderr()}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(
                    f"stdout closed (exit {self.proc.wait(5)}) before an "
                    f"answer; stderr: {self.stderr()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def close(self, timeout=ANSWER_TIMEOUT):
        """EOF on stdin; the exit status, and nothing more on stdout."""
        self.proc.stdin.close()
        status = self.proc.wait(timeout)
        rest = self._buf + self.proc.stdout.read()
        self._err.close()
        return status, rest

    def stderr(self):
        return Path(self.stderr_path).read_text(errors="replace")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


@pytest.fixture(scope="module")
def c_handler(tmp_path_factory):
    """examples/handler.c, built as the examples promise: no warnings."""
    out = tmp_path_factory.mktemp("cbuild") / "handler"
    r = subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror",
                        "-o", str(out), str(EXAMPLES / "handler.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(out)


def argv_of(name, c_handler, out):
    """The example's command line, writing its results into out."""
    if name == "sh":
        return ["/bin/sh", str(EXAMPLES / "handler.sh"), str(out)]
    if name == "py":
        return [PYTHON, str(EXAMPLES / "handler.py"), str(out / "records.jsonl")]
    return [c_handler]


# ---------------------------------------------------------------------------
# the messages every example must get through, in one process

BINARY = bytes(range(256))
FRAMEY = (b"first line\nwarren 1 2\nWARREN_MESSAGE_ID=forged\nxy\n"
          b"warren 0 0\n\\n\\\\ end")
NASTY_ID = b"id with\nnewline and \\ backslash \\n"
NOTE = b"a\nb\\c\\n\n\\"  # escapes in every position, trailing ones too

CASES = [
    ("m1", b"hello, world"),
    ("m2", BINARY),
    ("m3", FRAMEY),
    (NASTY_ID, b"nasty metadata"),
    ("m5", b""),
    ("m6", b"after the empty one\n"),
    ("m7", BINARY[::-1] * 3),
]


def case_meta(msg_id):
    mid = msg_id if isinstance(msg_id, bytes) else msg_id.encode()
    return std_meta(mid, note=NOTE, plain=b"x=y=z")


def expected(name, msg_id, body, pid, seq):
    """The exact answer line the example owes for a message."""
    if not body:
        return "fail empty body"
    if name == "sh":
        plain = isinstance(msg_id, str)
        return f"ok spooled {msg_id if plain else f'{pid}.{seq}'}"
    if name == "py":
        return "ok sha256 " + hashlib.sha256(body).hexdigest()
    return "ok crc32 %08x, %d bytes" % (zlib.crc32(body), len(body))


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_handles_a_stream_of_messages(name, c_handler, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    sp = Speaker(argv_of(name, c_handler, out), tmp_path / "stderr")
    try:
        answers = [sp.ask(case_meta(i), b) for i, b in CASES]
        # all of it in ONE process, which exits 0 at EOF, silent on stdout
        status, rest = sp.close()
    finally:
        sp.kill()
    want = [expected(name, i, b, sp.proc.pid, seq)
            for seq, (i, b) in enumerate(CASES, 1)]
    assert answers == want, sp.stderr()
    assert status == 0, sp.stderr()
    assert rest == b""
    check_results(name, out, sp)


def check_results(name, out, sp):
    """What each example left behind matches what it was sent."""
    full = [(i, b) for i, b in CASES if b]
    if name == "sh":
        for seq, (i, b) in enumerate(CASES, 1):
            stem = i if isinstance(i, str) else f"{sp.proc.pid}.{seq}"
            if not b:
                assert not (out / f"{stem}.body").exists()
                continue
            assert (out / f"{stem}.body").read_bytes() == b, stem
            # metadata as it came: still escaped, one line per entry
            assert (out / f"{stem}.meta").read_bytes() == b"".join(
                n.encode() + b"=" + escape(v) + b"\n" for n, v in case_meta(i))
        left = sorted(p.name for p in out.iterdir())
        assert len(left) == 2 * len(full), left  # no temporary files left
    elif name == "py":
        recs = [json.loads(line) for line in
                (out / "records.jsonl").read_text().splitlines()]
        assert len(recs) == len(full)
        for rec, (i, b) in zip(recs, full):
            mid = i if isinstance(i, str) else i.decode()
            assert rec["meta"] == {
                "WARREN_QUEUE": "examples", "WARREN_WORKER": "1",
                "WARREN_ATTEMPT": "1", "WARREN_REDELIVERED": "0",
                "WARREN_MESSAGE_ID": mid,
                "WARREN_HEADER_NOTE": NOTE.decode(),
                "WARREN_HEADER_PLAIN": "x=y=z"}
            assert rec["len"] == len(b)
            assert rec["sha256"] == hashlib.sha256(b).hexdigest()
    else:
        # one stderr line per message, the id unescaped then shown safely
        lines = sp.stderr().splitlines()
        assert len(lines) == len(CASES), lines
        assert lines[3] == ("handler.c: id\\x20with\\x0anewline\\x20and"
                            "\\x20\\x5c\\x20backslash\\x20\\x5cn: 14 bytes, "
                            "crc32 %08x, attempt 1" % zlib.crc32(b"nasty metadata"))
        assert lines[0].startswith("handler.c: m1: 12 bytes, crc32 ")


def test_c_example_checks_the_crc32_header(c_handler, tmp_path):
    sp = Speaker([c_handler], tmp_path / "stderr")
    body = BINARY * 4
    crc = b"%08x" % zlib.crc32(body)
    try:
        good = sp.ask(std_meta(b"g", crc32=crc), body)
        upper = sp.ask(std_meta(b"u", crc32=crc.upper()), body)
        bad = sp.ask(std_meta(b"b", crc32=b"deadbeef"), body)
        evil = sp.ask(std_meta(b"e", crc32=b"12\n34567"), body)
        status, _ = sp.close()
    finally:
        sp.kill()
    assert good == upper == f"ok crc32 {crc.decode()}, 1024 bytes"
    assert bad == f"fail crc32 mismatch: body {crc.decode()}, header deadbeef"
    assert evil == f"fail crc32 mismatch: body {crc.decode()}, header 12?34567"
    assert status == 0


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_rejects_what_is_not_the_protocol(name, c_handler, tmp_path):
    """Garbage instead of a frame: no answer, exit non-zero (warrend then
    restarts the handler)."""
    out = tmp_path / "out"
    out.mkdir()
    for garbage in (b"hello\n", b"warren 1\n", b"warren 1 -3\n",
                    b"warren 0 10\nshort"):
        sp = Speaker(argv_of(name, c_handler, out), tmp_path / "stderr")
        try:
            sp.proc.stdin.write(garbage)
            sp.proc.stdin.close()
            status = sp.proc.wait(ANSWER_TIMEOUT)
            said = sp.proc.stdout.read()
        finally:
            sp.kill()
        assert status != 0 and said == b"", (garbage, status, said)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_exits_0_at_once_on_eof(name, c_handler, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    sp = Speaker(argv_of(name, c_handler, out), tmp_path / "stderr")
    try:
        t0 = time.monotonic()
        status, rest = sp.close()
    finally:
        sp.kill()
    assert (status, rest) == (0, b"")
    assert time.monotonic() - t0 < 5


def test_exec_example_for_contrast(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "WARREN_MESSAGE_ID": "e1",
           "WARREN_ATTEMPT": "2"}
    argv = ["/bin/sh", str(EXAMPLES / "exec-handler.sh"), str(tmp_path)]
    r = subprocess.run(argv, input=BINARY, env=env, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "e1.body").read_bytes() == BINARY
    r = subprocess.run(argv, input=b"", env=env, capture_output=True)
    assert r.returncode == 65
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1.body"]


# ---------------------------------------------------------------------------
# the helper module's own promises

HELPER_USER = r"""
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import warren_handler

def handle(msg):
    print("print() goes to the log, not to warrend")
    subprocess.run(["/bin/echo", "nor does a child's output"])
    body = msg.body.decode()
    if body == "retry":
        raise warren_handler.Retry("try\nlater")
    if body == "fail":
        raise warren_handler.Fail("never")
    if body == "crash":
        raise KeyError("boom")
    if body == "self":
        msg.fail("answered by itself")
        return "ignored"
    if body == "twice":
        msg.ok()
        msg.ok()
    return None

warren_handler.serve(handle)
"""


def test_helper_module_serve(tmp_path):
    script = tmp_path / "user.py"
    script.write_text(HELPER_USER)
    sp = Speaker([PYTHON, str(script), str(EXAMPLES)], tmp_path / "stderr")
    try:
        got = [sp.ask(std_meta(b"h%d" % n), b) for n, b in enumerate(
            [b"fine", b"retry", b"fail", b"crash", b"self", b"twice",
             b"fine"])]
        status, rest = sp.close()
    finally:
        sp.kill()
    assert got == ["ok", "retry try later", "fail never",
                   "retry KeyError: 'boom'", "fail answered by itself",
                   # the second ok() raises: a crash after the answer is
                   # logged, and the next message is served as usual
                   "ok", "ok"], sp.stderr()
    assert (status, rest) == (0, b"")
    err = sp.stderr()
    assert err.count("print() goes to the log") == 7
    assert err.count("nor does a child's output") == 7
    assert "KeyError: 'boom'" in err and "already answered" in err


def test_helper_module_unescapes_exactly():
    import sys
    sys.path.insert(0, str(EXAMPLES))
    try:
        import warren_handler
    finally:
        sys.path.remove(str(EXAMPLES))
    for raw in (b"", b"\\", b"\n", b"\\n", b"\\\\n\n", NOTE, NASTY_ID,
                bytes(range(1, 256))):
        assert warren_handler.unescape(escape(raw)) == raw
    for bad in (b"\\", b"a\\x", b"\\t"):
        with pytest.raises(warren_handler.ProtocolError):
            warren_handler.unescape(bad)


# ---------------------------------------------------------------------------
# under warrend, against the broker


def warrend_has_persistent_mode():
    if not WARREND.exists():
        return False
    conf = Path(os.environ.get("TMPDIR", "/tmp")) / f"warren-mode-{os.getpid()}.conf"
    conf.write_text('broker {\n    url = "amqp://guest:guest@127.0.0.1:5672/"\n}\n'
                    'queue "q" {\n    command = {"/bin/cat"}\n'
                    '    mode = "persistent"\n}\n')
    try:
        r = subprocess.run([str(WARREND), "-t", "-c", str(conf)],
                           capture_output=True, timeout=30)
    finally:
        conf.unlink()
    return r.returncode == 0


needs_persistent = pytest.mark.skipif(
    not warrend_has_persistent_mode(),
    reason="src/warrend rejects mode = \"persistent\"")


def parked(broker, queue):
    """All messages of queue.failed: [(message id, headers)]."""
    out = []
    while True:
        method, props, _ = broker.get(queue + ".failed")
        if method is None:
            return out
        out.append((props.message_id, props.headers or {}))


@needs_persistent
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_under_warrend(name, c_handler, broker, warrend, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    w = warrend(argv_of(name, c_handler, out), workers=1,
                queue_extra='    mode = "persistent"\n'
                            '    retry { attempts = 1 }')
    q = w.queue
    bodies = {"w1": b"hello", "w2": BINARY, "w3": FRAMEY, "w4": b"",
              "w5": BINARY * 64}
    note = NOTE.decode()
    broker.publish_many(q, [(b, {"note": note}, i, {}) for i, b in
                            bodies.items()])
    full = {i: b for i, b in bodies.items() if b}

    def settled():
        c = broker.queue_counts(q)
        return c == (0, 0) and broker.ready_count(q + ".failed") == 1
    wait_for(settled, 60, interval=0.2, message="every message settled")

    # the empty body was answered "fail": parked at once, the reason kept
    gone = parked(broker, q)
    assert [g[0] for g in gone] == ["w4"]
    assert "empty body" in str(gone[0][1].get("x-warren-reason")), gone
    if name == "sh":
        for i, b in full.items():
            assert (out / f"{i}.body").read_bytes() == b
            meta = (out / f"{i}.meta").read_bytes().splitlines()
            assert b"WARREN_HEADER_NOTE=" + escape(NOTE) in meta
            assert b"WARREN_QUEUE=" + q.encode() in meta
    elif name == "py":
        recs = {r["meta"]["WARREN_MESSAGE_ID"]: r for r in map(
            json.loads, (out / "records.jsonl").read_text().splitlines())}
        assert sorted(recs) == sorted(full)
        for i, b in full.items():
            assert recs[i]["sha256"] == hashlib.sha256(b).hexdigest()
            assert recs[i]["meta"]["WARREN_HEADER_NOTE"] == note
            assert recs[i]["meta"]["WARREN_QUEUE"] == q
            assert recs[i]["meta"]["WARREN_ATTEMPT"] == "1"
    else:
        log = w.log()
        for i, b in full.items():
            assert "handler.c: %s: %d bytes, crc32 %08x" % (
                i, len(b), zlib.crc32(b)) in log, log[-3000:]
    # one handler process served them all, and it is still there
    kids = w.children()
    assert len(kids) == 1
    assert len(children_of(kids[0])) == 1, children_of(kids[0])
    w.stop()


@needs_persistent
def test_c_example_under_warrend_parks_a_corrupt_body(c_handler, broker,
                                                      warrend):
    w = warrend([c_handler], queue_extra='    mode = "persistent"')
    q = w.queue
    body = BINARY * 16
    broker.publish_many(q, [
        (body, {"crc32": "%08x" % zlib.crc32(body)}, "good", {}),
        (body, {"crc32": "00000000"}, "bad", {}),
    ])
    wait_for(lambda: broker.queue_counts(q) == (0, 0)
             and broker.ready_count(q + ".failed") == 1, 60, interval=0.2,
             message="both settled")
    gone = parked(broker, q)
    assert [g[0] for g in gone] == ["bad"]
    assert "crc32 mismatch" in str(gone[0][1].get("x-warren-reason")), gone
    assert int(gone[0][1].get("x-warren-attempts")) == 1  # "fail": no retry
    w.stop()


@needs_persistent
def test_c_example_replies_with_its_crc(c_handler, broker, warrend):
    """queue.reply: handler.c answers a message that has a reply_to with
    its CRC-32 as the result ("result 8" before the "ok" line)."""
    w = warrend([c_handler],
                queue_extra='    mode = "persistent"\n    reply = true\n')
    w.wait_consuming(1)
    conn = broker.connect()
    try:
        ch = conn.channel()
        replies = []
        ch.basic_consume("amq.rabbitmq.reply-to",
                         lambda c, m, p, b: replies.append((p, b)),
                         auto_ack=True)
        ch.basic_publish("", w.queue, BINARY, pika.BasicProperties(
            reply_to="amq.rabbitmq.reply-to", correlation_id="crc-1",
            message_id="crc-1"))
        wait_for(lambda: conn.process_data_events(time_limit=0.1) or
                 replies, 30, message="the reply")
    finally:
        conn.close()
    (props, body), = replies
    assert props.correlation_id == "crc-1"
    assert props.headers["x-warren-outcome"] == "ok"
    assert body == b"%08x" % zlib.crc32(BINARY)
    assert "crc-1 ack, crc32 %08x" % zlib.crc32(BINARY) in w.log()
