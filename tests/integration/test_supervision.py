"""Supervision under stress (issue 3; SPEC: process model, signals):
reloads that scale, roll or are refused while handlers run; stopping with
long handlers; the master killed; mass worker kills and SIGHUP storms;
respawn backoff for workers that cannot work; a broker restart; and a
chaos run that combines them while 5,000 messages flow.

Tests that stop the broker use a private node of this module's own; the
session broker is never disturbed.
"""

import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict

import pytest

from chaos_helpers import (Daemon, LogFollower, PrivateBroker, handlers_of,
                           live_in_session, zombies_under)
from conftest import (SUBMIT, finish_daemons, pid_alive, queue_name_for, read_lines,
                      wait_for, write_script)

# ---------------------------------------------------------------------------
# handlers

# Marks its start and its end in MARKS (one O_APPEND write each), working
# SECONDS in between: "start|end|term TAG ID PID WORKER TIME". A SIGTERM is
# recorded as "term" before it exits 143; a SIGKILL leaves a start without
# an end.
MARK = r"""
#!/usr/bin/python3
import os, signal, sys, time
marks, tag, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
mid = os.environ.get("WARREN_MESSAGE_ID", "-")
def mark(what):
    line = "%s %s %s %d %s %.3f\n" % (what, tag, mid, os.getpid(),
                                      os.environ.get("WARREN_WORKER"), time.time())
    fd = os.open(marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)
def term(signo, frame):
    mark("term")
    os._exit(143)
signal.signal(signal.SIGTERM, term)
sys.stdin.buffer.read()
mark("start")
time.sleep(seconds)
mark("end")
"""

# Starts a grandchild in its own process group, records both pids, and
# waits (the test kills the master meanwhile).
SPAWNER = r"""
#!/bin/sh
# argv: DIR
cat >/dev/null
sleep 300 &
printf '%s %s\n' "$$" "$!" >"$1/.pids.$WARREN_MESSAGE_ID"
mv "$1/.pids.$WARREN_MESSAGE_ID" "$1/pids.$WARREN_MESSAGE_ID"
sleep 300
"""

# The chaos handler: works SECONDS (0: not at all), then appends the
# message id to RESULTS in one write (dash's printf flushes once; O_APPEND
# keeps lines whole).
CHAOS = r"""
#!/bin/sh
# argv: RESULTS SECONDS
[ "$2" = 0 ] || sleep "$2"
printf '%s\n' "$WARREN_MESSAGE_ID" >>"$1"
"""

# Records "WORKER MESSAGE_ID PPID" (like conftest's recorder, without
# reading the body).
RECORD = r"""
#!/bin/sh
# argv: RESULTS
cat >/dev/null
printf '%s %s %s\n' "$WARREN_WORKER" "${WARREN_MESSAGE_ID:--}" "$PPID" >>"$1"
"""


def marks_of(path):
    """[(what, tag, id, pid, worker, time)] from a MARK file."""
    out = []
    for line in read_lines(path):
        what, tag, mid, pid, worker, t = line.split()
        out.append((what, tag, mid, int(pid), worker, float(t)))
    return out


def running_pids(path):
    """Pids of the handlers that have started and not yet ended."""
    rows = marks_of(path)
    done = {r[3] for r in rows if r[0] != "start"}
    return {r[3] for r in rows if r[0] == "start" and r[3] not in done}


def running(path):
    """Ids whose handler has started and not yet ended."""
    pids = running_pids(path)
    return [r[2] for r in marks_of(path) if r[0] == "start" and r[3] in pids]


def check_marks(path, ids):
    """Every id ran exactly once, to its end, never signalled."""
    rows = marks_of(path)
    terms = [r for r in rows if r[0] == "term"]
    assert not terms, f"handlers got SIGTERM: {terms}"
    ended = {r[3] for r in rows if r[0] == "end"}
    killed = [(r[2], r[3]) for r in rows if r[0] == "start" and r[3] not in ended]
    assert not killed, f"handlers (id, pid) started but never finished (killed?): {killed}"
    starts = Counter(r[2] for r in rows if r[0] == "start")
    twice = sorted(m for m, n in starts.items() if n > 1)
    assert not twice, f"handled more than once: {twice}"
    ends = {r[2] for r in rows if r[0] == "end"}
    assert ends == set(ids), (
        f"lost: {sorted(set(ids) - ends)}, unknown: {sorted(ends - set(ids))}")


def outcomes(log):
    """Outcome words of every settled message in a warrend log."""
    return re.findall(r": (\S+) (ack|retry|failed|requeued), ([^,]+),", log)


def check_all_acked(d, ids):
    outs = outcomes(d.log())
    bad = [o for o in outs if o[1] != "ack" or o[2] != "exit 0"]
    assert not bad, f"outcomes other than 'ack, exit 0': {bad}"
    acked = Counter(o[0] for o in outs)
    assert set(acked) == set(ids) and max(acked.values()) == 1, acked


def connections_of(broker, queue):
    """Connection names (connection_name of the client properties) of the
    broker's connections that belong to queue's workers."""
    out = broker.ctl("-q", "list_connections", "client_properties",
                     "--no-table-headers")
    names = re.findall(r'\{"connection_name","([^"]*)"\}', out)
    return sorted(n for n in names if n.startswith(f"warrend {queue}/"))


def wait_pool(d, n, timeout=30, queue=None, strict=False):
    """n consumers (passive declare) and n worker processes (children of
    the master); strict: list_consumers and the broker's connections agree
    (rabbitmqctl: slow)."""
    queue = queue or d.queue
    d.wait_consuming(n, timeout=timeout, queue=queue)

    def workers():
        d._check_alive()
        return len(d.children()) == n
    wait_for(workers, timeout=timeout, message=f"{n} worker processes")
    kids = d.children()
    if not strict:
        return kids
    wait_for(lambda: len(d.broker.consumers(queue)) == n, timeout=timeout,
             interval=0.3, message=f"list_consumers to show {n} consumers")
    wait_for(lambda: len(connections_of(d.broker, queue)) == n, timeout=timeout,
             interval=0.3, message=f"{n} worker connections at the broker")
    return kids


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture
def daemon(broker, tmp_path, request):
    """Factory: daemon(queues=[...], broker=..., args=(...)) -> Daemon.

    queues: dicts with name (default: from the test's name), workers,
    command, extra. Kills whatever it started at teardown, shows the log of
    a failed test, and deletes the queues it named."""
    started = []

    def start(queues, on=None, args=(), shutdown_timeout=10, heartbeat=None):
        on = on or broker
        n = len(started) + 1
        for i, q in enumerate(queues):
            q.setdefault("name", queue_name_for(request.node.name)
                         + (f".{n}.{i}" if n > 1 or i else ""))
        d = Daemon(tmp_path / f"warrend{n}.conf", tmp_path / f"warrend{n}.log",
                   on, queues, args=args, shutdown_timeout=shutdown_timeout,
                   heartbeat=heartbeat)
        started.append(d)
        return d

    yield start

    finish_daemons(
        request, started, lambda d: d.broker,
        lambda d: [n for q in d.queues for n in
                   [q, q + ".failed"] + [f"{q}.retry.{s}s" for s in (1, 10, 20, 40, 80)]],
        tail=30000)


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory):
    """A private node for the tests that restart the broker."""
    b = PrivateBroker(tmp_path_factory.mktemp("broker-own"))
    try:
        b.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield b
    finally:
        b.stop()


def ensure_running(b):
    """A test that left the private broker stopped must not break the next."""
    if not b.running:
        b.start()


# ---------------------------------------------------------------------------
# reloads


def test_scale_2_8_3_0_4_while_long_handlers_run(broker, daemon, tmp_path):
    marks = tmp_path / "marks"
    h = write_script(tmp_path / "mark.py", MARK)
    d = daemon([{"workers": 2, "command": [h, str(marks), "A", "3"]}])
    pids = {2: set(wait_pool(d, 2))}

    ids = []

    def top_up(k):
        """At least k messages ready (a slow machine may have run out)."""
        missing = k - broker.ready_count(d.queue)
        if missing > 0:
            new = [f"s{len(ids) + i:03d}" for i in range(missing)]
            broker.publish_many(d.queue, [(b"x", None, i, {}) for i in new])
            ids.extend(new)

    previous = 2
    for n in (8, 3, 0, 4):
        # Enough work for both sides of the change.
        top_up(previous + n + 6)
        # The change lands while handlers run: every worker busy.
        wait_for(lambda: len(running(marks)) >= previous, timeout=20,
                 message=f"{previous} handlers running before scaling to {n}")
        busy = running_pids(marks)
        d.rewrite(workers=n)
        d.reload()
        pids[n] = set(wait_pool(d, n, timeout=30, strict=True))
        if n > previous:
            # Only the difference starts: the old workers stay.
            assert pids[previous] <= pids[n], (previous, n, pids)
        else:
            # Only the difference goes: the rest stay.
            assert pids[n] <= pids[previous], (previous, n, pids)
        if n == 0:
            ready, unacked = broker.queue_counts(d.queue)
            assert unacked == 0 and ready > 0, (ready, unacked)
        # The handlers that ran at the change were finished, not killed.
        wait_for(lambda: busy <= {r[3] for r in marks_of(marks) if r[0] != "start"},
                 timeout=10, message=f"handlers running at the change to {n} to end")
        stopped = [r for r in marks_of(marks) if r[3] in busy and r[0] == "term"]
        assert not stopped, f"handlers got SIGTERM at the change to {n}: {stopped}"
        previous = n

    wait_for(lambda: len([r for r in marks_of(marks) if r[0] == "end"]) >= len(ids),
             timeout=60, message="every message handled")
    wait_for(lambda: broker.queue_counts(d.queue) == (0, 0), timeout=20,
             message="an empty queue, nothing unacked")
    check_marks(marks, ids)
    check_all_acked(d, ids)
    # Handlers ran on every size: more than 2 workers at once at some point.
    assert {r[4] for r in marks_of(marks)} >= {str(i) for i in range(1, 9)}
    d.stop()


def test_invalid_reload_keeps_the_running_configuration(broker, daemon, tmp_path):
    results = tmp_path / "results"
    h = write_script(tmp_path / "record.sh", RECORD)
    d = daemon([{"workers": 2, "command": [h, str(results)]}])
    before = wait_pool(d, 2)

    # A bad key on a known line, with a changed pool size that must not be
    # applied either.
    good = d.conf.read_text()
    lines = d.text().splitlines()
    at = next(i for i, l in enumerate(lines) if "workers =" in l)
    lines[at] = "    workers = 5"
    lines.insert(at + 1, "    no_such_key = 1")
    bad_line = at + 2
    d.conf.write_text("\n".join(lines) + "\n")
    d.reload()

    wanted = re.compile(rf"error: {re.escape(str(d.conf))}:{bad_line}: .*"
                        r"keeping the running configuration")
    wait_for(lambda: any(wanted.search(l) for l in d.log_lines()), timeout=10,
             message=f"an error naming {d.conf}:{bad_line}")
    # Nothing changed: same workers, still consuming, still working.
    time.sleep(1)   # room for a wrong reaction (a respawn, a resize)
    assert d.alive()
    assert d.children() == before
    assert broker.consumer_count(d.queue) == 2
    broker.publish(d.queue, "after", message_id="after-bad-reload")
    wait_for(lambda: read_lines(results), timeout=20,
             message="a message submitted after the bad reload handled")
    [(worker, mid, ppid)] = [l.split() for l in read_lines(results)]
    assert mid == "after-bad-reload" and int(ppid) in before
    wait_for(lambda: broker.queue_counts(d.queue) == (0, 0), timeout=10,
             message="the message acked")

    # A good file afterwards is applied as usual.
    d.conf.write_text(good.replace("workers = 2", "workers = 3"))
    d.reload()
    after = wait_pool(d, 3)
    assert set(before) <= set(after)
    d.stop()


def test_command_change_rolls_workers_without_interrupting(broker, daemon, tmp_path):
    marks = tmp_path / "marks"
    h = write_script(tmp_path / "mark.py", MARK)
    d = daemon([{"workers": 3, "command": [h, str(marks), "A", "3"]}])
    old = set(wait_pool(d, 3))

    first = [f"a{i}" for i in range(9)]
    broker.publish_many(d.queue, [(b"x", None, i, {}) for i in first])

    def three_fresh():
        """3 A runs going, each at most 1.5 s into its 3 s."""
        pids = running_pids(marks)
        starts = [r[5] for r in marks_of(marks) if r[3] in pids]
        return len(starts) == 3 and time.time() - min(starts) < 1.5
    wait_for(three_fresh, timeout=30, message="3 A handlers just started")
    d.rewrite(command=[h, str(marks), "B", "0.2"])
    t_reload = time.time()
    d.reload()

    # The pool rolls: the old workers finish and go, new ones consume.
    def rolled():
        kids = set(d.children())
        return len(kids) == 3 and not kids & old
    wait_for(rolled, timeout=20, message="3 new workers and no old one")
    t_rolled = time.time()
    d.wait_consuming(3)

    later = [f"b{i}" for i in range(6)]
    broker.publish_many(d.queue, [(b"x", None, i, {}) for i in later])
    ids = first + later
    wait_for(lambda: len([r for r in marks_of(marks) if r[0] == "end"]) >= len(ids),
             timeout=60, message="every message handled")
    wait_for(lambda: broker.queue_counts(d.queue) == (0, 0), timeout=20,
             message="an empty queue, nothing unacked")

    check_marks(marks, ids)     # no A run interrupted, nothing lost or doubled
    check_all_acked(d, ids)
    rows = marks_of(marks)
    a_runs = [r for r in rows if r[0] == "start" and r[1] == "A"]
    b_runs = [r for r in rows if r[0] == "start" and r[1] == "B"]
    # A ran only on the old workers, for what they had at the reload (the
    # three were at most 1.5 s into their 3 s: none could finish and take
    # another message before the master passed the reload on).
    assert len(a_runs) >= 3
    late = [r for r in a_runs if r[5] > t_reload + 1.0]
    assert not late, f"A started after the reload: {late}"
    assert all(r[5] <= t_rolled for r in a_runs)
    # Everything submitted after the roll ran B.
    assert {r[2] for r in b_runs} >= set(later)
    assert "queue %s changed: rolling its workers" % d.queue in d.log()
    d.stop()


# ---------------------------------------------------------------------------
# stopping and dying


def test_sigterm_lets_10s_handlers_finish_within_shutdown_timeout(broker, daemon, tmp_path):
    marks = tmp_path / "marks"
    h = write_script(tmp_path / "mark.py", MARK)
    d = daemon([{"workers": 3, "command": [h, str(marks), "A", "10"]}],
               shutdown_timeout=30)
    workers = wait_pool(d, 3)
    ids = [f"t{i}" for i in range(5)]
    broker.publish_many(d.queue, [(b"x", None, i, {}) for i in ids])
    wait_for(lambda: len(running(marks)) == 3, timeout=20,
             message="3 handlers running")
    handlers = [r[3] for r in marks_of(marks) if r[0] == "start"]
    last_start = max(r[5] for r in marks_of(marks))

    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    try:
        status = d.proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError("warrend did not exit within 30 s of SIGTERM")
    took = time.monotonic() - t0
    exited = time.time()
    assert status == 0, f"exit status {status}"
    # It waited for the handlers (10 s from their start), no longer.
    assert exited - last_start >= 9.5, f"exited {exited - last_start:.1f}s after the last start"
    assert took < 20, f"took {took:.1f}s"
    rows = marks_of(marks)
    started = sorted(r[2] for r in rows if r[0] == "start")
    assert len(started) == 3, f"a new handler started after SIGTERM: {started}"
    check_marks(marks, started)
    check_all_acked(d, started)
    # The three were acked; the other two were never taken.
    assert broker.queue_counts(d.queue) == (2, 0)
    assert not any(pid_alive(p) for p in workers + handlers)
    assert "stopping: running handlers get 30 s" in d.log()


def test_sigkill_master_leaves_no_worker_handler_or_grandchild(broker, daemon, tmp_path):
    h = write_script(tmp_path / "spawner.sh", SPAWNER)
    d = daemon([{"workers": 3, "command": [h, str(tmp_path)]}])
    workers = wait_pool(d, 3)
    broker.publish_many(d.queue, [(b"x", None, f"k{i}", {}) for i in range(2)])
    wait_for(lambda: all((tmp_path / f"pids.k{i}").exists() for i in range(2)),
             timeout=20, message="2 handlers and their grandchildren")
    pids = []
    for i in range(2):
        handler, grandchild = map(int, (tmp_path / f"pids.k{i}").read_text().split())
        pids += [handler, grandchild]
    d.extra_pids.update(pids)
    assert all(pid_alive(p) for p in workers + pids)
    # One worker idle, two busy, each handler with a grandchild in its group.
    assert len(handlers_of(workers)) == 2

    d.signal(signal.SIGKILL)
    d.proc.wait(10)
    everything = workers + pids
    wait_for(lambda: not any(pid_alive(p) for p in everything), timeout=5,
             message="every worker, handler and grandchild gone "
                     f"({[p for p in everything if pid_alive(p)]} alive)")
    assert live_in_session(d.pid) == []
    # Their unacked messages went back to the queue.
    wait_for(lambda: broker.queue_counts(d.queue) == (2, 0), timeout=15,
             message="both messages back in the queue")
    assert broker.consumer_count(d.queue) == 0


def test_sigkill_50_workers_at_once(broker, daemon, tmp_path):
    results = tmp_path / "results"
    h = write_script(tmp_path / "record.sh", RECORD)
    d = daemon([{"workers": 50, "command": [h, str(results)]}])
    before = wait_pool(d, 50, timeout=90)

    # At once for the master: it is stopped while the fifty die (a loop of
    # kill() calls can be preempted long enough for respawns to begin).
    d.signal(signal.SIGSTOP)
    try:
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(zombies_under(d.pid)) == 50, timeout=10,
                 message="fifty dead workers")
    finally:
        d.signal(signal.SIGCONT)
    after = wait_pool(d, 50, timeout=60)
    assert not set(after) & set(before), "a killed worker is still counted"
    wait_for(lambda: not zombies_under(d.pid), timeout=5,
             message="no zombie under the master")
    assert not any(pid_alive(p) for p in before)
    # One warning for the cause, not fifty.
    warned = d.count_log(r"warning: worker \S+ killed by signal 9; respawning")
    assert warned == 1, warned

    broker.publish(d.queue, "after", message_id="after-kills")
    wait_for(lambda: read_lines(results), timeout=20,
             message="a message submitted after the kills handled")
    assert int(read_lines(results)[0].split()[2]) in after
    d.stop(timeout=30)


def test_200_sighups_in_one_second(broker, daemon, tmp_path):
    results = tmp_path / "results"
    h = write_script(tmp_path / "record.sh", RECORD)
    d = daemon([{"workers": 50, "command": [h, str(results)]}])
    before = wait_pool(d, 50, timeout=90)

    # 200 reloads in one second; the file flips between 50 and 40 workers
    # every 20 signals (atomic renames) and ends at 50.
    t0 = time.monotonic()
    for i in range(200):
        if i % 20 == 0:
            d.rewrite(workers=40 if (i // 20) % 2 == 0 else 50)
        d.reload()
        time.sleep(max(0.0, t0 + (i + 1) / 200 - time.monotonic()))
    d.rewrite(workers=50)
    d.reload()
    sent = time.monotonic() - t0
    assert sent < 3, f"sending took {sent:.2f}s"  # paced for 1 s; slack for load

    assert d.alive()
    after = wait_pool(d, 50, timeout=90)
    wait_for(lambda: not zombies_under(d.pid), timeout=5,
             message="no zombie under the master")
    # The workers that stayed were never disturbed.
    assert len(set(before) & set(after)) >= 40
    assert "keeping the running configuration" not in d.log()

    broker.publish(d.queue, "after", message_id="after-hups")
    wait_for(lambda: read_lines(results), timeout=20,
             message="a message submitted after the reloads handled")
    d.stop(timeout=30)
    assert not zombies_under(d.pid)


# ---------------------------------------------------------------------------
# backoff of workers that cannot work


def prepare_missing(broker, q):
    broker.publish(q, "job", message_id="stuck")


def prepare_conflict(broker, q):
    conn = broker.connect()
    try:
        conn.channel().queue_declare(q, durable=True,
                                     arguments={"x-max-length": 10})
    finally:
        conn.close()


CASES = {
    # name: (how the config differs, preparation, warning text)
    "missing-handler": ({"command": ["/nonexistent/warren-handler"]},
                        prepare_missing, "the handler cannot be started"),
    # exists and is executable, but execve fails (ENOENT): found only when
    # a message comes
    "bad-interpreter": ({"command": "BAD_INTERPRETER"},
                        prepare_missing, "the handler cannot be started"),
    "wrong-password": ({"url": "wrong"}, None, "the broker refused the login"),
    "queue-arguments": ({}, prepare_conflict,
                        "cannot declare or consume the queue"),
}

BAD_INTERPRETER = """
#!/nonexistent/warren-interpreter
exit 0
"""

WINDOW = 10         # seconds of watching the respawns


@pytest.mark.parametrize("case", sorted(CASES))
def test_failing_workers_back_off_and_warn_once(broker, daemon, tmp_path, case):
    change, prepare, warning = CASES[case]
    q = queue_name_for(f"backoff-{case}")
    broker.delete_queue(q, q + ".failed", q + ".retry.10s")
    if prepare:
        prepare(broker, q)
    target = broker
    if change.get("url") == "wrong":
        class WrongPassword:
            url = broker.url.replace("guest:guest@", "guest:wrong@")
        target = WrongPassword()
    spec = {"name": q, "workers": 2, "command": ["/bin/true"]}
    spec.update({k: v for k, v in change.items() if k != "url"})
    if spec["command"] == "BAD_INTERPRETER":
        spec["command"] = [write_script(tmp_path / "bad.sh", BAD_INTERPRETER)]
    d = daemon([spec], on=target, args=("-d",))
    d.broker = broker   # for the queue checks below

    log = LogFollower(d.log_path)
    log.follow(WINDOW)
    assert d.alive(), d.log()

    starts = defaultdict(list)
    for t, line in log.lines:
        m = re.search(rf"debug: started worker {re.escape(q)}/(\d+), pid (\d+)", line)
        if m:
            starts[m.group(1)].append(t)
    counts = {slot: len(ts) for slot, ts in starts.items()}
    assert set(counts) == {"1", "2"}, counts
    for slot, ts in starts.items():
        # 0.1 s, then 1 s doubling with jitter (half to all): 5 or 6 forks
        # in 10 s; a missing backoff would be hundreds.
        assert 3 <= len(ts) <= 8, f"slot {slot}: {len(ts)} forks in {WINDOW}s"
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        for k, gap in enumerate(gaps[1:], start=2):
            floor = (1 << (k - 2)) / 2 - 0.1    # half of 1, 2, 4 ... s
            assert gap >= floor, f"slot {slot}: respawn {k} after {gap:.2f}s: {gaps}"

    info = [l for _, l in log.lines if "]: debug: " not in l]
    warnings = [l for l in info
                if re.search(rf"warning: worker {re.escape(q)}/\d+ .*"
                             r"respawning with backoff", l)]
    assert len(warnings) == 1 and warning in warnings[0], (
        f"want one warning '{warning}', got {len(warnings)}:\n" + "\n".join(warnings))
    # Nothing else at info level or above repeats it: the cause is told once.
    cause = warnings[0].split(warning, 1)[1].split("; respawning")[0].strip(": ")
    repeats = [l for l in info if cause and cause in l and l != warnings[0]]
    assert not repeats, (f"the cause '{cause}' is logged again outside the "
                         f"warning, {len(repeats)} times:\n" + "\n".join(repeats[:5]))

    assert broker.consumer_count(q) == 0
    d.stop(timeout=15)
    if prepare is prepare_missing:
        # Requeued, neither lost, nor retried, nor parked.
        assert broker.queue_counts(q) == (1, 0)
        assert broker.ready_count(q + ".failed") == 0
        assert broker.ready_count(q + ".retry.10s") == 0
        _, props, body = broker.get(q)
        assert (props.message_id, body) == ("stuck", b"job")


# ---------------------------------------------------------------------------
# the broker goes away


def test_consumption_resumes_after_a_broker_restart(own_broker, daemon, tmp_path):
    b = own_broker
    ensure_running(b)
    results = tmp_path / "results"
    h = write_script(tmp_path / "record.sh", RECORD)
    d = daemon([{"workers": 3, "command": [h, str(results)]}], on=b,
               args=("-d",))
    wait_pool(d, 3)
    b.publish(d.queue, "before", message_id="before")
    wait_for(lambda: len(read_lines(results)) == 1, timeout=20,
             message="a message handled before the restart")

    t0 = time.monotonic()
    b.restart()
    back = time.monotonic()
    b.publish(d.queue, "after", message_id="after")
    wait_for(lambda: len(read_lines(results)) == 2, timeout=60,
             message="the message published after the restart handled")
    resumed = time.monotonic() - back
    wait_pool(d, 3, timeout=60)
    assert [l.split()[1] for l in read_lines(results)] == ["before", "after"]
    wait_for(lambda: b.queue_counts(d.queue) == (0, 0), timeout=10,
             message="an empty queue")
    print(f"\nbroker down and up in {back - t0:.1f}s; "
          f"consumption resumed {resumed:.1f}s later")

    # Bounded retrying during the outage: backoff, not a fork storm, and
    # each cause logged once per change, not once per attempt.
    forks = Counter(re.findall(rf"debug: started worker {re.escape(d.queue)}/(\d+)",
                               d.log()))
    assert all(n <= 12 for n in forks.values()), forks
    warnings = d.count_log(r"warning: worker \S+ .*respawning with backoff")
    assert 1 <= warnings <= 6, d.log()
    assert d.count_log(rf"queue {re.escape(d.queue)}: worker \d consuming again") >= 1
    d.stop()


# ---------------------------------------------------------------------------
# chaos

CHAOS_MESSAGES = 5000
CHAOS_SECONDS = 30
FIGURES = "/tmp/warren-chaos-figures.txt"


def kill_one(rng, pids):
    """SIGKILL one of pids at random: 1 if it was still there to kill."""
    if not pids:
        return 0
    try:
        os.kill(rng.choice(pids), signal.SIGKILL)
        return 1
    except ProcessLookupError:
        return 0


def test_chaos(own_broker, daemon, tmp_path):
    b = own_broker
    ensure_running(b)
    rng = random.Random(os.environ.get("WARREN_CHAOS_SEED"))
    results = tmp_path / "results"
    h = write_script(tmp_path / "chaos.sh", CHAOS)
    d = daemon([{"workers": 8, "command": [h, str(results), "0"],
                 "extra": ["retry { attempts = 1000  delay = 1  backoff = 1.0  max_delay = 1 }"]}],
               on=b)
    q = d.queue
    wait_pool(d, 8)

    # 5,000 persistent messages with ids c-1 ... c-5000, confirmed.
    lines = "".join(f"{i}\n" for i in range(CHAOS_MESSAGES))
    r = subprocess.run([str(SUBMIT), "-u", b.url, "-q", q, "-i", "c", "-l"],
                       input=lines, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ids = {f"c-{i}" for i in range(1, CHAOS_MESSAGES + 1)}

    fig = Counter()
    sizes = [8]
    restart_error = []

    def restart_broker():
        try:
            b.restart()
            fig["broker restarts"] += 1
        except Exception as e:          # reported below
            restart_error.append(e)

    t0 = time.monotonic()
    next_worker_kill = next_handler_kill = t0
    reload_every = CHAOS_SECONDS / 20
    next_reload = t0 + reload_every / 2
    restarter = None
    while True:
        now = time.monotonic()
        if now - t0 >= CHAOS_SECONDS:
            break
        if restarter is None and now - t0 >= 8:
            restarter = threading.Thread(target=restart_broker)
            restarter.start()
        if now >= next_worker_kill:
            next_worker_kill += 0.2
            fig["worker kills"] += kill_one(rng, d.children())
        if now >= next_handler_kill:
            next_handler_kill += 0.3
            fig["handler kills"] += kill_one(rng, handlers_of(d.children()))
        if now >= next_reload and fig["reloads"] < 20:
            next_reload += reload_every
            n = rng.choice([k for k in range(4, 11) if k != sizes[-1]])
            sizes.append(n)
            d.rewrite(workers=n)
            d.reload()
            fig["reloads"] += 1
        assert d.alive(), "warrend died during the chaos"
        time.sleep(max(0.0, min(next_worker_kill, next_handler_kill, next_reload)
                       - time.monotonic()))
    restarter.join(120)
    assert not restart_error, restart_error
    chaos_end = time.monotonic()
    handled_during = len(read_lines(results))

    # Back to calm: a pool of 8 (slots backed off by the kills return within
    # the 60 s backoff ceiling), then everything handled.
    d.rewrite(workers=8)
    d.reload()
    fig["reloads"] += 1
    wait_pool(d, 8, timeout=90)
    recovered = time.monotonic() - chaos_end

    def drained():
        return (ids <= set(read_lines(results))
                and b.queue_counts(q) == (0, 0)
                and (b.queue_counts(q + ".retry.1s") or (0, 0)) == (0, 0))
    wait_for(drained, timeout=300, interval=1,
             message="every id handled, queue and retry queue empty")
    drain_end = time.monotonic()
    wait_for(lambda: not zombies_under(d.pid), timeout=5,
             message="no zombie under the master")

    handled = Counter(read_lines(results))
    lost = ids - set(handled)
    unknown = set(handled) - ids
    duplicates = sum(1 for n in handled.values() if n > 1)
    extra_runs = sum(n - 1 for n in handled.values() if n > 1)
    bound = (fig["worker kills"] + fig["handler kills"] + fig["reloads"]
             + max(sizes) * fig["broker restarts"])
    parked = b.queue_counts(q + ".failed") or (0, 0)
    report = (
        f"chaos figures ({time.strftime('%Y-%m-%d %H:%M:%S')}):\n"
        f"  messages            {CHAOS_MESSAGES}\n"
        f"  chaos seconds       {CHAOS_SECONDS}\n"
        f"  worker kills        {fig['worker kills']}\n"
        f"  handler kills       {fig['handler kills']}\n"
        f"  reloads             {fig['reloads']} (sizes {sizes})\n"
        f"  broker restarts     {fig['broker restarts']}\n"
        f"  handled during chaos {handled_during}\n"
        f"  pool back after     {recovered:.1f}s\n"
        f"  drained after       {drain_end - chaos_end:.1f}s\n"
        f"  handler runs        {sum(handled.values())}\n"
        f"  lost                {len(lost)}\n"
        f"  duplicates          {duplicates} ids ({extra_runs} extra runs; bound {bound})\n"
        f"  parked              {parked[0] + parked[1]}\n"
        f"  retried (log)       {d.count_log(r' retry, ')}\n"
    )
    print("\n" + report)
    with open(FIGURES, "a") as f:
        f.write(report + "\n")

    assert not lost, f"lost {len(lost)}: {sorted(lost)[:20]}"
    assert not unknown, sorted(unknown)[:20]
    assert parked == (0, 0), parked
    assert extra_runs <= bound, f"{extra_runs} extra runs > bound {bound}"
    d.stop(timeout=30)
    assert not zombies_under(d.pid)
