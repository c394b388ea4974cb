"""The master's control socket (SPEC: control_socket, warrenctl status,
pause, resume): what it answers, who may ask, and that no client can stall
the master.

The master is spoken to through a raw socket client (ctl_helpers.ask: one
request line, the JSON answer until EOF), so these tests hold whichever
client is used; where src/warrenctl is built, the same is checked through
it. Every socket lives in a short directory of its own (ctl_helpers.sockdir),
since sun_path is 108 bytes and pytest's tmp_path can be longer.

Handlers here write one JSON line when they start and one when they end
(SLOW), so a test can tell which messages ran, whether a run was cut short
(a start without an end), and whether the broker had delivered the message
before (WARREN_REDELIVERED).
"""

import errno
import json
import os
import re
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("ctl_helpers")

from conftest import (conf_list, conf_string, queue_name_for, read_lines,
                      retry_conf, wait_for, write_script)
from ctl_helpers import (NOBODY, WARRENCTL, Idle, ask, ask_as_nobody, as_nobody,
                         need_warrenctl, queue_of, raw, reload, set_workers,
                         start, status, wait_answers, wait_status,
                         warrenctl, workers_of)


# the sockdir fixture
pytest_plugins = ["ctl_helpers"]

# ---------------------------------------------------------------------------
# helpers

# argv: RUNS GATE. Body "hold": run until the file GATE exists; "fail":
# exit 3; a number: sleep that long; anything else: succeed at once.
SLOW = r"""#!/usr/bin/python3
import json, os, sys, time
RUNS, GATE = sys.argv[1], sys.argv[2]
BODY = sys.stdin.buffer.read().decode()
def note(what):
    line = json.dumps({"what": what, "mid": os.environ.get("WARREN_MESSAGE_ID"),
                       "worker": os.environ.get("WARREN_WORKER"),
                       "redelivered": os.environ.get("WARREN_REDELIVERED"),
                       "pid": os.getpid(), "t": time.monotonic()})
    fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\n").encode())
    os.close(fd)
note("start")
if BODY == "hold":
    while not os.path.exists(GATE):
        time.sleep(0.02)
elif BODY == "fail":
    note("end")
    sys.exit(3)
else:
    try:
        time.sleep(float(BODY))
    except ValueError:
        pass
note("end")
"""


class Runs:
    """The SLOW handler of a test, its record and its gate."""

    def __init__(self, tmp_path):
        self.file = tmp_path / "runs.jsonl"
        self.gate = tmp_path / "gate"
        self.command = [write_script(tmp_path / "slow.py", SLOW),
                        str(self.file), str(self.gate)]

    def all(self):
        return [json.loads(l) for l in read_lines(self.file)]

    def started(self):
        return [r for r in self.all() if r["what"] == "start"]

    def ended(self):
        return [r for r in self.all() if r["what"] == "end"]

    def release(self):
        self.gate.write_text("go\n")


@pytest.fixture
def runs(tmp_path):
    return Runs(tmp_path)


NODE = re.compile(r"^(127\.0\.0\.1|localhost):(\d+)$")


def publish_ids(broker, queue, bodies, prefix):
    """Publish one message per body, ids PREFIX-0, PREFIX-1, ...; the ids."""
    ids = [f"{prefix}-{i}" for i in range(len(bodies))]
    broker.publish_many(queue, [(b, None, i, {}) for b, i in zip(bodies, ids)])
    return ids


def assert_stays(what, predicate, seconds):
    """predicate() holds at every look for `seconds` (a negative can only
    be watched for a while)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# status


def test_status_tells_each_worker_and_queue(warrend, broker, sockdir, runs):
    """pid, config, each worker's number, real pid, state, node, counts;
    the queue's totals; warrenctl status says the same."""
    w = start(warrend, sockdir, runs.command, workers=3)
    w.wait_consuming(3)
    st = wait_status(w, lambda s: s["ready"] and queue_of(s, w.queue)["idle"] == 3,
                     message="3 idle workers, ready")
    assert st["pid"] == w.pid
    assert st["config"] == str(w.conf)
    assert st["stopping"] is False
    q = queue_of(st, w.queue)
    # the backlog as a worker saw it: none yet, or an empty queue
    assert q.pop("ready") in (None, 0), q
    assert q == {"name": w.queue, "workers": 3, "paused": False, "starting": 0,
                 "idle": 3, "busy": 0, "paused_workers": 0, "down": 0,
                 "acked": 0, "retried": 0, "failed": 0, "requeued": 0,
                 "restarts": 0, "cpu_seconds": 0.0, "last_error": None,
                 "breaker": None, "breaker_seconds_left": None,
                 "breaker_openings": 0,
                 "max_workers": 3, "target": 3, "scaling": "fixed at 3",
                 "restarting": False}
    ws = workers_of(st, w.queue)
    assert [x["number"] for x in ws] == [1, 2, 3]
    assert sorted(x["pid"] for x in ws) == w.children(), \
        "status pids are not warrend's children"
    for x in ws:
        assert x["state"] == "idle" and x["retiring"] is False
        assert x["message_id"] is None and x["busy_ms"] is None
        assert (x["acked"], x["retried"], x["failed"], x["requeued"]) == (0, 0, 0, 0)
        m = NODE.match(x["node"] or "")
        assert m and int(m.group(2)) == broker.port, x["node"]

    if not WARRENCTL.exists():
        return  # the table is checked where warrenctl is built
    r = warrenctl("-s", w.sock, "status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"warrend {w.pid} ({w.conf})")
    rows = [l.split() for l in lines if l.startswith(w.queue + " ")]
    assert [(c[1], c[2], c[3]) for c in rows] == \
        [(str(x["number"]), str(x["pid"]), "idle") for x in ws]
    assert any(l.startswith(f"queue {w.queue}: running, 3 workers") for l in lines), lines
    # -c FILE: the socket is the configuration's control_socket
    r = warrenctl("-c", w.conf, "status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pid"] == w.pid


def test_busy_worker_shows_its_message_and_for_how_long(warrend, broker, sockdir, runs):
    w = start(warrend, sockdir, runs.command, workers=2)
    w.wait_consuming(2)
    broker.publish(w.queue, "hold", message_id="busy-1")
    wait_for(lambda: runs.started(), 20, message="the handler's start")

    def busy_one(s):
        b = [x for x in workers_of(s, w.queue) if x["state"] == "busy"]
        return len(b) == 1 and b[0]["message_id"] == "busy-1"

    st1 = wait_status(w, busy_one, message="a busy worker holding busy-1")
    b1 = [x for x in workers_of(st1, w.queue) if x["state"] == "busy"][0]
    assert isinstance(b1["busy_ms"], int) and b1["busy_ms"] >= 0
    assert b1["pid"] in w.children()
    q = queue_of(st1, w.queue)
    assert (q["busy"], q["idle"]) == (1, 1)
    other = [x for x in workers_of(st1, w.queue) if x["number"] != b1["number"]][0]
    assert other["message_id"] is None and other["busy_ms"] is None

    def grown(s):
        x = [x for x in workers_of(s, w.queue) if x["number"] == b1["number"]][0]
        return x["state"] == "busy" and x["busy_ms"] >= b1["busy_ms"] + 500
    wait_status(w, grown, timeout=10, message="busy_ms growing by 0.5 s")

    if WARRENCTL.exists():
        r = warrenctl("-s", w.sock, "status")
        assert r.returncode == 0, r.stderr
        row = [l.split() for l in r.stdout.splitlines()
               if l.split()[:2] == [w.queue, str(b1["number"])]]
        assert row and row[0][3:5] == ["busy", "busy-1"], r.stdout
        assert re.match(r"^\d+(\.\d)?s$|^\d+m", row[0][5]), row[0]

    runs.release()
    st = wait_status(w, lambda s: queue_of(s, w.queue)["acked"] == 1
                     and queue_of(s, w.queue)["idle"] == 2, message="acked, idle")
    x = [x for x in workers_of(st, w.queue) if x["number"] == b1["number"]][0]
    assert x["message_id"] is None and x["busy_ms"] is None and x["acked"] == 1

    # a message without an id: busy, for a while, with no id to show
    runs.gate.unlink()
    broker.publish(w.queue, "hold")
    st = wait_status(w, lambda s: queue_of(s, w.queue)["busy"] == 1, message="busy again")
    x = [x for x in workers_of(st, w.queue) if x["state"] == "busy"][0]
    assert x["message_id"] is None and isinstance(x["busy_ms"], int), x
    runs.release()


def test_counts_after_acks_and_failures(warrend, broker, sockdir, runs):
    """20 acked and 3 failed for good (attempts = 1, parked): the queue's
    totals and the sum of its workers' counts say exactly that."""
    w = start(warrend, sockdir, runs.command, workers=2,
              queue_extra=retry_conf(attempts=1))
    w.wait_consuming(2)
    publish_ids(broker, w.queue, ["ok"] * 20 + ["fail"] * 3, "c")
    st = wait_status(w, lambda s: queue_of(s, w.queue)["acked"]
                     + queue_of(s, w.queue)["failed"] >= 23, timeout=60,
                     message="23 settled")
    q = queue_of(st, w.queue)
    assert (q["acked"], q["retried"], q["failed"], q["requeued"]) == (20, 0, 3, 0), q
    ws = workers_of(st, w.queue)
    assert sum(x["acked"] for x in ws) == 20
    assert sum(x["failed"] for x in ws) == 3
    assert sum(x["retried"] + x["requeued"] for x in ws) == 0
    wait_for(lambda: broker.ready_count(w.queue + ".failed") == 3, 10,
             message="3 parked")
    assert len(runs.ended()) == 23


# ---------------------------------------------------------------------------
# pause and resume


def test_pause_lets_handlers_finish_and_takes_nothing_new(warrend, broker, sockdir, runs):
    w = start(warrend, sockdir, runs.command, workers=2)
    w.wait_consuming(2)
    pids = w.children()
    first = publish_ids(broker, w.queue, ["hold", "hold"], "first")
    wait_for(lambda: len(runs.started()) == 2, 20, message="2 handlers running")

    assert ask(w.sock, f"pause {w.queue}") == {"ok": True, "queue": w.queue,
                                                "paused": True}
    # the consumers go at once, while both handlers still run
    wait_for(lambda: broker.consumer_count(w.queue) == 0, 10,
             message="no consumer on the paused queue")
    st = wait_status(w, lambda s: queue_of(s, w.queue)["busy"] == 2,
                     message="2 busy workers")
    q = queue_of(st, w.queue)
    assert q["paused"] is True and q["busy"] == 2, q
    assert sorted(x["message_id"] for x in workers_of(st, w.queue)) == first

    later = publish_ids(broker, w.queue, ["0"] * 4, "later")
    runs.release()
    st = wait_status(w, lambda s: queue_of(s, w.queue)["acked"] == 2
                     and queue_of(s, w.queue)["paused_workers"] == 2,
                     message="both acked, both workers paused")
    assert [x["state"] for x in workers_of(st, w.queue)] == ["paused", "paused"]
    assert all(x["message_id"] is None for x in workers_of(st, w.queue))
    # not interrupted: each run that started ended, and was acked
    assert sorted(r["mid"] for r in runs.ended()) == first
    # paused workers stay: same processes, still connected to the broker
    assert w.children() == pids
    assert all(x["node"] for x in workers_of(st, w.queue))
    # nothing new is taken: no consumer, the 4 stay ready, no handler starts
    assert_stays("paused: 0 consumers, 4 ready, 2 runs",
                 lambda: broker.consumer_count(w.queue) == 0
                 and broker.ready_count(w.queue) == 4
                 and len(runs.started()) == 2, 3)
    # pausing again is fine and changes nothing
    assert ask(w.sock, f"pause {w.queue}")["paused"] is True

    assert ask(w.sock, f"resume {w.queue}") == {"ok": True, "queue": w.queue,
                                                 "paused": False}
    w.wait_consuming(2)
    wait_for(lambda: len(runs.ended()) == 6, 20, message="the 4 later ones handled")
    later_runs = [r for r in runs.started() if r["mid"] in later]
    assert sorted(r["mid"] for r in later_runs) == later
    # never delivered while paused (a give-back would mark them redelivered)
    assert all(r["redelivered"] == "0" for r in later_runs), later_runs
    st = wait_status(w, lambda s: queue_of(s, w.queue)["acked"] == 6,
                     message="6 acked")
    q = queue_of(st, w.queue)
    assert q["paused"] is False and q["requeued"] == 0 and q["idle"] == 2, q
    assert w.children() == pids
    assert broker.ready_count(w.queue) == 0


def test_pause_survives_reload_and_new_workers_start_paused(warrend, broker, sockdir, runs):
    w = start(warrend, sockdir, runs.command, workers=2)
    w.wait_consuming(2)
    assert ask(w.sock, f"pause {w.queue}")["ok"] is True
    wait_status(w, lambda s: queue_of(s, w.queue)["paused_workers"] == 2,
                message="2 paused workers")
    w.wait_consuming(0)
    publish_ids(broker, w.queue, ["0"], "held")

    # a reload with nothing changed keeps the pause
    reload(w)
    st = status(w.sock)
    assert queue_of(st, w.queue)["paused"] is True
    assert [x["state"] for x in workers_of(st, w.queue)] == ["paused", "paused"]

    # one more worker: it starts paused
    set_workers(w, 3)
    reload(w)
    st = wait_status(w, lambda s: len(workers_of(s, w.queue)) == 3
                     and all(x["state"] == "paused" for x in workers_of(s, w.queue)),
                     message="3 paused workers after the reload")
    assert queue_of(st, w.queue)["paused"] is True
    assert sorted(x["pid"] for x in workers_of(st, w.queue)) == w.wait_children(3)

    # another change to the queue rolls its workers: the new ones start paused
    old_pids = {x["pid"] for x in workers_of(st, w.queue)}
    text = Path(w.conf).read_text()
    Path(w.conf).write_text(text.replace(f'"{runs.gate}"}}', f'"{runs.gate}", "rolled"}}'))
    assert Path(w.conf).read_text() != text
    reload(w)
    # logged just after "reloading", which reload() waited for
    wait_for(lambda: "rolling its workers" in w.log(), 10,
             message="the roll in warrend's log")
    st = wait_status(w, lambda s: len(workers_of(s, w.queue)) == 3
                     and all(x["state"] == "paused" and x["pid"] not in old_pids
                             and not x["retiring"] for x in workers_of(s, w.queue)),
                     message="3 new workers, paused, after the roll")
    assert queue_of(st, w.queue)["paused"] is True
    assert broker.consumer_count(w.queue) == 0

    # a worker that dies while paused comes back paused
    victim = workers_of(st, w.queue)[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    st = wait_status(w, lambda s: all(x["state"] == "paused" and x["pid"] not in (0, victim)
                                      for x in workers_of(s, w.queue)),
                     message="the respawned worker paused")
    assert_stays("paused after reloads and a respawn: 0 consumers, 1 ready, no run",
                 lambda: broker.consumer_count(w.queue) == 0
                 and broker.ready_count(w.queue) == 1 and not runs.started(), 2)

    assert ask(w.sock, f"resume {w.queue}")["paused"] is False
    w.wait_consuming(3)
    wait_for(lambda: len(runs.ended()) == 1, 20, message="the held message handled")
    wait_status(w, lambda s: queue_of(s, w.queue)["idle"] == 3, message="3 idle")


def test_pause_gives_back_prefetched_messages(warrend, broker, sockdir, runs):
    """prefetch = 3: what the broker had already pushed to a paused
    worker goes back to the queue, not to a handler."""
    w = start(warrend, sockdir, runs.command, workers=1, queue_extra="    prefetch = 3")
    w.wait_consuming(1)
    publish_ids(broker, w.queue, ["hold", "0", "0"], "pf")
    wait_for(lambda: len(runs.started()) == 1, 20, message="the first handler running")
    assert ask(w.sock, f"pause {w.queue}")["paused"] is True
    w.wait_consuming(0)
    runs.release()
    wait_status(w, lambda s: queue_of(s, w.queue)["acked"] == 1
                and queue_of(s, w.queue)["paused_workers"] == 1, message="acked, paused")
    wait_for(lambda: broker.ready_count(w.queue) == 2, 10,
             message="the 2 prefetched ones back in the queue")
    assert_stays("paused: 2 ready, 1 run", lambda: broker.ready_count(w.queue) == 2
                 and len(runs.started()) == 1, 2)
    assert ask(w.sock, f"resume {w.queue}")["paused"] is False
    wait_for(lambda: len(runs.ended()) == 3, 20, message="all 3 handled")
    assert [r["mid"] for r in runs.started()] == ["pf-0", "pf-1", "pf-2"]


def test_pause_is_per_queue(warrend, broker, sockdir, runs):
    other = queue_name_for("test_pause_is_per_queue.other")
    section = "\n".join([f"queue {conf_string(other)} {{", "    workers = 1",
                         f"    command = {conf_list(runs.command)}", "}"])
    w = start(warrend, sockdir, runs.command, extra=section)
    w.queues.append(other)  # deleted at teardown too
    w.wait_consuming(1)
    w.wait_consuming(1, queue=other)
    assert ask(w.sock, f"pause {w.queue}")["paused"] is True
    w.wait_consuming(0)
    publish_ids(broker, w.queue, ["0"], "a")
    publish_ids(broker, other, ["0"], "b")
    wait_for(lambda: [r for r in runs.ended() if r["mid"] == "b-0"], 10,
             message="the other queue's message handled")
    # the master reads reports in batches (20 ms): the end of a handler
    # is seen in its file a moment before the worker shows idle
    st = wait_status(w, lambda s: [x["state"] for x in workers_of(s, other)]
                     == ["idle"], message="the other queue's worker idle")
    assert queue_of(st, w.queue)["paused"] is True
    assert queue_of(st, other)["paused"] is False
    assert broker.consumer_count(other) == 1 and broker.ready_count(w.queue) == 1
    assert not [r for r in runs.started() if r["mid"] == "a-0"]
    assert ask(w.sock, f"resume {w.queue}")["paused"] is False
    wait_for(lambda: [r for r in runs.ended() if r["mid"] == "a-0"], 10,
             message="the paused queue's message handled after resume")


def test_pause_and_resume_in_quick_succession(warrend, broker, sockdir, runs):
    """20 pause/resume pairs while messages flow: in the end exactly one
    consumer per worker (none doubled), every message handled once."""
    w = start(warrend, sockdir, runs.command, workers=2)
    w.wait_consuming(2)
    ids = publish_ids(broker, w.queue, ["0.05"] * 30, "q")
    for _ in range(20):
        assert ask(w.sock, f"pause {w.queue}")["paused"] is True
        assert ask(w.sock, f"resume {w.queue}")["paused"] is False
    wait_for(lambda: len(runs.ended()) >= 30, 30, message="30 handled")
    w.wait_consuming(2)
    assert_stays("2 consumers", lambda: broker.consumer_count(w.queue) == 2, 1)
    assert sorted(r["mid"] for r in runs.ended()) == sorted(ids)
    st = wait_status(w, lambda s: queue_of(s, w.queue)["idle"] == 2, message="2 idle")
    assert queue_of(st, w.queue)["acked"] == 30
    # and ending on a pause: none
    for _ in range(5):
        ask(w.sock, f"resume {w.queue}")
        ask(w.sock, f"pause {w.queue}")
    w.wait_consuming(0)
    wait_status(w, lambda s: queue_of(s, w.queue)["paused_workers"] == 2,
                message="2 paused")
    assert_stays("0 consumers", lambda: broker.consumer_count(w.queue) == 0, 1)


def test_stop_while_paused(warrend, broker, sockdir, runs):
    """SIGTERM of a paused warrend: a clean, prompt stop; the socket goes."""
    w = start(warrend, sockdir, runs.command, workers=2)
    w.wait_consuming(2)
    assert ask(w.sock, f"pause {w.queue}")["paused"] is True
    wait_status(w, lambda s: queue_of(s, w.queue)["paused_workers"] == 2,
                message="2 paused workers")
    t0 = time.monotonic()
    w.stop(timeout=15)
    assert time.monotonic() - t0 < 8, "a paused warrend was slow to stop"
    assert not os.path.exists(w.sock)


def test_status_of_workers_that_cannot_start(warrend, broker, sockdir, runs):
    """A queue the workers cannot declare (it exists, not durable): they
    are seen down or starting, the queue has restarts and a last error;
    once the queue is gone they consume and the queue shows them idle."""
    conn = broker.connect()
    try:
        q = "t.test_status_of_workers_that_cannot_start"
        conn.channel().queue_declare(q, durable=False)
    finally:
        conn.close()
    w = start(warrend, sockdir, runs.command, workers=2, queue=q)
    wait_answers(w)
    seen = {}

    def down_seen(s):
        for x in workers_of(s, q):
            seen.setdefault(x["state"], x)
        return "down" in seen and queue_of(s, q)["restarts"] >= 1 \
            and queue_of(s, q)["last_error"]
    st = wait_status(w, down_seen, timeout=30, message="a worker down, restarts, an error")
    down = seen["down"]
    assert down["pid"] == 0 and down["node"] is None and down["message_id"] is None, down
    assert "idle" not in seen and "busy" not in seen, seen
    assert isinstance(queue_of(st, q)["last_error"], str)
    broker.delete_queue(q)
    w.wait_consuming(2, timeout=60)
    wait_status(w, lambda s: queue_of(s, q)["idle"] == 2, timeout=10, message="2 idle")


def test_warrenctl_pause_and_resume(warrend, broker, sockdir, runs):
    need_warrenctl()
    w = start(warrend, sockdir, runs.command, workers=1)
    w.wait_consuming(1)
    r = warrenctl("-s", w.sock, "pause", w.queue)
    assert (r.returncode, r.stdout) == (0, f"queue {w.queue} paused\n"), r.stderr
    w.wait_consuming(0)
    r = warrenctl("-s", w.sock, "status")
    assert r.returncode == 0
    assert any(l.startswith(f"queue {w.queue}: paused") for l in r.stdout.splitlines()), r.stdout
    r = warrenctl("-c", w.conf, "resume", w.queue)
    assert (r.returncode, r.stdout) == (0, f"queue {w.queue} resumed\n"), r.stderr
    w.wait_consuming(1)
    r = warrenctl("-s", w.sock, "pause", "no.such.queue")
    assert r.returncode == 1 and "no such queue: no.such.queue" in r.stderr


# ---------------------------------------------------------------------------
# who may ask


def test_socket_mode_owner_and_other_users(warrend, broker, sockdir, runs):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as nobody")
    w = start(warrend, sockdir, runs.command)
    wait_answers(w)
    st = os.stat(w.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_uid == os.geteuid()

    # 0660, root's: another user may not even connect
    assert ask_as_nobody(w.sock, "status") == {"errno": errno.EACCES}
    # let everyone connect: the master still refuses by the peer's uid
    os.chmod(w.sock, 0o666)
    got = ask_as_nobody(w.sock, f"pause {w.queue}")
    answer = json.loads(got["answer"])
    assert answer["ok"] is False and "permission denied" in answer["error"], answer
    assert str(NOBODY) in answer["error"]
    got = ask_as_nobody(w.sock, "status")
    assert json.loads(got["answer"])["ok"] is False
    # the refused pause did nothing
    assert queue_of(status(w.sock), w.queue)["paused"] is False
    w.wait_consuming(1)

    if WARRENCTL.exists():
        r = warrenctl("-s", w.sock, "status", preexec_fn=as_nobody)
        assert r.returncode == 1 and "permission denied" in r.stderr, r.stderr



# ---------------------------------------------------------------------------
# clients that could stall the master


def test_silent_and_garbage_clients_do_not_stall(warrend, broker, sockdir, runs):
    w = start(warrend, sockdir, runs.command)
    w.wait_consuming(1)
    wait_answers(w)
    silent = Idle(w.sock)

    garbage_answer = {}

    def send_garbage():
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(15)
        s.connect(w.sock)
        try:
            try:
                s.sendall(b"x" * (1 << 20))
            except (BrokenPipeError, ConnectionResetError):
                garbage_answer["send"] = "closed"
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                out += chunk
            garbage_answer["data"] = out
        except socket.timeout:
            garbage_answer["data"] = "timeout"
        finally:
            s.close()

    t = threading.Thread(target=send_garbage, daemon=True)
    t.start()
    # meanwhile: status from another client answers, and a message flows
    t0 = time.monotonic()
    assert status(w.sock)["pid"] == w.pid
    broker.publish(w.queue, "quick", message_id="flows")
    wait_for(lambda: [r for r in runs.ended() if r["mid"] == "flows"], 10,
             message="the message handled while the clients hang on")
    wait_status(w, lambda s: queue_of(s, w.queue)["acked"] == 1, timeout=5,
                message="acked")
    assert time.monotonic() - t0 < 4.5, "the master waited for a client"
    t.join(20)
    assert not t.is_alive(), "the garbage client was never answered nor closed"
    data = garbage_answer["data"]
    assert data != "timeout", "the garbage client was left hanging"
    if data:
        assert json.loads(data) == {"ok": False, "error": "request too long"}
    # the silent one is dropped at the server's 5 s
    wait_for(silent.poll, 10, message="the silent client dropped")
    took = silent.closed_at - silent.t0
    silent.close()
    assert 4.0 <= took <= 8.0, f"silent client dropped after {took:.1f}s"
    assert silent.data == b""


def test_seventy_idle_clients(warrend, broker, sockdir, runs):
    """More idle clients than the master takes (64): the extra ones are
    closed at once, the master goes on, and all are dropped at 5 s."""
    w = start(warrend, sockdir, runs.command)
    w.wait_consuming(1)
    wait_answers(w)
    idle = []
    try:
        for _ in range(70):
            idle.append(Idle(w.sock))
        t0 = time.monotonic()
        # at most 64 held: the others are closed at once
        wait_for(lambda: sum(c.poll() for c in idle) >= 6, 3,
                 message="the clients past 64 closed at once")
        # one more, while 64 are held: closed at once, not made to wait
        t1 = time.monotonic()
        try:
            extra = raw(w.sock, b"status\n", timeout=3)
        except (ConnectionResetError, BrokenPipeError):
            extra = b""
        # closed with a word, or reset before it could be read
        assert extra in (b"", b'{"ok":false,"error":"too many clients"}\n') \
            and time.monotonic() - t1 < 1.5, extra[:200]
        if WARRENCTL.exists():
            r = warrenctl("-s", w.sock, "status", timeout=20)
            extra_ctl = (r.returncode, r.stderr)
            assert r.returncode == 1, extra_ctl
            assert "too many clients" in r.stderr or "reset" in r.stderr \
                or "pipe" in r.stderr, extra_ctl
        broker.publish(w.queue, "quick", message_id="flows")
        wait_for(lambda: [r for r in runs.ended() if r["mid"] == "flows"], 10,
                 message="the message handled while 64 clients hang on")
        assert time.monotonic() - t0 < 4, "the message waited for the idle clients"
        # all 70 dropped after the timeout; then status answers again
        wait_for(lambda: all(c.poll() for c in idle), 12,
                 message="every idle client dropped")
        held = [c.closed_at - c.t0 for c in idle if c.closed_at - t0 > 2]
        assert len(held) >= 50, f"only {len(held)} clients were held at all"
        assert all(4.0 <= h <= 9.0 for h in held), sorted(held)
        st = wait_status(w, lambda s: queue_of(s, w.queue)["acked"] == 1,
                         timeout=5, message="status answering, 1 acked")
        assert st["pid"] == w.pid
    finally:
        for c in idle:
            c.close()


def test_bad_requests(warrend, broker, sockdir, runs):
    w = start(warrend, sockdir, runs.command)
    wait_answers(w)
    a = ask(w.sock, "frobnicate now")
    assert a["ok"] is False and a["error"].startswith("unknown request"), a
    a = ask(w.sock, "")
    assert a["ok"] is False and a["error"].startswith("unknown request"), a
    for cmd in ("pause", "resume"):
        a = ask(w.sock, f"{cmd} no.such.queue")
        assert a == {"ok": False, "error": "no such queue: no.such.queue"}, a
    # a line past the limit (4096 bytes)
    out = raw(w.sock, b"y" * 5000 + b"\n")
    assert json.loads(out) == {"ok": False, "error": "request too long"}
    # the request is one line: what follows it is not read as another
    out = raw(w.sock, b"status\npause " + w.queue.encode() + b"\n")
    assert json.loads(out)["ok"] is True and out.count(b"\n") == 1
    assert queue_of(status(w.sock), w.queue)["paused"] is False
    # a line ending in CRLF is the same request
    assert json.loads(raw(w.sock, b"status\r\n"))["pid"] == w.pid
    # a client that goes away before the answer harms nothing
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(w.sock)
        s.sendall(b"status\n")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(w.sock)
        s.sendall(b"sta")
    assert status(w.sock)["pid"] == w.pid
    assert w.alive()


# ---------------------------------------------------------------------------
# where the socket is, and when it cannot be


def test_empty_control_socket_turns_it_off(warrend, broker, sockdir, runs):
    default = Path("/run/warren/warrend.sock")
    existed = default.exists()
    w = start(warrend, sockdir, runs.command, sock="")
    w.wait_consuming(1)
    assert list(sockdir.iterdir()) == []
    assert default.exists() == existed
    assert "control socket" not in w.log(), w.log()
    w.stop()


def test_socket_in_a_missing_directory(warrend, broker, sockdir, runs):
    """warrend runs without it and says why once; made, the directory is
    used at the next reload."""
    path = sockdir / "no" / "w.sock"
    w = start(warrend, sockdir, runs.command, sock="no/w.sock")
    w.wait_consuming(1)
    broker.publish(w.queue, "quick", message_id="flows")
    wait_for(lambda: runs.ended(), 10, message="a message handled without the socket")

    def said():
        return [l for l in w.log().splitlines() if "control socket" in l]
    lines = wait_for(said, 10, message="why, in the log")
    assert str(path) in lines[0], lines
    assert "running without it" in lines[0] and "No such file" in lines[0], lines
    assert_stays("said once", lambda: len(said()) == 1, 2)
    assert not path.exists()

    path.parent.mkdir()
    reload(w)
    wait_answers(w, timeout=10)
    assert status(w.sock)["pid"] == w.pid
    w.stop()


def test_stale_socket_file_is_replaced(warrend, broker, sockdir, runs):
    path = sockdir / "w.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # a socket file nobody answers on, as a killed warrend leaves
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    with pytest.raises(ConnectionRefusedError):
        ask(path, "status")
    w = start(warrend, sockdir, runs.command)
    wait_answers(w)
    assert status(w.sock)["pid"] == w.pid
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert "control socket" not in w.log()
    w.stop()
    assert not path.exists(), "a clean stop leaves the socket file behind"


def test_second_warrend_on_a_live_socket(warrend, broker, sockdir, runs):
    first = start(warrend, sockdir, runs.command)
    wait_answers(first)
    second = start(warrend, sockdir, runs.command)
    second.wait_consuming(1)

    def said():
        return [l for l in second.log().splitlines() if "control socket" in l]
    lines = wait_for(said, 10, message="the second warrend saying why")
    assert len(lines) == 1, lines
    assert f"a live warrend already answers at {first.sock}" in lines[0], lines
    assert status(first.sock)["pid"] == first.pid
    second.stop()
    # the second one's stop does not take the first one's socket
    assert status(first.sock)["pid"] == first.pid
    assert "control socket" not in first.log()


def test_reload_moves_the_socket(warrend, broker, sockdir, runs):
    w = start(warrend, sockdir, runs.command)
    wait_answers(w)
    old = Path(w.sock)
    new = sockdir / "moved.sock"
    text = Path(w.conf).read_text()
    Path(w.conf).write_text(text.replace(str(old), str(new)))
    reload(w)
    w.sock = str(new)
    wait_answers(w, timeout=10)
    assert status(w.sock)["pid"] == w.pid
    assert not old.exists(), "the old socket file stays after the move"
    w.stop()
    assert not new.exists()


def test_queue_name_that_needs_escaping(warrend, broker, sockdir, runs):
    """A queue name with a quote, a backslash, a space and UTF-8: valid
    JSON, the name as it is, and pause/resume by that name."""
    q = 't.esc "quoted" back\\slash tâche'
    w = start(warrend, sockdir, runs.command, queue=q)
    w.wait_consuming(1)
    st = status(w.sock)
    assert [x["name"] for x in st["queues"]] == [q]
    assert workers_of(st, q)[0]["queue"] == q
    assert ask(w.sock, f"pause {q}") == {"ok": True, "queue": q, "paused": True}
    w.wait_consuming(0)
    assert ask(w.sock, f"resume {q}")["paused"] is False
    w.wait_consuming(1)
    mid = 'id "with" \\ quotes,\ta tab and ünicode'
    broker.publish(q, "hold", message_id=mid)
    wait_status(w, lambda s: workers_of(s, q)[0]["message_id"] == mid,
                message="the busy worker's message id, as it is")
    runs.release()
    wait_status(w, lambda s: queue_of(s, q)["acked"] == 1, message="acked")


def socket_inodes_of(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def listening_inodes(sock_path, tcp_port):
    """Inodes of the unix socket bound at sock_path and of the TCP socket
    listening on tcp_port."""
    unix = {int(l.split()[6]) for l in Path("/proc/net/unix").read_text().splitlines()[1:]
            if len(l.split()) >= 8 and l.split()[7] == sock_path}
    tcp = {int(l.split()[9]) for l in Path("/proc/net/tcp").read_text().splitlines()[1:]
           if l.split()[3] == "0A" and int(l.split()[1].split(":")[1], 16) == tcp_port}
    return unix, tcp


def test_listeners_stay_in_the_master(warrend, broker, sockdir, handlers, tmp_path):
    """Neither workers nor handlers hold the control socket or the metrics
    listener; a handler still has fds 0, 1 and 2 only."""
    from conftest import free_port
    port = free_port()
    out = tmp_path / "dump"
    out.mkdir()
    w = start(warrend, sockdir, [handlers.dumper(out), str(out)], workers=2,
              metrics=f"127.0.0.1:{port}")
    w.wait_consuming(2)
    wait_answers(w)
    unix, tcp = listening_inodes(w.sock, port)
    assert len(unix) == 1 and len(tcp) == 1, (unix, tcp)
    assert unix | tcp <= socket_inodes_of(w.pid)
    for pid in w.children():
        assert not (unix | tcp) & socket_inodes_of(pid), f"worker {pid} holds a listener"
    broker.publish(w.queue, "x", message_id="fds")
    dump = wait_for(lambda: (out / "fds.json").exists() and
                    json.loads((out / "fds.json").read_text()), 10,
                    message="the handler's dump")
    assert sorted(int(fd) for fd in dump["fds"]) == [0, 1, 2], dump["fds"]
