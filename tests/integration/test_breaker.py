"""The circuit breaker (SPEC: queue.breaker): a handler that exits 75
(EX_TEMPFAIL) while its dependency is down opens it: that message goes
back unspent, the pool stops consuming for the cooldown, then one probe
message decides, and the cooldown doubles while probes fail. The
"dependency" here is a file: the handler exits 75 while it is absent."""

import os
import time

from conftest import REPO, read_lines, retry_conf, wait_for, write_script
from sd_helpers import NotifyListener
from ctl_helpers import WARRENCTL, queue_of, sockdir, start, status  # noqa: F401

import subprocess

COOLDOWN = 2
EXAMPLES = REPO / "examples"


def dependent(tmp_path, dep, runs, down_status=75):
    """A handler that records each run (wall time, attempt, message id,
    whether the dependency was up) and exits down_status while the file
    dep is absent, else 0. Shell: 50 of them run quickly."""
    return write_script(tmp_path / "dependent.sh", f"""
#!/bin/sh
cat >/dev/null
if [ -e '{dep}' ]; then up=1; else up=0; fi
printf '%s %s %s %s\\n' "$(date +%s.%N)" "$WARREN_ATTEMPT" \\
    "$WARREN_MESSAGE_ID" "$up" >>'{runs}'
[ "$up" = 1 ] && exit 0
exit {down_status}
""")


def runs_in(path):
    out = []
    for line in read_lines(path):
        t, attempt, mid, up = line.split()
        out.append({"t": float(t), "attempt": attempt, "mid": mid,
                    "up": up == "1"})
    return out


def openings(w):
    return w.log().count("circuit breaker open (")


def metric(w, name):
    out = subprocess.run([str(WARRENCTL), "-s", w.sock, "metrics"],
                         capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        if line.startswith(f'{name}{{queue="{w.queue}"}} '):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} for {w.queue} in:\n{out}")


def statuses(listener):
    """The STATUS= texts warrend sent to systemd so far."""
    return [d.value("STATUS") for d in listener.snapshot()
            if d.value("STATUS") is not None]


def test_exit_75_pauses_the_pool_and_probes_until_the_dependency_is_back(
        warrend, broker, sockdir, tmp_path):
    notify = NotifyListener(tmp_path / "notify")
    try:
        run_breaker_story(warrend, broker, sockdir, tmp_path, notify)
    finally:
        notify.close()


def run_breaker_story(warrend, broker, sockdir, tmp_path, notify):
    dep, runs = tmp_path / "dependency", tmp_path / "runs"
    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
    env.pop("WATCHDOG_USEC", None)
    w = start(warrend, sockdir, [dependent(tmp_path, dep, runs)], workers=2,
              queue_extra=f"    breaker {{ cooldown = {COOLDOWN} }}\n" +
              retry_conf(attempts=2, delay=1), env=env)
    w.wait_consuming(2)
    broker.publish_many(w.queue, [(f"m{i}", None, f"m{i}", {})
                                  for i in range(50)])
    # the first exit 75 opens it: the pool stops consuming
    wait_for(lambda: openings(w) >= 1, 20, message="the breaker opening")
    st = status(w.sock)
    q = queue_of(st, w.queue)
    assert q["breaker"] in ("open", "half-open"), q
    assert metric(w, "warren_breaker_open") == 1
    # probes, one message each, spaced by the cooldown, doubling (2 s,
    # then 4 s): three openings take about 6 s
    wait_for(lambda: openings(w) >= 3, 30, interval=0.2,
             message="two failed probes")
    assert broker.consumer_count(w.queue) == 0, "consuming while open"
    got = runs_in(runs)
    # nothing spent, nothing parked, every message still there
    assert all(r["attempt"] == "1" for r in got), got
    assert broker.ready_count(w.queue + ".failed") == 0
    assert len(got) < 50, "the pool kept consuming"
    # after the opening (and a straggler of the second worker, which was
    # busy when it opened), each run is a probe after a full cooldown
    probes = [r for r in got if r["t"] > got[0]["t"] + 1]
    assert len(probes) >= 2, got
    gaps = [b["t"] - a["t"] for a, b in zip(probes, probes[1:])]
    assert all(g >= COOLDOWN * 0.9 for g in gaps), gaps
    assert probes[0]["t"] - got[0]["t"] >= COOLDOWN * 0.9
    # the log says it once per opening, no more
    n_open = queue_of(status(w.sock), w.queue)["breaker_openings"]
    assert openings(w) == n_open, w.log()
    # status, STATUS=-like text: warrenctl status names it
    text = subprocess.run([str(WARRENCTL), "-s", w.sock, "status"],
                          capture_output=True, text=True, timeout=10).stdout
    assert "breaker open" in text or "breaker half-open" in text, text
    # and so does the STATUS= line systemd shows
    notify.wait(lambda _: any(f"{w.queue} 0/2 breaker" in t or
                              f"{w.queue} 2/2 breaker" in t
                              for t in statuses(notify)), 10,
                "STATUS= naming the open breaker")

    # the dependency is back: the next probe closes it, all 50 are acked
    left = queue_of(status(w.sock), w.queue)["breaker_seconds_left"] or 0
    t0 = time.monotonic()
    dep.write_text("up")
    wait_for(lambda: broker.ready_count(w.queue) == 0 and
             w.log().count(" ack, ") >= 50, left + 10 + 20, interval=0.2,
             message="all 50 acked")
    took = time.monotonic() - t0
    assert took <= left + 10, f"{took:.1f} s after the dependency came back"
    assert "circuit breaker closed" in w.log()
    assert queue_of(status(w.sock), w.queue)["breaker"] == "closed"
    assert metric(w, "warren_breaker_open") == 0
    notify.wait(lambda _: f"{w.queue} 2/2 consuming" in statuses(notify)[-1],
                10, "STATUS= consuming again")
    got = runs_in(runs)
    assert all(r["attempt"] == "1" for r in got)
    assert sorted({r["mid"] for r in got if r["up"]}) == sorted(
        f"m{i}" for i in range(50))
    assert broker.ready_count(w.queue + ".failed") == 0
    print(f"breaker: {n_open} openings before the dependency came back; "
          f"50 acked {took:.1f} s after it did (cooldown left {left} s)")


def test_failures_in_a_row_open_it(warrend, broker, sockdir, tmp_path):
    dep, runs = tmp_path / "dependency", tmp_path / "runs"
    w = start(warrend, sockdir, [dependent(tmp_path, dep, runs, 3)],
              queue_extra="    breaker { cooldown = 30  failures = 3 }\n" +
              retry_conf(attempts=5, delay=1))
    w.wait_consuming(1)
    broker.publish_many(w.queue, [(f"m{i}", None, f"m{i}", {})
                                  for i in range(10)])
    wait_for(lambda: openings(w) == 1, 20, message="the breaker opening")
    assert "failed attempts in a row" in w.log()
    # the master's pause reaches the worker a moment after the third
    # failure: a message or two may start meanwhile, then nothing runs
    # (their retries come back after 1 s and wait too)
    time.sleep(0.5)
    n = len(runs_in(runs))
    assert 3 <= n <= 6, runs_in(runs)
    time.sleep(2)
    assert len(runs_in(runs)) == n, "ran while the breaker was open"
    assert broker.consumer_count(w.queue) == 0
    # an ordinary failure spends its attempt: each is retried, none parked
    assert broker.ready_count(w.queue + ".failed") == 0
    assert queue_of(status(w.sock), w.queue)["breaker"] == "open"



def test_persistent_tempfail_answer_opens_it(warrend, broker, sockdir,
                                             tmp_path):
    dep = tmp_path / "dependency"
    h = write_script(tmp_path / "dependent.py", f"""
#!/usr/bin/python3
import os, sys
sys.path.insert(0, {str(EXAMPLES)!r})
import warren_handler

def handle(msg):
    if not os.path.exists({str(dep)!r}):
        raise warren_handler.TempFail("dependency down")
    return "attempt " + msg.meta["WARREN_ATTEMPT"]

warren_handler.serve(handle)
""")
    w = start(warrend, sockdir, ["/usr/bin/python3", h],
              queue_extra='    mode = "persistent"\n'
              "    breaker { cooldown = 1 }\n" + retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    broker.publish_many(w.queue, [(f"m{i}", None, f"m{i}", {})
                                  for i in range(5)])
    wait_for(lambda: openings(w) >= 2, 20, message="a failed probe")
    assert broker.ready_count(w.queue + ".failed") == 0
    dep.write_text("up")
    wait_for(lambda: w.log().count(" ack, attempt 1,") == 5, 30,
             message="all 5 acked at their first attempt")
    assert "circuit breaker closed" in w.log()
    assert broker.ready_count(w.queue + ".failed") == 0


def test_quorum_queue_spends_no_attempt_either(warrend, broker, sockdir,
                                               tmp_path):
    """A quorum queue counts every requeue in x-delivery-count, which
    counts against attempts: a message put back unspent goes back as a
    copy with its attempt unchanged, so more openings than attempts park
    nothing."""
    dep, runs = tmp_path / "dependency", tmp_path / "runs"
    w = start(warrend, sockdir, [dependent(tmp_path, dep, runs)],
              queue_extra='    type = "quorum"\n'
              "    breaker { cooldown = 1 }\n" + retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    broker.publish_many(w.queue, [(f"q{i}", None, f"q{i}", {})
                                  for i in range(3)])
    wait_for(lambda: openings(w) >= 4, 40, interval=0.2,
             message="four openings (more than attempts)")
    assert broker.ready_count(w.queue + ".failed") == 0
    dep.write_text("up")
    wait_for(lambda: w.log().count(" ack, exit 0,") == 3, 40, interval=0.2,
             message="all 3 acked")
    got = runs_in(runs)
    assert len(got) >= 4 + 3
    assert all(r["attempt"] == "1" for r in got), got
    assert broker.ready_count(w.queue + ".failed") == 0
