"""Persistent handlers renewed before they rot, slow handlers, and how long
messages waited (SPEC: queue.max_rss, queue.max_age, queue.slow,
warren_queue_wait_seconds, warren_slow_messages_total, warren-submit's
timestamp).

The handler below speaks the persistent protocol and appends one JSON line
per event to a results file: "start", "msg" (with its metadata), "eof".
Body "leak" keeps 10 MiB more resident per message; "slow N" sleeps N
seconds.
"""
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import SUBMIT, free_port, read_lines, wait_for, write_script

HANDLER = r"""#!/usr/bin/python3
import json, os, sys, time

results = sys.argv[1]
kept = []

def record(**kv):
    kv["pid"] = os.getpid()
    kv["worker"] = os.environ.get("WARREN_WORKER")
    kv["t"] = time.monotonic()
    fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (json.dumps(kv) + "\n").encode())
    os.close(fd)

record(event="start")
inp, out = sys.stdin.buffer, sys.stdout
while True:
    head = inp.readline()
    if not head:
        record(event="eof")
        sys.exit(0)
    tag, n, length = head.decode().split()
    meta = {}
    for _ in range(int(n)):
        name, _, value = inp.readline().decode().rstrip("\n").partition("=")
        meta[name] = value
    body = inp.read(int(length)).decode()
    record(event="msg", meta=meta, body=body)
    if body == "leak":
        kept.append(b"x" * (10 << 20))  # written: resident
    elif body.startswith("slow "):
        time.sleep(float(body.split()[1]))
    out.write("ok\n")
    out.flush()
"""


def events(path, kind=None):
    out = [json.loads(l) for l in read_lines(path)]
    return [e for e in out if kind is None or e["event"] == kind]


def wait_events(path, kind, n, timeout=30):
    return wait_for(lambda: len(events(path, kind)) >= n and events(path, kind),
                    timeout=timeout, message=f"{n} {kind} event(s)")


def metrics_conf(port):
    return f'control_socket = ""\nmetrics {{ listen = "127.0.0.1:{port}" }}'


def scrape(port):
    """{(name, frozenset(labels)): value} of the listener's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(port, name, **labels):
    want = set(labels.items())
    found = [v for (n, l), v in scrape(port).items() if n == name and want <= l]
    assert len(found) == 1, (name, labels, found)
    return found[0]


@pytest.fixture
def persistent(warrend, tmp_path):
    def start(workers=1, queue_extra="", **kw):
        results = tmp_path / "results"
        h = write_script(tmp_path / "handler.py", HANDLER)
        w = warrend([h, str(results)], workers=workers,
                    queue_extra='    mode = "persistent"\n' + queue_extra, **kw)
        w.wait_consuming(workers)
        return w, results
    return start


def handled_once(results, n):
    """Each of the n message ids m0..m(n-1) reached a handler exactly once,
    never redelivered."""
    msgs = events(results, "msg")
    ids = sorted(e["meta"]["WARREN_MESSAGE_ID"] for e in msgs)
    assert ids == sorted(f"m{i}" for i in range(n)), ids
    assert all(e["meta"]["WARREN_REDELIVERED"] == "0" for e in msgs)
    return msgs


def test_max_rss_renews_a_leaking_handler(broker, persistent):
    """10 MiB more per message, max_rss = 64: a handler is renewed every
    few messages between them; nothing lost or redelivered, no crash."""
    w, results = persistent(queue_extra="    max_rss = 64\n")
    n = 24
    broker.publish_many(w.queue, [("leak", None, f"m{i}", {}) for i in range(n)])
    wait_for(lambda: len(re.findall(r" ack, ok, ", w.log())) >= n, timeout=60,
             message=f"{n} acks")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20)
    msgs = handled_once(results, n)
    # messages per process, in order: every process but the last reached
    # max_rss after 4 to 7 (about 6 at 10 MiB each over a small start)
    runs = []
    for e in msgs:
        if runs and runs[-1][0] == e["pid"]:
            runs[-1][1] += 1
        else:
            runs.append([e["pid"], 1])
    assert len({pid for pid, _ in runs}) == len(runs), runs
    assert len(runs) >= 3, runs
    assert all(3 <= k <= 7 for _, k in runs[:-1]), runs
    renewals = re.findall(r"renewing the handler \(pid (\d+)\): resident memory "
                          r"(\d+) MiB above max_rss 64 MiB after (\d+) messages",
                          w.log())
    # each renewed once, in order (the last, too, if it reached max_rss)
    assert len(renewals) in (len(runs) - 1, len(runs)), (renewals, runs)
    assert [int(p) for p, _, _ in renewals] == [pid for pid, _ in runs][:len(renewals)]
    assert all(int(mib) > 64 for _, mib, _ in renewals)
    # planned ends: the renewed ones saw EOF; no crash, no backoff
    eofs = {e["pid"] for e in wait_events(results, "eof", len(runs) - 1)}
    assert {pid for pid, _ in runs[:-1]} <= eofs
    log = w.log()
    assert "exited between messages" not in log and "backing off" not in log
    assert "respawning" not in log


def test_max_age_spread_over_the_pool(broker, persistent):
    """8 workers, max_age = 10: each handler is renewed near 10 s, the
    pool's renewals spread over more than 10% of max_age; messages that
    flow meanwhile are each handled once."""
    w, results = persistent(workers=8, queue_extra="    max_age = 10\n")
    first = {e["worker"]: e for e in wait_events(results, "start", 8)}
    assert len(first) == 8
    # a stream of short messages across the renewals
    t0 = min(e["t"] for e in first.values())
    wait_for(lambda: time.monotonic() >= t0 + 8.5, timeout=15)
    n = 60
    broker.publish_many(w.queue, [("slow 0.3", None, f"m{i}", {}) for i in range(n)])

    def renewed():
        starts = events(results, "start")
        again = {}
        for e in starts:
            if e["worker"] in again or e["pid"] == first[e["worker"]]["pid"]:
                continue
            again[e["worker"]] = e
        return again if len(again) == 8 else None
    again = wait_for(renewed, timeout=40, message="every worker's handler renewed")
    # from start-up line to start-up line: a cold first start of eight
    # interpreters at once may lag the renewed one's by a second
    ages = sorted(again[k]["t"] - first[k]["t"] for k in first)
    assert 7.5 <= ages[0] and ages[-1] <= 14, ages
    assert ages[-1] - ages[0] >= 1.0, ages  # 10% of max_age
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=40)
    handled_once(results, n)
    log = w.log()
    assert len(re.findall(r"renewing the handler \(pid \d+\): ran \d+ s "
                          r"\(max_age, \d+ s for this worker\)", log)) >= 8
    assert "exited between messages" not in log and "respawning" not in log


@pytest.mark.parametrize("mode", ["exec", "persistent"])
def test_slow_logged_once_with_wait_channel(broker, warrend, tmp_path, mode):
    port = free_port()
    pidfile = tmp_path / "pid"
    if mode == "exec":
        # the shell waits for its sleep: its wait channel says so
        h = write_script(tmp_path / "h.sh", f"""
#!/bin/sh
echo $$ > {pidfile}
body=$(cat)
sleep "$body"
""")
        extra = ""
    else:
        h = write_script(tmp_path / "h.py", HANDLER)
        extra = '    mode = "persistent"\n'
    w = warrend([h] + ([] if mode == "exec" else [str(tmp_path / "results")]),
                queue_extra=extra + "    slow = 1\n", extra=metrics_conf(port))
    w.wait_consuming(1)
    body = "3" if mode == "exec" else "slow 3"
    fast = "0" if mode == "exec" else "slow 0"
    broker.publish(w.queue, fast, message_id="quick")
    broker.publish(w.queue, body, message_id="sleepy")
    wait_for(lambda: " sleepy ack, " in w.log(), timeout=30)
    lines = [l for l in w.log().splitlines() if ": slow: " in l]
    assert len(lines) == 1, lines
    m = re.search(r"sleepy: slow: still running after (\d+)\.\d s \(slow = 1\): "
                  r"pid (\d+), wchan (\S+)$", lines[0])
    assert m, lines[0]
    assert 1 <= int(m.group(1)) < 3
    if mode == "exec":
        assert int(m.group(2)) == int(pidfile.read_text())
        assert m.group(3) == "do_wait"
    else:
        [e] = [e for e in events(tmp_path / "results", "msg")
               if e["meta"]["WARREN_MESSAGE_ID"] == "sleepy"]
        assert int(m.group(2)) == e["pid"]
        assert m.group(3) not in ("-", "unknown")
    assert metric(port, "warren_slow_messages_total", queue=w.queue) == 1


def test_wait_histogram_counts_timestamped_messages(broker, warrend, tmp_path):
    """Messages with a timestamp are observed from it to their handler's
    start; those without are not; warren-submit stamps every message."""
    port = free_port()
    seen = tmp_path / "seen"
    h = write_script(tmp_path / "h.sh", f"""
#!/bin/sh
cat >/dev/null
echo "$WARREN_MESSAGE_ID ${{WARREN_TIMESTAMP:--}}" >> {seen}
""")
    w = warrend([h], extra=metrics_conf(port))
    w.wait_consuming(1)
    old = int(time.time()) - 40
    broker.publish_many(w.queue, [(b"x", None, f"old{i}", {"timestamp": old})
                                  for i in range(5)]
                        + [(b"x", None, f"none{i}", {}) for i in range(3)])
    conf = tmp_path / "submit.conf"
    conf.write_text(w.conf.read_text())
    before = int(time.time())
    r = subprocess.run([str(SUBMIT), "-c", str(conf), "-q", w.queue,
                        "-i", "submitted", "hello"], capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(read_lines(seen)) == 9, timeout=30)
    stamps = dict(l.split() for l in read_lines(seen))
    assert before <= int(stamps["submitted"]) <= int(time.time())
    assert all(stamps[f"none{i}"] == "-" for i in range(3))
    q = w.queue
    wait_for(lambda: metric(port, "warren_queue_wait_seconds_count", queue=q) == 6,
             timeout=10)
    total = metric(port, "warren_queue_wait_seconds_sum", queue=q)
    assert 5 * 39 <= total <= 5 * 40 + 60, total
    assert metric(port, "warren_queue_wait_seconds_bucket", queue=q, le="10") == 1
    assert metric(port, "warren_queue_wait_seconds_bucket", queue=q, le="30") == 1
    assert metric(port, "warren_queue_wait_seconds_bucket", queue=q, le="60") == 6
    assert metric(port, "warren_messages_total", queue=q, outcome="ack") == 9
