"""Elastic pools, warrenctl scale and restart (issue 18; SPEC: queue.max_workers,
queue.idle_timeout, warrenctl scale/restart, warren_pool_target,
warren_queue_messages).

A pool with max_workers above workers grows while all its workers are busy
and messages wait (one worker watches the ready count with a passive
queue.declare and tells the master), and retires extra workers that stay
idle idle_timeout: never a busy one, so no message is given back. Every
handler here appends one line per run, with the message's redelivered flag,
so "each handled once, never redelivered" is counted, not assumed.
"""

import threading
import time
import uuid

from conftest import read_lines, wait_for, write_script
from ctl_helpers import (ask, need_warrenctl, queue_of, reload, sockdir,  # noqa: F401
                         start, status, wait_answers, wait_status, warrenctl,
                         workers_of)

# Sleeps for the body's seconds; appends "ID REDELIVERED WORKER_PID START
# END" (sh and coreutils: cheaper than an interpreter, 200 times a test).
HANDLER = r"""
#!/bin/sh
body=$(cat)
t0=$(date +%s.%N)
sleep "$body"
printf '%s %s %s %s %s\n' "${WARREN_MESSAGE_ID:--}" "${WARREN_REDELIVERED:-?}" \
    "$PPID" "$t0" "$(date +%s.%N)" >>"$1"
"""


def sleeper(tmp_path):
    results = tmp_path / "runs.txt"
    return [write_script(tmp_path / "sleep.sh", HANDLER), str(results)], results


def runs(results):
    """One dict per handler run."""
    out = []
    for line in read_lines(results):
        mid, redelivered, pid, t0, t1 = line.split()
        out.append({"id": mid, "redelivered": redelivered, "pid": int(pid),
                    "start": float(t0), "end": float(t1)})
    return out


def publish(broker, queue, seconds, n, prefix):
    ids = [f"{prefix}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    broker.publish_many(queue, [(str(seconds), None, i, {}) for i in ids])
    return ids


def once_each(results, ids):
    """Every id handled exactly once and never redelivered."""
    rs = [r for r in runs(results) if r["id"] in set(ids)]
    seen = [r["id"] for r in rs]
    assert sorted(seen) == sorted(ids), \
        f"{len(seen)} runs for {len(ids)} messages; duplicates: " \
        f"{sorted({i for i in seen if seen.count(i) > 1})[:5]}"
    assert all(r["redelivered"] == "0" for r in rs), \
        [r for r in rs if r["redelivered"] != "0"][:3]
    return rs


def active(st, queue):
    """Workers of queue not retiring."""
    return [w for w in workers_of(st, queue) if not w["retiring"]]


def metric(text, name, queue):
    for line in text.splitlines():
        if line.startswith(f'{name}{{queue="{queue}"}} '):
            return float(line.split()[-1])
    return None


class Sampler:
    """Polls status and metrics in the background: the most workers seen,
    the ready counts the master reported, the fewest consuming."""

    def __init__(self, w, queue):
        self.w, self.queue = w, queue
        self.most = 0
        self.fewest_consuming = None
        self.ready = []
        self.pids = set()
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.wait(0.1):
            try:
                st = status(self.w.sock)
                text = ask(self.w.sock, "metrics")["text"]
            except (OSError, ValueError, AssertionError):
                continue
            ws = workers_of(st, self.queue)
            self.most = max(self.most, len(self.w.children()), len(ws))
            cons = [x for x in ws if not x["retiring"]
                    and x["state"] in ("idle", "busy")]
            self.pids.update(x["pid"] for x in ws if x["pid"])
            if self.fewest_consuming is None or len(cons) < self.fewest_consuming:
                self.fewest_consuming = len(cons)
            r = metric(text, "warren_queue_messages", self.queue)
            if r is not None:
                self.ready.append(r)

    def done(self):
        self.stop.set()
        self.t.join(5)


def test_burst_grows_drains_and_shrinks_back(warrend, broker, tmp_path, sockdir):
    """workers = 2, max_workers = 16, idle_timeout = 5: 200 messages of 1 s
    drain within 25 s (a static 2 needs 100 s), never more than 16 workers,
    back to 2 within idle_timeout + 10 s of the last message, none
    redelivered; warren_queue_messages falls as the burst drains."""
    cmd, results = sleeper(tmp_path)
    w = start(warrend, sockdir, cmd, workers=2,
              queue_extra="    max_workers = 16\n    idle_timeout = 5")
    wait_status(w, lambda st: len([x for x in active(st, w.queue)
                                   if x["state"] == "idle"]) == 2,
                message="2 idle workers")
    q = queue_of(status(w.sock), w.queue)
    assert (q["workers"], q["max_workers"]) == (2, 16)
    sampler = Sampler(w, w.queue)
    try:
        t0 = time.time()
        ids = publish(broker, w.queue, 1, 200, "burst")
        st = wait_status(
            w, lambda st: queue_of(st, w.queue)["scaling"].startswith(
                "scaling up"), timeout=10, message="scaling up")
        assert "ready, all busy" in queue_of(st, w.queue)["scaling"]
        wait_for(lambda: len(runs(results)) >= 200, 40, interval=0.2,
                 message="200 messages handled")
        drained = max(r["end"] for r in runs(results)) - t0
        wait_status(w, lambda st: len(active(st, w.queue)) == 2
                    and len(workers_of(st, w.queue)) == 2, timeout=5 + 10 + 5,
                    message="back to 2 workers")
        shrunk = time.time() - max(r["end"] for r in runs(results))
    finally:
        sampler.done()
    print(f"burst: drained in {drained:.1f} s, peak {sampler.most} workers, "
          f"back to 2 {shrunk:.1f} s after the last message")
    once_each(results, ids)
    assert drained < 25, f"drained in {drained:.1f} s"
    assert 4 < sampler.most <= 16, sampler.most
    assert shrunk < 5 + 10, shrunk
    wait_for(lambda: len(w.children()) == 2, 10, message="2 worker processes")
    # the backlog as the master saw it: high during the burst, then none
    assert sampler.ready and max(sampler.ready) >= 50, sampler.ready[:20]
    assert sampler.ready[-1] == 0, sampler.ready[-10:]
    text = ask(w.sock, "metrics")["text"]
    assert metric(text, "warren_pool_target", w.queue) == 2
    assert "taken back" not in w.log()


def test_busy_worker_is_never_retired(warrend, broker, tmp_path, sockdir):
    """4 long messages on an elastic pool that shrinks meanwhile (short
    messages made it grow, their workers retire after idle_timeout) all
    finish once, on the workers that took them."""
    cmd, results = sleeper(tmp_path)
    w = start(warrend, sockdir, cmd, workers=1,
              queue_extra="    max_workers = 8\n    idle_timeout = 2")
    wait_answers(w)
    w.wait_consuming(1)
    long_ids = publish(broker, w.queue, 20, 4, "long")
    short_ids = publish(broker, w.queue, 0.5, 24, "short")
    wait_for(lambda: len([r for r in runs(results)
                          if r["id"] in short_ids]) == 24, 25, interval=0.2,
             message="the short messages handled")
    grown = len(w.children())
    # the idle extras go while the long ones still run
    st = wait_status(w, lambda st: len(active(st, w.queue)) == 4, timeout=12,
                     message="the pool down to its 4 busy workers")
    busy = {x["pid"] for x in active(st, w.queue) if x["state"] == "busy"}
    assert len(busy) == 4, st
    assert not any(r["id"] in long_ids for r in runs(results)), \
        "a long message ended before the pool shrank"
    wait_for(lambda: len([r for r in runs(results)
                          if r["id"] in long_ids]) == 4, 30, interval=0.2,
             message="the long messages handled")
    rs = once_each(results, long_ids + short_ids)
    assert {r["pid"] for r in rs if r["id"] in long_ids} == busy
    assert grown >= 5, grown
    wait_status(w, lambda st: len(workers_of(st, w.queue)) == 1, timeout=10,
                message="back to 1 worker")


def test_scale_and_restart(warrend, broker, tmp_path, sockdir):
    """warrenctl scale up, and down while busy: the idle workers go at
    once, the busy ones finish their message first; a reload returns to
    the configuration."""
    need_warrenctl()
    cmd, results = sleeper(tmp_path)
    w = start(warrend, sockdir, cmd, workers=2)
    wait_answers(w)
    w.wait_consuming(2)
    r = warrenctl("-s", w.sock, "scale", w.queue, "4")
    assert r.returncode == 0, r.stderr
    assert f"queue {w.queue} scaled to 4 workers" in r.stdout
    w.wait_consuming(4)
    st = status(w.sock)
    assert queue_of(st, w.queue)["workers"] == 4
    # two busy with 4 s messages; scaling to 1 keeps them to the end
    slow = publish(broker, w.queue, 4, 2, "slow")
    st = wait_status(w, lambda st: queue_of(st, w.queue)["busy"] == 2,
                     message="2 busy")
    busy = {x["pid"] for x in active(st, w.queue) if x["state"] == "busy"}
    assert warrenctl("-s", w.sock, "scale", w.queue, "1").returncode == 0
    st = wait_status(w, lambda st: len(workers_of(st, w.queue)) == 2,
                     timeout=3, message="the 2 idle workers gone at once")
    assert {x["pid"] for x in workers_of(st, w.queue)} == busy
    assert not runs(results), "the busy workers were cut short"
    wait_status(w, lambda st: len(workers_of(st, w.queue)) == 1, timeout=15,
                message="1 worker once the busy ones are done")
    once_each(results, slow)
    wait_status(w, lambda st: queue_of(st, w.queue)["scaling"] == "fixed at 1",
                timeout=3, message="fixed at 1")
    out = warrenctl("-s", w.sock, "status")
    assert "target 1 of 1 to 1 workers: fixed at 1" in out.stdout, out.stdout
    reload(w)
    wait_status(w, lambda st: len(active(st, w.queue)) == 2
                and queue_of(st, w.queue)["workers"] == 2, timeout=10,
                message="back to the configuration's 2 after a reload")


def test_rolling_restart(warrend, broker, tmp_path, sockdir):
    """warrenctl restart of a pool of 4 while 100 messages flow: every
    worker replaced, lost 0, duplicates 0, never fewer than 3 consuming."""
    need_warrenctl()
    cmd, results = sleeper(tmp_path)
    w = start(warrend, sockdir, cmd, workers=4)
    wait_answers(w)
    w.wait_consuming(4)
    before = {x["pid"] for x in workers_of(status(w.sock), w.queue)}
    ids = publish(broker, w.queue, 0.2, 100, "flow")
    wait_for(lambda: len(runs(results)) >= 10, 20, message="messages flowing")
    sampler = Sampler(w, w.queue)
    try:
        r = warrenctl("-s", w.sock, "restart", w.queue)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "restart done" in w.log(), 40,
                 message="the rolling restart done")
        during = len(runs(results))
        wait_for(lambda: len(runs(results)) >= 100, 40, interval=0.2,
                 message="100 messages handled")
    finally:
        sampler.done()
    after = {x["pid"] for x in workers_of(status(w.sock), w.queue)}
    once_each(results, ids)
    assert len(after) == 4 and not (before & after), (before, after)
    assert sampler.fewest_consuming >= 3, sampler.fewest_consuming
    assert during < 100, "the restart ended after the messages"
    assert "restart done, 4 workers replaced" in w.log()


def test_scale_usage_and_unknown_queue(warrend, tmp_path, sockdir):
    need_warrenctl()
    cmd, _ = sleeper(tmp_path)
    w = start(warrend, sockdir, cmd, workers=1)
    wait_answers(w)
    for args in (["scale", w.queue], ["scale", w.queue, "0"],
                 ["scale", w.queue, "x"], ["restart"]):
        r = warrenctl("-s", w.sock, *args)
        assert r.returncode == 64, (args, r.stdout, r.stderr)
    r = warrenctl("-s", w.sock, "scale", "no.such.queue", "3")
    assert r.returncode == 1 and "no such queue" in r.stderr
    r = warrenctl("-s", w.sock, "restart", "no.such.queue")
    assert r.returncode == 1 and "no such queue" in r.stderr


def test_extra_workers_follow_reload_and_pause(warrend, broker, tmp_path, sockdir):
    """Extra workers are workers like the others: a reload keeps them (up
    to max_workers), a pause stops them consuming (nothing is handled while
    paused, paused extras retire after idle_timeout), and on resume the
    pool grows again on what is left; every message once."""
    cmd, results = sleeper(tmp_path)
    w = start(warrend, sockdir, cmd, workers=1,
              queue_extra="    max_workers = 4\n    idle_timeout = 3")
    wait_answers(w)
    w.wait_consuming(1)
    ids = publish(broker, w.queue, 3, 12, "pr")
    wait_status(w, lambda st: queue_of(st, w.queue)["busy"] == 4, timeout=15,
                message="grown to 4 busy")
    reload(w)
    st = status(w.sock)
    assert len(active(st, w.queue)) == 4, "a reload dropped extra workers"
    assert ask(w.sock, f"pause {w.queue}")["ok"] is True
    wait_status(w, lambda st: queue_of(st, w.queue)["busy"] == 0, timeout=10,
                message="the paused pool done with its messages")
    handled = len(runs(results))
    assert 0 < handled < 12
    # paused extras are idle: they go after idle_timeout, the floor stays
    st = wait_status(w, lambda st: len(workers_of(st, w.queue)) == 1,
                     timeout=3 + 5, message="paused extras retired")
    assert queue_of(st, w.queue)["paused_workers"] == 1
    assert len(runs(results)) == handled, "a message ran while paused"
    assert ask(w.sock, f"resume {w.queue}")["ok"] is True
    wait_status(w, lambda st: len(active(st, w.queue)) > 1, timeout=10,
                message="growing again after the resume")
    wait_for(lambda: len(runs(results)) >= 12, 30, interval=0.2,
             message="all 12 handled")
    once_each(results, ids)


def test_restart_starts_persistent_handlers_anew(warrend, broker, tmp_path, sockdir):
    """A rolling restart of a persistent pool: each kept handler sees EOF
    and goes, and a new one starts for each new worker."""
    from test_persistent import HANDLER as KEPT, events, wait_events
    need_warrenctl()
    results = tmp_path / "kept.jsonl"
    h = write_script(tmp_path / "kept.py", KEPT)
    w = start(warrend, sockdir, [h, str(results)], workers=2,
              queue_extra='    mode = "persistent"')
    wait_answers(w)
    w.wait_consuming(2)
    old = {e["pid"] for e in wait_events(results, "start", 2)}
    r = warrenctl("-s", w.sock, "restart", w.queue)
    assert r.returncode == 0, r.stderr
    assert f"queue {w.queue} restarting, one worker at a time" in r.stdout
    wait_for(lambda: "restart done, 2 workers replaced" in w.log(), 30,
             message="the rolling restart done")
    new = {e["pid"] for e in wait_events(results, "start", 4)} - old
    assert len(new) == 2, events(results, "start")
    assert {e["pid"] for e in wait_events(results, "eof", 2)} == old
    broker.publish_many(w.queue, [("after", None, "after-1", {})])
    done = wait_events(results, "answered", 1)
    assert done[0]["pid"] in new
