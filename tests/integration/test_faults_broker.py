"""Broker faults and odd messages (issue 8): never loop, hang or lose a task.

Headers of every AMQP field type pika can send and the priority,
expiration and user-id properties reach the handler as SPEC's table says;
a header with an empty name is harmless; a frozen broker (SIGSTOP of its
beam.smp) is detected by heartbeats and survived; a forced close of every
connection, the consumed queue being deleted and a silent node in the URL
list are all recovered from without losing a message.

Tests that break a broker (the SIGSTOP) use a broker of this module's own;
the others use conftest's session broker, which they leave as they found it.
"""

import datetime
import decimal
import json
import os
import re
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pika
import pika.data
import pika.exceptions
import pytest

from conftest import (HANDLER_PATH, WARREND, Warrend, conf_list, conf_string,
                      finish_daemons, pid_alive, queue_name_for, read_lines,
                      start_process, wait_for, write_script)
from chaos_helpers import LogFollower, PrivateBroker

# ---------------------------------------------------------------------------
# a warrend with any broker keys, started with -d (the master's debug line
# "started worker Q/N, pid P" counts every spawn, respawns included)


class Daemon(Warrend):
    def __init__(self, conf, log_path, queues, broker, env, args=()):
        self.conf = conf
        self.log_path = log_path
        self.queues = queues
        self.queue = queues[0]
        self.broker = broker
        self._log, self.proc = start_process(
            [str(WARREND), "-c", str(conf), *args], log_path, env)
        self.pid = self.proc.pid
        self.extra_pids = set()
        self.started_at = time.monotonic()

    def spawns(self):
        """Workers the master has started so far (initial ones included)."""
        rx = re.compile(r"started worker " + re.escape(self.queue) + r"/\d+, pid")
        return sum(1 for l in self.log().splitlines() if rx.search(l))

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0


def daemon_conf(urls, queue, workers, command, broker_lines=(), queue_extra=(),
                shutdown_timeout=10):
    url = conf_list(urls) if len(urls) > 1 else conf_string(urls[0])
    lines = ["broker {", f"    url = {url}"]
    lines += [f"    {l}" for l in broker_lines]
    lines += ["}", f"shutdown_timeout = {shutdown_timeout}",
              f"queue {conf_string(queue)} {{",
              f"    workers = {workers}",
              f"    command = {conf_list(command)}"]
    lines += [f"    {l}" for l in queue_extra]
    lines += ["}", ""]
    return "\n".join(lines)


@pytest.fixture
def daemon(tmp_path, request):
    """Factory: daemon(broker, command, workers=1, broker_lines=[...],
    urls=[...], queue_extra=[...]) -> Daemon (with -d)."""
    started = []

    def start(broker, command, workers=1, broker_lines=(), urls=None,
              queue_extra=(), queue=None):
        n = len(started) + 1
        queue = queue or queue_name_for(request.node.name) + (f".{n}" if n > 1 else "")
        conf = tmp_path / f"warrend{n}.conf"
        conf.write_text(daemon_conf(urls or [broker.url], queue, workers, command,
                                    broker_lines, queue_extra))
        env = dict(os.environ, WARREN_TEST_LEAK="1")
        d = Daemon(conf, tmp_path / f"warrend{n}.log", [queue], broker, env,
                   args=("-d",))
        started.append(d)
        return d

    if not WARREND.exists():
        pytest.fail(f"{WARREND} is not built")
    yield start

    def queues_of(d):
        return [n for q in d.queues for n in
                [q, q + ".failed"] + [f"{q}.retry.{s}s" for s in (10, 20, 40, 80)]]

    finish_daemons(request, started, lambda d: d.broker, queues_of)


# ---------------------------------------------------------------------------
# a handler that keeps a diary

# argv: DIR. The body is JSON {"sleep": S, "exit": N} (both optional).
# Appends "start|end MID PID PPID MONOTONIC REDELIVERED" to DIR/events (one
# write each: atomic with O_APPEND) and writes its environment to
# DIR/env.MID.PID.json. CLOCK_MONOTONIC is the machine's: comparable with
# the test's time.monotonic().
TASK = r"""
#!/usr/bin/python3
import json, os, sys, time
d = sys.argv[1]
body = sys.stdin.buffer.read()
try:
    spec = json.loads(body or b"{}")
except ValueError:
    spec = {}
raw = open("/proc/self/environ", "rb").read()
env = {}
for item in raw.split(b"\0"):
    if item:
        k, _, v = item.partition(b"=")
        env[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
mid = env.get("WARREN_MESSAGE_ID", "-")

def event(kind):
    line = "%s %s %d %d %.6f %s\n" % (kind, mid, os.getpid(), os.getppid(),
                                      time.monotonic(),
                                      env.get("WARREN_REDELIVERED", "-"))
    fd = os.open(os.path.join(d, "events"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)

tmp = os.path.join(d, ".env.%d.tmp" % os.getpid())
with open(tmp, "w") as f:
    json.dump(env, f)
os.rename(tmp, os.path.join(d, "env.%s.%d.json" % (mid, os.getpid())))
event("start")
time.sleep(float(spec.get("sleep", 0)))
event("end")
sys.exit(int(spec.get("exit", 0)))
"""


class Diary:
    def __init__(self, tmp_path):
        self.dir = tmp_path / "diary"
        self.dir.mkdir()
        self.handler = write_script(tmp_path / "task.py", TASK)
        self.command = [self.handler, str(self.dir)]

    def events(self):
        """[(kind, mid, pid, ppid, t, redelivered)]"""
        out = []
        for l in read_lines(self.dir / "events"):
            k, mid, pid, ppid, t, red = l.split()
            out.append((k, mid, int(pid), int(ppid), float(t), red))
        return out

    def ends(self):
        """{mid: number of handler runs that finished}"""
        counts = {}
        for k, mid, *_ in self.events():
            if k == "end":
                counts[mid] = counts.get(mid, 0) + 1
        return counts

    def starts(self):
        counts = {}
        for k, mid, *_ in self.events():
            if k == "start":
                counts[mid] = counts.get(mid, 0) + 1
        return counts

    def running(self):
        """[(mid, pid, ppid)] of runs started and not ended (by pid)."""
        ended = {pid for k, _, pid, *_ in self.events() if k == "end"}
        return [(mid, pid, ppid) for k, mid, pid, ppid, *_ in self.events()
                if k == "start" and pid not in ended]

    def envs(self, mid):
        return [json.loads(p.read_text()) for p in sorted(self.dir.glob(f"env.{mid}.*.json"))]


def task(sleep=0, exit=0):
    return json.dumps({"sleep": sleep, "exit": exit}).encode()


def retrying(fn, timeout=20):
    """fn() again while the broker drops our connection (a forced close
    catches the test's own connections too)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (pika.exceptions.AMQPError, RuntimeError, OSError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def handled_summary(diary, ids):
    ends = diary.ends()
    lost = [m for m in ids if ends.get(m, 0) == 0]
    dups = {m: c for m, c in ends.items() if c > 1}
    return lost, dups


# ---------------------------------------------------------------------------
# 1. header types and properties


class ExactDecimal(decimal.Decimal):
    """pika normalize()s a Decimal before encoding it (-1.50 would go out as
    scale 1, -15); this one keeps its exponent, so the wire carries scale 2,
    value -150."""

    def normalize(self, context=None):
        return self


class Float32(float):
    """A float to go out as AMQP 'f' (single precision)."""


def encode_floats_too(monkeypatch):
    """pika 1.2 cannot encode a float at all; teach it 'd' (double) and, for
    Float32, 'f'. encode_table and the array encoder look encode_value up in
    pika.data at each call, so the patch covers nested values too."""
    plain = pika.data.encode_value

    def encode_value(pieces, value):
        if isinstance(value, Float32):
            pieces.append(struct.pack(">cf", b"f", value))
            return 5
        if isinstance(value, float):
            pieces.append(struct.pack(">cd", b"d", value))
            return 9
        return plain(pieces, value)

    monkeypatch.setattr(pika.data, "encode_value", encode_value)


def results_of(outdir, mid, timeout=30):
    path = outdir / f"{mid}.json"
    wait_for(path.exists, timeout=timeout, message=f"the handler's dump for {mid}")
    return json.loads(path.read_text())


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


JSON_VALUED = ("WARREN_HEADER_X_TABLE", "WARREN_HEADER_X_LIST")


def test_header_types_and_properties(broker, warrend, handlers, tmp_path, monkeypatch):
    encode_floats_too(monkeypatch)
    outdir = tmp_path / "out"
    outdir.mkdir()
    w = warrend([handlers.dumper(outdir), str(outdir)], workers=1)
    w.wait_consuming(1)
    q = w.queue

    stamp = datetime.datetime(2023, 11, 14, 22, 13, 20)  # 1700000000 UTC
    headers = {
        "x-true": True,
        "x-false": False,
        "x-small": 42,
        "x-neg": -7,
        "x-big": 2**40 + 3,               # 'l': 64-bit
        "x-bigneg": -(2**35),
        "x-float": 2.5,                   # 'd' (see encode_floats_too)
        "x-float32": Float32(0.25),       # 'f'
        "x-decimal": ExactDecimal("-1.50"),  # 'D' scale 2, -150
        "x-dec-small": ExactDecimal("-0.05"),  # scale 2, -5: leading zeros
        "x-dec-int": decimal.Decimal(5),  # scale 0
        "x-int64-max": 2**63 - 1,
        "x-int64-min": -(2**63),
        "x-table": {"k": "v", "n": {"a": 1}},
        "x-list": [1, "a", True],
        "x-bytes": b"raw",                # 'x'
        "x-void": None,                   # 'V'
        "x-time": stamp,                  # 'T'
        "x-str": "plain",
        "x-Odd.name 1": "odd",
        "x-dup": "first",                 # both map to WARREN_HEADER_X_DUP:
        "X_DUP": "second",                # the first in the table wins
        "x-nul": "a\0b",                  # holds NUL: left out
        "x-nul-bytes": b"a\0b",           # so does this byte array
    }
    broker.publish(q, b"types", headers=headers, message_id="types",
                   priority=7, expiration="60000", user_id="guest")
    # the same two names the other way round: "first" is the table's order,
    # not a preference for one spelling
    broker.publish(q, b"dup", headers={"X_DUP": "second", "x-dup": "first"},
                   message_id="dup")
    got = results_of(outdir, "types")["env"]
    dup = results_of(outdir, "dup")["env"]
    wait_for(lambda: broker.queue_counts(q) == (0, 0), timeout=20,
             message="both messages acked")
    print("types env:", json.dumps({k: v for k, v in got.items()
                                    if k.startswith("WARREN_")}, sort_keys=True))

    expected = {
        "PATH": HANDLER_PATH,
        "WARREN_QUEUE": q,
        "WARREN_WORKER": "1",
        "WARREN_ATTEMPT": "1",
        "WARREN_REDELIVERED": "0",
        "WARREN_ROUTING_KEY": q,
        "WARREN_MESSAGE_ID": "types",
        "WARREN_PRIORITY": "7",
        "WARREN_EXPIRATION": "60000",
        "WARREN_USER_ID": "guest",
        "WARREN_HEADER_X_TRUE": "true",
        "WARREN_HEADER_X_FALSE": "false",
        "WARREN_HEADER_X_SMALL": "42",
        "WARREN_HEADER_X_NEG": "-7",
        "WARREN_HEADER_X_BIG": str(2**40 + 3),
        "WARREN_HEADER_X_BIGNEG": str(-(2**35)),
        "WARREN_HEADER_X_FLOAT": "2.5",
        "WARREN_HEADER_X_FLOAT32": "0.25",
        "WARREN_HEADER_X_DECIMAL": "-1.50",
        "WARREN_HEADER_X_DEC_SMALL": "-0.05",
        "WARREN_HEADER_X_DEC_INT": "5",
        "WARREN_HEADER_X_INT64_MAX": str(2**63 - 1),
        "WARREN_HEADER_X_INT64_MIN": str(-(2**63)),
        "WARREN_HEADER_X_TABLE": {"k": "v", "n": {"a": 1}},
        "WARREN_HEADER_X_LIST": [1, "a", True],
        "WARREN_HEADER_X_BYTES": "raw",
        "WARREN_HEADER_X_VOID": "",
        "WARREN_HEADER_X_TIME": "1700000000",
        "WARREN_HEADER_X_STR": "plain",
        "WARREN_HEADER_X_ODD_NAME_1": "odd",
        "WARREN_HEADER_X_DUP": "first",
    }
    # The default exchange is "": an empty WARREN_EXCHANGE or none.
    assert got.pop("WARREN_EXCHANGE", "") == ""
    assert "WARREN_HEADER_X_NUL" not in got, "a value holding NUL was passed on"
    assert "WARREN_HEADER_X_NUL_BYTES" not in got, "a value holding NUL was passed on"
    assert set(got) == set(expected), (
        f"unexpected: {sorted(set(got) - set(expected))}, "
        f"missing: {sorted(set(expected) - set(got))}")
    for name in JSON_VALUED:
        try:
            value = json.loads(got[name])
        except ValueError:
            raise AssertionError(f"{name} is not JSON: {got[name]!r}")
        # compared as canonical text: in Python True == 1, in JSON not
        got[name] = canonical_json(value)
        expected[name] = canonical_json(expected[name])
    mismatched = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not mismatched, f"(got, expected): {mismatched}"

    assert dup.pop("WARREN_EXCHANGE", "") == ""
    assert dup.get("WARREN_HEADER_X_DUP") == "second", \
        "of two headers mapping to one name, the first in the table must win"
    assert {k for k in dup if k.startswith("WARREN_HEADER_")} == {"WARREN_HEADER_X_DUP"}
    w.stop()


# ---------------------------------------------------------------------------
# 2. a header with an empty name


def test_empty_header_name_handled_once(broker, daemon, tmp_path):
    diary = Diary(tmp_path)
    w = daemon(broker, diary.command, workers=1)
    w.wait_consuming(1)
    [worker] = w.wait_children(1)

    broker.publish(w.queue, task(), headers={"": "x", "ok": "y"}, message_id="empty")
    wait_for(lambda: diary.ends().get("empty"), timeout=20,
             message="the message with an empty header name handled")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="it acked")
    broker.publish(w.queue, task(), message_id="next")
    wait_for(lambda: diary.ends().get("next"), timeout=20,
             message="the following message handled")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="all acked")

    [env] = diary.envs("empty")
    print("empty-name message env headers:",
          {k: v for k, v in env.items() if k.startswith("WARREN_HEADER")})
    assert diary.starts() == {"empty": 1, "next": 1}, diary.events()
    assert env.get("WARREN_HEADER_OK") == "y"
    assert "WARREN_HEADER_" not in env, "a variable for the empty header name"
    assert "" not in env
    assert {e[3] for e in diary.events()} == {worker}, "not run by the first worker"
    assert w.children() == [worker], "the worker was replaced"
    assert w.spawns() == 1, f"{w.spawns()} spawns"
    assert "invalid parameter" not in w.log()
    assert w.alive()
    w.stop()


def test_empty_header_name_parked(broker, daemon, tmp_path):
    diary = Diary(tmp_path)
    w = daemon(broker, diary.command, workers=1)
    w.wait_consuming(1)
    [worker] = w.wait_children(1)
    failed = w.queue + ".failed"
    body = task(exit=65)

    broker.publish(w.queue, body, headers={"": "x", "ok": "y"}, message_id="bad")
    wait_for(lambda: diary.ends().get("bad"), timeout=20, message="the handler to run")
    wait_for(lambda: broker.queue_counts(failed) == (1, 0), timeout=20,
             message=f"the message parked in {failed}")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="the original acked")
    # no loop: nothing runs it again (watch a little while)
    LogFollower(w.log_path).follow(2)
    assert diary.starts() == {"bad": 1}, diary.events()
    assert broker.queue_counts(failed) == (1, 0)
    assert broker.queue_counts(w.queue) == (0, 0)

    method, props, got = broker.get(failed)
    assert method is not None
    assert got == body, "the parked copy lost its body"
    hdrs = props.headers or {}
    kept = "" in hdrs
    print(f"parked copy headers: {hdrs!r}")
    print("empty-named header on the parked copy:",
          f"kept (value {hdrs['']!r})" if kept else "dropped")
    assert hdrs.get("ok") in ("y", b"y")
    if kept:
        assert hdrs[""] in ("x", b"x")
    reason = hdrs.get("x-warren-reason")
    if isinstance(reason, bytes):
        reason = reason.decode()
    assert reason == "exit 65"
    assert props.message_id == "bad"
    assert w.children() == [worker], "the worker was replaced"
    assert "invalid parameter" not in w.log()
    w.stop()


def test_empty_header_name_retried(broker, daemon, tmp_path):
    """The retry copy of such a message (published to NAME.retry.1s and
    dead-lettered back) runs once more with WARREN_ATTEMPT=2 and is then
    parked: the empty name breaks neither the copy nor the count."""
    diary = Diary(tmp_path)
    w = daemon(broker, diary.command, workers=1,
               queue_extra=["retry {", "    attempts = 2", "    delay = 1", "}"])
    w.queues.append(w.queue + ".retry.1s")      # deleted at teardown
    w.wait_consuming(1)
    [worker] = w.wait_children(1)
    failed = w.queue + ".failed"

    broker.publish(w.queue, task(exit=3), headers={"": "x", "ok": "y"}, message_id="again")
    wait_for(lambda: broker.queue_counts(failed) == (1, 0), timeout=30,
             message=f"the message parked in {failed} after 2 attempts")
    LogFollower(w.log_path).follow(2)      # no loop: nothing runs it again
    envs = diary.envs("again")
    print("retried empty-name message: attempts seen",
          sorted(e.get("WARREN_ATTEMPT") for e in envs))
    assert diary.starts() == {"again": 2}, diary.events()
    assert sorted(e.get("WARREN_ATTEMPT") for e in envs) == ["1", "2"]
    for e in envs:
        assert e.get("WARREN_HEADER_OK") == "y"
        assert "WARREN_HEADER_" not in e
    _, props, _ = broker.get(failed)
    reason = (props.headers or {}).get("x-warren-reason")
    assert (reason.decode() if isinstance(reason, bytes) else reason) == "exit 3"
    assert broker.queue_counts(w.queue) == (0, 0)
    assert w.children() == [worker], "the worker was replaced"
    w.stop()


def test_header_too_big_for_execve_does_not_loop(broker, daemon, tmp_path):
    """60 KB of control bytes in an array fit in one AMQP frame but render
    as 360 KB of JSON (each byte \\u0001): past Linux's 128 KiB limit on one
    environment string, so execve() fails with E2BIG. That is the message's
    fault, not the configuration's: the message must be handled (the value
    left out) or parked, never requeued to the same fate again and again,
    and the messages behind it must still be handled."""
    diary = Diary(tmp_path)
    w = daemon(broker, diary.command, workers=1)
    w.wait_consuming(1)
    failed = w.queue + ".failed"

    broker.publish(w.queue, task(), headers={"x-big": [b"\x01" * 60000]},
                   message_id="huge")
    broker.publish(w.queue, task(), message_id="behind")

    def settled():
        assert w.alive(), f"warrend died; log:\n{w.log()}"
        return diary.ends().get("behind")

    try:
        wait_for(settled, timeout=20, message="the message behind the huge one handled")
    finally:
        print(f"huge header: runs {diary.starts()}, spawns {w.spawns()},"
              f" {w.queue} {broker.queue_counts(w.queue)},"
              f" {failed} {broker.queue_counts(failed)}")
    ran = diary.ends().get("huge")
    parked = broker.queue_counts(failed) == (1, 0)
    print("huge header:", "handled" if ran else "parked" if parked else "neither")
    assert ran or parked
    assert w.spawns() <= 2, f"{w.spawns()} worker spawns: a requeue loop"
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="nothing left in the queue")
    w.stop()


# ---------------------------------------------------------------------------
# 3. a frozen broker (SIGSTOP of beam.smp): a broker of this module's own

HB = 2           # broker.heartbeat
CT = 3           # broker.connect_timeout
FREEZE = 10      # seconds the broker stays stopped
# measurement slack: the log is polled every 20 ms on a shared machine
SLACK = 0.3


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory):
    b = PrivateBroker(tmp_path_factory.mktemp("faults-broker"))
    try:
        b.start()
    except RuntimeError as e:
        pytest.fail(f"could not start this module's broker: {e}")
    try:
        yield b
    finally:
        pid = beam_pid(b)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        b.stop()


def beam_pid(b):
    """The node's beam.smp: from its pid file (scripts/broker sets
    RABBITMQ_PID_FILE=DIR/rabbitmq.pid), else by the node name in the
    command line."""
    try:
        pid = int((Path(b.dir) / "rabbitmq.pid").read_text().split()[0])
        if pid_alive(pid):
            return pid
    except (FileNotFoundError, ValueError, IndexError):
        pass
    node = f"warren-{b.port}@localhost"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"beam.smp") and node.encode() in cmd:
            return int(entry)
    return None


def is_debug(line):
    return ": debug: " in line


LOST = re.compile(r"(?i)heartbeat|connection (lost|closed|reset)|lost (the )?connection"
                  r"|broker closed|closed the connection|socket|timed? ?out")


def test_frozen_broker(own_broker, daemon, tmp_path):
    b = own_broker
    beam = beam_pid(b)
    assert beam is not None, "cannot find the broker's beam.smp"
    diary = Diary(tmp_path)
    w = daemon(b, diary.command, workers=2,
               broker_lines=[f"heartbeat = {HB}", f"connect_timeout = {CT}"])
    w.wait_consuming(2)
    ids = [f"m{i}" for i in range(4)]
    b.publish_many(w.queue, [(task(sleep=8), None, m, {}) for m in ids])
    wait_for(lambda: diary.running(), timeout=20, message="a handler to run")
    # both workers busy, ideally; one is enough
    try:
        wait_for(lambda: len(diary.running()) >= 2, timeout=3)
    except AssertionError:
        pass
    running = diary.running()
    follower = LogFollower(w.log_path)
    follower.offset = w.log_size()

    detected = gone = None
    os.kill(beam, signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        while time.monotonic() - t_stop < FREEZE:
            follower.poll()
            now = time.monotonic()
            if detected is None:
                # what an operator sees: -d's debug lines do not count
                hits = [t for t, l in follower.lines
                        if LOST.search(l) and not is_debug(l)]
                if hits:
                    detected = hits[0] - t_stop
            if gone is None and not any(pid_alive(pid) for _, pid, _ in running):
                gone = now - t_stop
            assert w.alive(), f"warrend died during the freeze; log:\n{w.log()}"
            time.sleep(0.02)
    finally:
        os.kill(beam, signal.SIGCONT)
    t_cont = time.monotonic()
    freeze_lines = [l for _, l in follower.lines]
    spawns_frozen = w.spawns() - 2

    def all_done():
        assert w.alive(), f"warrend died; log:\n{w.log()}"
        return all(diary.ends().get(m) for m in ids)

    wait_for(all_done, timeout=60, message="all 4 messages handled after SIGCONT")
    resumed = time.monotonic() - t_cont
    first_after = min(t for k, _, _, _, t, _ in diary.events()
                      if k == "start" and t > t_cont) - t_cont
    wait_for(lambda: b.queue_counts(w.queue) == (0, 0), timeout=30,
             message="an empty queue (everything acked)")
    lost, dups = handled_summary(diary, ids)
    respawns = w.spawns() - 2
    print(f"frozen broker: running at stop {[(m, p) for m, p, _ in running]}")
    print(f"frozen broker: detection {detected if detected is None else round(detected, 2)} s"
          f" (bound {2 * HB + 1} s), handlers gone after "
          f"{gone if gone is None else round(gone, 2)} s")
    print(f"frozen broker: first handler {first_after:.1f} s after SIGCONT,"
          f" all handled {resumed:.1f} s after it; lost {len(lost)},"
          f" duplicates {dups} ({sum(c - 1 for c in dups.values())}),"
          f" runs {diary.starts()}")
    print(f"frozen broker: respawns {spawns_frozen} during the freeze, {respawns} in all")
    print("frozen broker: log during the freeze:\n  " + "\n  ".join(freeze_lines[:40]))

    assert detected is not None, "no heartbeat / lost-connection line in the log"
    assert detected <= 2 * HB + 1 + SLACK, f"detected after {detected:.2f} s"
    assert gone is not None, "the running handlers outlived the freeze"
    assert gone <= 2 * HB + 1 + SLACK, f"handlers gone after {gone:.2f} s"
    assert not lost
    assert respawns <= 12, f"{respawns} worker respawns"
    assert w.alive()
    w.stop()


# ---------------------------------------------------------------------------
# 4. rabbitmqctl close_all_connections while handlers run


CLOSED = re.compile(r"CONNECTION_FORCED|closed")


def close_all_connections(broker, w, diary):
    """rabbitmqctl close_all_connections, timed: the call, the first log
    line about it after the call (the close's moment), the call's return,
    and the handler runs it caught (started before, not ended by then)."""
    follower = LogFollower(w.log_path)
    follower.offset = w.log_size()
    ctl_error = []

    def close_all():
        try:
            broker.ctl("close_all_connections", "test")
        except Exception as e:       # reported below
            ctl_error.append(e)

    t_call = time.monotonic()
    closer = threading.Thread(target=close_all)
    closer.start()
    while closer.is_alive() and time.monotonic() - t_call < 60:
        follower.poll()
        time.sleep(0.02)
    closer.join(60)
    assert not ctl_error, ctl_error
    t_close = time.monotonic()     # every connection is closed by now
    follower.poll()
    hits = [t for t, l in follower.lines if CLOSED.search(l)]
    t_seen = min(hits) if hits else t_close
    events = diary.events()
    ended = {pid: t for k, _, pid, _, t, _ in events if k == "end"}
    caught = [m for k, m, pid, _, t, _ in events
              if k == "start" and t < t_seen and ended.get(pid, t_seen + 1) > t_seen]
    done = sum(1 for e in events if e[0] == "end" and e[4] < t_seen)
    return {"call": t_call, "seen": t_seen, "returned": t_close, "caught": caught,
            "done": done}


def test_close_all_connections(broker, daemon, tmp_path):
    diary = Diary(tmp_path)
    w = daemon(broker, diary.command, workers=3)
    w.wait_consuming(3)
    ids = [f"c{i:02d}" for i in range(20)]
    broker.publish_many(w.queue, [(task(sleep=0.5), None, m, {}) for m in ids])
    # rabbitmqctl needs a second or two to start: call it as soon as
    # handlers run, so that the close lands mid-stream
    wait_for(lambda: len(diary.running()) >= 2, timeout=30, message="handlers busy")
    offset = w.log_size()
    closes = []
    # The close can land in the gap between two messages of every worker:
    # then it caught no handler, and the test closes again (3 tries at most).
    while len(closes) < 3:
        closes.append(close_all_connections(broker, w, diary))
        if closes[-1]["caught"] or sum(diary.ends().values()) >= 15:
            break
        wait_for(lambda: len(diary.running()) >= 2, timeout=30, message="handlers busy")
    last = closes[-1]
    t_seen, t_close = last["seen"], last["returned"]

    def resumed():
        return [t for k, _, _, _, t, _ in diary.events() if k == "start" and t > t_close]

    def all_done():
        assert w.alive(), f"warrend died; log:\n{w.log()}"
        return all(diary.ends().get(m) for m in ids)

    first = wait_for(resumed, timeout=30, message="a handler started after the close")
    resume = min(first) - t_seen
    wait_for(all_done, timeout=60, message="all 20 messages handled")
    retrying(lambda: wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
                              message="an empty queue"))
    retrying(lambda: w.wait_consuming(3, timeout=20))
    lost, dups = handled_summary(diary, ids)
    ndups = sum(c - 1 for c in dups.values())
    respawns = w.spawns() - 3
    after = Path(w.log_path).read_bytes()[offset:].decode(errors="replace").splitlines()
    clear = [l for l in after if CLOSED.search(l) and not is_debug(l)]
    for c in closes:
        print(f"close_all: rabbitmqctl took {c['returned'] - c['call']:.2f} s, the close"
              f" seen in the log {c['seen'] - c['call']:.2f} s after the call;"
              f" {c['done']}/20 handled by then; in flight {c['caught']}")
    print(f"close_all: {len(closes)} close(s), resumed {resume:.2f} s after the last,"
          f" lost {len(lost)}, duplicates {ndups} {dups}, respawns {respawns}")
    print("close_all: log lines naming the close:\n  " + "\n  ".join(clear[:10]))

    assert closes[0]["done"] < 20, "the close came after the last message: it proves nothing"
    assert not lost, f"lost {lost}"
    # only what was in flight at a close runs twice: 3 workers, prefetch 1
    assert ndups <= 3 * len(closes), f"{ndups} duplicates after {len(closes)} close(s)"
    assert resume < 15, f"consumption resumed after {resume:.1f} s"
    assert clear, "no log line (above debug) says the broker closed the connection"
    assert respawns <= 6 * len(closes), f"{respawns} worker respawns"
    assert w.alive()
    w.stop()


# ---------------------------------------------------------------------------
# 5. the consumed queue deleted while consuming


def test_consumed_queue_deleted(broker, daemon, tmp_path):
    diary = Diary(tmp_path)
    w = daemon(broker, diary.command, workers=2)
    w.wait_consuming(2)
    broker.publish_many(w.queue, [(task(sleep=2), None, f"d{i}", {}) for i in range(3)])
    wait_for(lambda: len(diary.running()) >= 2, timeout=20, message="both workers busy")
    busy = diary.running()

    conn = broker.connect()
    try:
        conn.channel().queue_delete(w.queue)
    finally:
        if conn.is_open:
            conn.close()
    t_del = time.monotonic()
    spawns_before = w.spawns()

    def consuming_again():
        assert w.alive(), f"warrend died; log:\n{w.log()}"
        return broker.consumer_count(w.queue) == 2

    wait_for(consuming_again, timeout=30, interval=0.1,
             message="2 consumers on the re-declared queue")
    back = time.monotonic() - t_del
    # a crash loop shows as spawns piling up: watch a little while
    LogFollower(w.log_path).follow(3)
    assert broker.consumer_count(w.queue) == 2
    broker.publish(w.queue, task(), message_id="after")
    wait_for(lambda: diary.ends().get("after"), timeout=20,
             message="a message published after the delete handled")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="it acked")
    respawns = w.spawns() - spawns_before
    window = time.monotonic() - t_del
    finished = [m for m, pid, _ in busy if diary.ends().get(m)]
    print(f"queue deleted: consuming again after {back:.2f} s, {respawns} respawns in"
          f" {window:.1f} s, busy handlers finished: {finished} of {[m for m, _, _ in busy]}")

    assert back < 20, f"consuming again only after {back:.1f} s"
    assert respawns < 10, f"{respawns} respawns in {window:.1f} s: a crash loop"
    assert len(finished) == len(busy), "a running handler was not let finish"
    assert w.alive()
    w.stop()


# ---------------------------------------------------------------------------
# 6. connect_timeout: a node that accepts and never answers


class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted.append(c)   # held open, never written to

    def close(self):
        self.stopping = True
        self.thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


def test_connect_timeout_skips_silent_node(broker, daemon, tmp_path):
    CONNECT = 2
    silent = SilentListener()
    try:
        diary = Diary(tmp_path)
        t0 = time.monotonic()
        w = daemon(broker, diary.command, workers=2,
                   urls=[f"amqp://guest:guest@127.0.0.1:{silent.port}/", broker.url],
                   broker_lines=[f"connect_timeout = {CONNECT}"])
        w.wait_consuming(2, timeout=45)
        took = time.monotonic() - t0
        broker.publish(w.queue, task(), message_id="via-second-node")
        wait_for(lambda: diary.ends().get("via-second-node"), timeout=20,
                 message="a message handled")
        named = [l for l in w.log().splitlines()
                 if f":{silent.port}" in l or "of broker.url" in l]
        print("connect_timeout: log lines about the silent node:\n  " + "\n  ".join(named))
        print(f"connect_timeout: 2 workers consuming {took:.2f} s after start"
              f" (bound {2 * CONNECT + 4} s); the silent node saw"
              f" {len(silent.accepted)} connections")
        # worker N starts at node (N-1) mod nodes: worker 1 at the silent one
        assert len(silent.accepted) >= 1, "the silent node was never tried"
        assert took < 2 * CONNECT + 4, f"consuming only after {took:.1f} s"
        assert w.alive()
        w.stop()
    finally:
        silent.close()


def test_retry_of_headers_near_the_frame_size_is_parked_not_lost(broker, daemon, tmp_path):
    """A retry comes back through a dead-letter exchange, which adds
    x-death: headers near frame_max (131072) then make a content header
    frame no client can read, and the message was rejected and lost. Such
    a failed attempt is parked at once instead, with its headers."""
    diary = Diary(tmp_path)
    w = daemon(broker, diary.command, workers=1,
               queue_extra=["retry {", "    attempts = 2", "    delay = 1", "}"])
    w.queues.append(w.queue + ".retry.1s")
    w.wait_consuming(1)
    failed = w.queue + ".failed"
    n = 130900   # as large as one frame takes from pika, found downwards
    while True:
        try:
            broker.publish(w.queue, task(exit=3), headers={"x-big": "a" * n},
                           message_id="bigcopy")
            break
        except Exception:
            n -= 200
            assert n > 120000, "no header near the frame size could be published"
    broker.publish(w.queue, task(), message_id="behind")
    wait_for(lambda: diary.ends().get("behind"), timeout=30,
             message="the message behind handled")
    wait_for(lambda: broker.queue_counts(failed) == (1, 0), timeout=20,
             message="the big message parked")
    method, props, body = broker.get(failed)
    print(f"\nheader of {n} bytes: runs {diary.starts().get('bigcopy')}, "
          f"spawns {w.spawns()}, parked with reason {props.headers.get('x-warren-reason')}")
    assert len(props.headers["x-big"]) == n
    assert props.headers["x-warren-reason"] == "exit 3"
    assert "too near the frame size" in w.log()
    assert w.spawns() == 1, "the worker restarted"
    w.stop()
