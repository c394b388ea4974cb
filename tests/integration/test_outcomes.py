"""What happens to a message (SPEC: the handler, its outcome table; README:
"What happens to a message"): one test per row of the outcome table, and the
retry, parking and output guarantees around them.

Every handler here records each of its runs (attempt, redelivered flag,
time) to a file, so a test can tell how often and when it ran. Times are
time.monotonic() in the handler, comparable with the test's own clock.

rabbitmqctl costs seconds of CPU per call on a small machine, and slows
what it watches (the master's respawn backoff keeps running meanwhile), so
these tests ask the broker over AMQP (passive declares) and keep rabbitmqctl
for what only it can tell. "Acked" is checked by stopping warrend: a message
it had not acked would be back in the queue once its connection closed.
"""

import json
import os
import re
import time

import pika.exceptions
import pytest

from conftest import (pid_alive, queue_name_for, read_lines, retry_conf, runs_of,
                      wait_for, write_script)

# ---------------------------------------------------------------------------
# helpers

# The top of every Python handler: reads the body, appends one JSON line
# describing this run to argv[1], then does what the rest of the script says.
PRELUDE = r"""#!/usr/bin/python3
import json, os, signal, sys, time
RUNS = sys.argv[1]
BODY = sys.stdin.buffer.read()
ENV = os.environ
ATTEMPT = int(ENV.get("WARREN_ATTEMPT", "0"))
_run = {"t": time.monotonic(), "wall": time.time(), "pid": os.getpid(),
        "ppid": os.getppid(), "attempt": ATTEMPT,
        "redelivered": ENV.get("WARREN_REDELIVERED"),
        "mid": ENV.get("WARREN_MESSAGE_ID"), "body": BODY.decode("latin-1")}
_fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(_fd, (json.dumps(_run) + "\n").encode())
os.close(_fd)
"""


def handler(path, code):
    """A Python handler: PRELUDE followed by code."""
    return write_script(path, PRELUDE + code.lstrip("\n"))


def exists(broker, queue):
    """Whether queue exists (a passive declare)."""
    conn = broker.connect()
    try:
        try:
            conn.channel().queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False
    finally:
        if conn.is_open:
            conn.close()


def wait_parked(broker, queue, timeout=30):
    """Wait for a message in QUEUE.failed and take it: (props, body)."""
    failed = queue + ".failed"
    wait_for(lambda: broker.ready_count(failed) >= 1, timeout=timeout,
             interval=0.2, message=f"a message parked in {failed}")
    method, props, body = broker.get(failed)
    assert method is not None, f"{failed} was empty after all"
    return props, body


def result_lines(w, mid):
    """warrend's result lines for message mid (ack/retry/failed/requeued)."""
    pat = re.compile(rf": {re.escape(mid)} (ack|retry|failed|requeued), ")
    return [l for l in w.log().splitlines() if pat.search(l)]


def wait_result(w, mid, n=1, timeout=30):
    return wait_for(lambda: len(result_lines(w, mid)) >= n and result_lines(w, mid),
                    timeout=timeout, interval=0.1,
                    message=f"{n} result line(s) for {mid}")


def handle_one(broker, warrend, tmp_path, code, mid):
    """One worker running handler code; publish one message (body = its
    id) and wait for its result. Returns the warrend."""
    h = handler(tmp_path / f"{mid}.py", code)
    w = warrend([h, str(tmp_path / "runs")])
    w.wait_consuming(1)
    broker.publish(w.queue, mid, message_id=mid)
    wait_result(w, mid)
    return w


def output_lines(w, mid, stream="stdout"):
    """The handler's logged output lines for message mid, in order (info
    level: warrend's own notes about the stream are warnings)."""
    marker = f": {mid}: {stream}: "
    out = []
    for line in w.log().splitlines():
        i = line.find(marker)
        if i >= 0 and re.match(r"warrend\[\d+\]: info: ", line):
            out.append(line[i + len(marker):])
    return out


def stop_and_assert_empty(broker, w):
    """Stop warrend cleanly, then check that its queue holds nothing: a
    message it had taken but not acked would be back, ready, by now."""
    w.stop()
    wait_for(lambda: broker.consumer_count(w.queue) == 0, timeout=10, interval=0.1,
             message="no consumers left")
    time.sleep(0.3)
    assert broker.ready_count(w.queue) == 0, \
        "a message was left unacked (or requeued) in the queue"


RETRY_DELAYS = (1, 2, 3, 4, 8, 10, 20, 40, 80, 600)


@pytest.fixture
def cleanup(broker, request):
    """Request it BEFORE `warrend` in a test's arguments, so that it is torn
    down after warrend has been killed. Runs the callbacks appended to the
    list it yields, then deletes the queues named after the test that the
    warrend fixture does not know: other retry delays, QUEUE.dlq."""
    undo = []
    yield undo
    for f in reversed(undo):
        try:
            f()
        except Exception:
            pass
    q = queue_name_for(request.node.name)
    try:
        broker.delete_queue(q, q + ".failed", q + ".dlq",
                            *(f"{q}.retry.{d}s" for d in RETRY_DELAYS))
    except Exception:
        pass


# ---------------------------------------------------------------------------
# exit 0: ack


def test_exit_0_acks(broker, cleanup, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = handler(tmp_path / "ok.py", "sys.exit(0)\n")
    w = warrend([h, str(runs)], queue_extra=retry_conf(attempts=3, delay=1))
    w.wait_consuming(1)
    broker.publish(w.queue, "fine", message_id="ok-1")

    [line] = wait_result(w, "ok-1")
    assert re.search(r"ok-1 ack, exit 0, \d+ ms$", line), line
    time.sleep(1.5)     # a requeue or a retry (1 s) would have run it again
    assert [r["attempt"] for r in runs_of(runs)] == [1]
    assert len(result_lines(w, "ok-1")) == 1
    assert not exists(broker, w.queue + ".retry.1s"), "an acked message was retried"
    assert broker.ready_count(w.queue + ".failed") == 0
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# exit 65: parked at once, body and properties kept


def test_exit_65_parks_at_once_keeping_body_and_properties(broker, cleanup, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = handler(tmp_path / "bad.py", r"""
os.write(2, b"this message is bad\n")
sys.exit(65)
""")
    # Retries would be quick here: a retried exit 65 could not hide.
    w = warrend([h, str(runs)], queue_extra=retry_conf(attempts=5, delay=1))
    w.wait_consuming(1)
    body = b"bad \x00\xff body\n" + os.urandom(64)
    t0 = int(time.time())
    broker.publish(w.queue, body, message_id="bad-1",
                   headers={"x-custom": "keep me", "x-number": 7},
                   content_type="application/x-test", correlation_id="corr-9",
                   priority=3, app_id="tests")

    props, got = wait_parked(broker, w.queue)
    t1 = int(time.time())
    assert got == body
    assert props.message_id == "bad-1"
    assert props.content_type == "application/x-test"
    assert props.correlation_id == "corr-9"
    assert props.priority == 3
    assert props.app_id == "tests"
    assert props.delivery_mode == 2
    hd = props.headers
    assert hd["x-custom"] == "keep me"
    assert hd["x-number"] == 7
    assert hd["x-warren-reason"] == "exit 65"
    assert hd["x-warren-attempts"] == 1 and isinstance(hd["x-warren-attempts"], int)
    assert hd["x-warren-stderr"] == "this message is bad\n"
    assert t0 - 1 <= hd["x-warren-failed-at"] <= t1 + 1
    assert "x-warren-attempt" not in hd

    time.sleep(1.5)     # a retry (delay 1 s) would have run again by now
    assert [r["attempt"] for r in runs_of(runs)] == [1], "exit 65 was retried"
    assert not exists(broker, w.queue + ".retry.1s"), "exit 65 went through a retry queue"
    assert broker.ready_count(w.queue + ".failed") == 0, "parked more than once"
    [line] = result_lines(w, "bad-1")
    assert re.search(r"bad-1 failed, exit 65, \d+ ms, attempt 1, parked$", line), line
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# exit 3: retried with backoff, then parked with the stderr tail

# Writes ~14 KiB to stderr in uneven pieces, keeping a copy in RUNS.stderr.N.
FAIL_LOUDLY = r"""
data = "".join("attempt %d line %05d %s\n" % (ATTEMPT, i, "." * 40)
               for i in range(250)).encode()
with open("%s.stderr.%d" % (RUNS, ATTEMPT), "wb") as f:
    f.write(data)
sizes, off, i = [1000, 3000, 5000, 700, 333, 2048], 0, 0
while off < len(data):
    n = sizes[i % len(sizes)]
    os.write(2, data[off:off + n])
    off, i = off + n, i + 1
    time.sleep(0.005)
sys.exit(3)
"""


def test_exit_3_retried_with_backoff_then_parked(broker, cleanup, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = handler(tmp_path / "fail.py", FAIL_LOUDLY)
    w = warrend([h, str(runs)],
                queue_extra=retry_conf(attempts=3, delay=1, backoff=2))
    w.wait_consuming(1)
    broker.publish(w.queue, "try me", message_id="r-1", headers={"x-custom": "kept"})

    props, body = wait_parked(broker, w.queue, timeout=30)
    now = time.time()
    rs = runs_of(runs)
    assert [r["attempt"] for r in rs] == [1, 2, 3]
    assert [r["redelivered"] for r in rs] == ["0", "0", "0"]
    gap1, gap2 = rs[1]["t"] - rs[0]["t"], rs[2]["t"] - rs[1]["t"]
    assert 0.8 <= gap1 <= 2.5, f"first retry after {gap1:.2f}s, not ~1 s"
    assert 1.8 <= gap2 <= 3.5, f"second retry after {gap2:.2f}s, not ~2 s"

    assert body == b"try me"
    assert props.message_id == "r-1"
    hd = props.headers
    assert hd["x-custom"] == "kept"
    assert hd["x-warren-reason"] == "exit 3"
    assert hd["x-warren-attempts"] == 3 and isinstance(hd["x-warren-attempts"], int)
    assert "x-warren-attempt" not in hd, "the parked copy kept x-warren-attempt"
    wrote = (tmp_path / "runs.stderr.3").read_bytes()
    assert len(wrote) > 8192
    stderr = hd["x-warren-stderr"]
    stderr = stderr.encode() if isinstance(stderr, str) else stderr
    assert len(stderr) == 4096, len(stderr)
    assert stderr == wrote[-4096:], "x-warren-stderr is not the last 4 KiB of the last attempt"
    assert isinstance(hd["x-warren-failed-at"], int)
    assert now - 10 <= hd["x-warren-failed-at"] <= now + 1

    lines = wait_result(w, "r-1", 3)
    assert len(lines) == 3, lines
    assert re.search(r"r-1 retry, exit 3, \d+ ms, attempt 1, again in 1 s$", lines[0]), lines[0]
    assert re.search(r"r-1 retry, exit 3, \d+ ms, attempt 2, again in 2 s$", lines[1]), lines[1]
    assert re.search(r"r-1 failed, exit 3, \d+ ms, attempt 3, parked$", lines[2]), lines[2]

    # The retries waited in one queue per delay, dead-lettered back to the
    # queue, and nothing is left in them. (One rabbitmqctl call.)
    table = {row[0]: row[1:] for row in broker._table(
        "list_queues", "name", "arguments", "messages_ready", "messages_unacknowledged")}
    assert sorted(n for n in table if n.startswith(w.queue + ".retry.")) == \
        [w.queue + ".retry.1s", w.queue + ".retry.2s"]
    for d in (1, 2):
        args, ready, unacked = table[f"{w.queue}.retry.{d}s"]
        assert (ready, unacked) == ("0", "0")
        assert re.search(rf"x-message-ttl\W+{d * 1000}\b", args), args
        # (rabbitmqctl shows the empty string as "" or [])
        assert re.search(r'x-dead-letter-exchange",\s*(""|\[\])\}', args), args
        assert re.search(rf"x-dead-letter-routing-key\W+{re.escape(w.queue)}\W", args), args
    assert len(runs_of(runs)) == 3
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# a signal: retried, then parked as "signal 11"

SEGV = r"""
#!/bin/sh
# argv: RUNS. Records its attempt, then dies of SIGSEGV.
cat >/dev/null
printf '%s\n' "$WARREN_ATTEMPT" >>"$1"
echo "about to crash, attempt $WARREN_ATTEMPT" >&2
ulimit -c 0
kill -SEGV $$
echo "still alive" >&2
exit 0
"""


def test_killed_by_signal_is_retried_then_parked(broker, cleanup, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = write_script(tmp_path / "segv.sh", SEGV)
    w = warrend([h, str(runs)], queue_extra=retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    broker.publish(w.queue, "crash", message_id="s-1")

    props, body = wait_parked(broker, w.queue, timeout=30)
    assert read_lines(runs) == ["1", "2"]
    assert body == b"crash"
    hd = props.headers
    assert hd["x-warren-reason"] == "signal 11"
    assert hd["x-warren-attempts"] == 2
    assert hd["x-warren-stderr"] == "about to crash, attempt 2\n"
    lines = wait_result(w, "s-1", 2)
    assert len(lines) == 2, lines
    assert re.search(r"s-1 retry, signal 11, \d+ ms, attempt 1, again in 1 s$", lines[0]), lines[0]
    assert re.search(r"s-1 failed, signal 11, \d+ ms, attempt 2, parked$", lines[1]), lines[1]
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# the timeout: SIGTERM to the group, SIGKILL after kill_grace, then failed

STUCK = r"""
d = os.path.dirname(RUNS)

def note(name, text):
    fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, text.encode())
    os.close(fd)

def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))

# SIGTERM is noted and otherwise ignored, here and in the grandchild.
signal.signal(signal.SIGTERM, lambda s, f: note("term", "%d\n" % os.getpid()))
if os.fork() == 0:
    put("grandchild.pid", str(os.getpid()))
    while True:
        time.sleep(60)
put("handler.pid", str(os.getpid()))
os.write(2, b"stuck for good\n")
while True:
    time.sleep(60)
"""


def test_timeout_kills_the_group_and_fails_the_attempt(broker, cleanup, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = handler(tmp_path / "stuck.py", STUCK)
    timeout, grace = 2, 1
    w = warrend([h, str(runs)],
                queue_extra=f"    timeout = {timeout}\n    kill_grace = {grace}\n"
                + retry_conf(attempts=1))
    w.wait_consuming(1)
    published = time.monotonic()
    broker.publish(w.queue, "never finishes", message_id="to-1")

    hpid_file, gpid_file = tmp_path / "handler.pid", tmp_path / "grandchild.pid"
    wait_for(lambda: hpid_file.exists() and gpid_file.exists(), timeout=30,
             message="the handler and its grandchild to start")
    hpid, gpid = int(hpid_file.read_text()), int(gpid_file.read_text())
    w.extra_pids.update((hpid, gpid))
    [run] = runs_of(runs)

    def both_gone():
        return not pid_alive(hpid) and not pid_alive(gpid)

    wait_for(both_gone, timeout=run["t"] + timeout + grace + 3 - time.monotonic(),
             interval=0.02, message="the handler and its grandchild to be killed")
    gone = time.monotonic()
    # The deadline starts before the handler's first line and after the
    # publish; SIGTERM at `timeout` was ignored, so only the SIGKILL
    # `kill_grace` later can have ended them.
    assert gone - published >= timeout + grace - 0.1, \
        f"killed {gone - published:.2f}s after the publish: before timeout + kill_grace"
    assert gone - run["t"] <= timeout + grace + 1.5, \
        f"still alive {gone - run['t']:.2f}s after the handler started"
    terms = sorted(int(x) for x in read_lines(tmp_path / "term"))
    assert terms == sorted([hpid, gpid]), "SIGTERM did not reach the whole group"

    props, body = wait_parked(broker, w.queue, timeout=15)
    hd = props.headers
    assert body == b"never finishes"
    assert hd["x-warren-reason"] == f"timeout {timeout}s"
    assert hd["x-warren-attempts"] == 1
    assert hd["x-warren-stderr"] == "stuck for good\n"
    [line] = wait_result(w, "to-1")
    assert re.search(r"to-1 failed, timeout 2s, \d+ ms, attempt 1, parked$", line), line
    assert len(runs_of(runs)) == 1
    # The worker survived its handler's timeout.
    assert broker.consumer_count(w.queue) == 1
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# quorum queue: a message that kills its worker every time runs out of budget

KILL_WORKER = r"""
#!/bin/sh
# argv: RUNS. Records itself, then SIGKILLs its parent, the worker.
cat >/dev/null
printf '%s %s %s %s\n' "$WARREN_ATTEMPT" "$WARREN_REDELIVERED" "$$" "$PPID" >>"$1"
kill -9 "$PPID"
sleep 30
"""


def test_quorum_message_killing_its_worker_is_parked_after_budget(broker, cleanup, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = write_script(tmp_path / "killer.sh", KILL_WORKER)
    w = warrend([h, str(runs)], workers=1,
                queue_extra='    type = "quorum"\n' + retry_conf(attempts=3, delay=1))
    w.wait_consuming(1, timeout=30)
    [first_worker] = w.wait_children(1)
    broker.publish(w.queue, "poison", message_id="q-1")

    props, body = wait_parked(broker, w.queue, timeout=40)
    rows = [l.split() for l in read_lines(runs)]
    for r in rows:
        w.extra_pids.add(int(r[2]))
    assert 1 <= len(rows) <= 3, f"the handler ran {len(rows)} times with attempts = 3"
    assert [r[0] for r in rows] == ["1", "2", "3"][:len(rows)]
    assert rows[0][3] == str(first_worker), "the handler's parent is not the worker"
    assert all(r[1] == "1" for r in rows[1:]), "redeliveries not flagged"
    assert body == b"poison"
    hd = props.headers
    assert re.fullmatch(r"redelivered \d+ times", hd["x-warren-reason"]), hd["x-warren-reason"]
    assert hd["x-warren-attempts"] <= 3
    assert "x-warren-attempt" not in hd
    [line] = wait_result(w, "q-1")
    assert re.search(r"q-1 failed, redelivered \d+ times, \d+ ms, attempt \d, parked$", line), line

    # Settled for good: the pool is back, the handler does not run again.
    w.wait_consuming(1, timeout=30)
    time.sleep(1)
    assert len(read_lines(runs)) == len(rows)
    assert broker.ready_count(w.queue + ".failed") == 0
    stop_and_assert_empty(broker, w)


LOSE_ONCE = r"""
#!/bin/sh
# argv: RUNS. First run: kills its worker; second: fails; then succeeds.
cat >/dev/null
printf '%s %s\n' "$WARREN_ATTEMPT" "$WARREN_REDELIVERED" >>"$1"
case $(wc -l <"$1") in
1) kill -9 "$PPID"; sleep 30 ;;
2) exit 3 ;;
*) exit 0 ;;
esac
"""


def test_quorum_lost_delivery_is_counted_once(broker, cleanup, warrend, tmp_path):
    """On a quorum queue a delivery lost with its worker counts against the
    attempts once: with attempts = 3, a lost delivery and an exit 3 leave a
    third attempt, which succeeds (the message is not parked before it)."""
    runs = tmp_path / "runs"
    h = write_script(tmp_path / "lose.sh", LOSE_ONCE)
    w = warrend([h, str(runs)], workers=1,
                queue_extra='    type = "quorum"\n' + retry_conf(attempts=3, delay=1, backoff=1))
    w.wait_consuming(1)
    failed = w.queue + ".failed"
    broker.publish(w.queue, "lose me once", message_id="lq-1")

    wait_for(lambda: len(read_lines(runs)) >= 3 or broker.ready_count(failed) > 0,
             timeout=30, interval=0.2, message="a third run (or the message parked)")
    wait_result(w, "lq-1", 2)
    assert broker.ready_count(failed) == 0, (
        f"parked after {len(read_lines(runs))} runs with attempts = 3: "
        + "; ".join(l.split(": ", 3)[-1] for l in result_lines(w, "lq-1")))
    assert read_lines(runs) == ["1 0", "2 1", "3 0"]
    assert re.search(r"lq-1 ack, exit 0, ", result_lines(w, "lq-1")[-1])
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# a long retry delay does not hold up a short one

RETRY_ONCE = r"""
if BODY == b"slow" or ATTEMPT < 2:
    sys.exit(3)
sys.exit(0)
"""


def test_long_retry_delay_does_not_hold_up_short_one(broker, cleanup, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = handler(tmp_path / "once.py", RETRY_ONCE)
    q = queue_name_for("test_long_retry_delay_does_not_hold_up_short_one")
    slow_q, fast_q = q + ".retry.600s", q + ".retry.1s"

    # A 600 s retry is scheduled first...
    w = warrend([h, str(runs)], queue=q, queue_extra=retry_conf(attempts=2, delay=600))
    w.wait_consuming(1)
    broker.publish(q, "slow", message_id="slow")
    wait_for(lambda: broker.ready_count(slow_q) == 1, timeout=30, interval=0.2,
             message=f"the slow message waiting in {slow_q}")
    [line] = wait_result(w, "slow")
    assert line.endswith("attempt 1, again in 600 s"), line
    stop_and_assert_empty(broker, w)

    # ...then, with a 1 s delay, another message fails once. Its retry must
    # not queue up behind the 600 s one.
    w = warrend([h, str(runs)], queue=q, queue_extra=retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    broker.publish(q, "fast", message_id="fast")

    def fast_done():
        return [r for r in runs_of(runs) if r["mid"] == "fast" and r["attempt"] == 2]

    wait_for(fast_done, timeout=20, interval=0.1,
             message="the 1 s retry of the second message")
    fast = [r for r in runs_of(runs) if r["mid"] == "fast"]
    assert [r["attempt"] for r in fast] == [1, 2]
    gap = fast[1]["t"] - fast[0]["t"]
    assert 0.8 <= gap <= 3.0, f"the 1 s retry came back after {gap:.2f}s"
    lines = wait_result(w, "fast", 2)
    assert lines[0].endswith("attempt 1, again in 1 s"), lines[0]
    assert re.search(r"fast ack, exit 0, ", lines[1]), lines[1]
    assert broker.ready_count(slow_q) == 1, "the 600 s retry left its queue"
    assert exists(broker, fast_q) and broker.ready_count(fast_q) == 0
    assert [r["mid"] for r in runs_of(runs)] == ["slow", "fast", "fast"]
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# park = false: rejected, so the broker's dead-letter policy applies


def test_park_false_rejects_to_dead_letter_policy(broker, cleanup, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = handler(tmp_path / "bad.py", "sys.exit(65)\n")
    w = warrend([h, str(runs)], queue_extra="    park = false\n" + retry_conf(attempts=3, delay=1))
    w.wait_consuming(1)
    q = w.queue
    dlq, policy = q + ".dlq", "dlx-" + q

    conn = broker.connect()
    try:
        conn.channel().queue_declare(dlq, durable=True)
    finally:
        conn.close()
    cleanup.append(lambda: broker.ctl("clear_policy", policy))
    broker.ctl("set_policy", "--apply-to", "queues", policy, "^" + re.escape(q) + "$",
               json.dumps({"dead-letter-exchange": "",
                           "dead-letter-routing-key": dlq}))
    wait_for(lambda: broker.queue_info(q, "policy")["policy"] == policy, timeout=20,
             interval=0.5, message="the policy applied to the queue")

    broker.publish(q, b"reject me", message_id="p-1", headers={"x-custom": "kept"})
    wait_for(lambda: broker.ready_count(dlq) >= 1, timeout=30, interval=0.2,
             message=f"the rejected message dead-lettered to {dlq}")
    method, props, body = broker.get(dlq)
    assert body == b"reject me"
    assert props.message_id == "p-1"
    assert props.headers["x-custom"] == "kept"
    death = props.headers["x-death"][0]
    assert death["reason"] == "rejected"
    assert death["queue"] == q
    assert not any(k.startswith("x-warren-") for k in props.headers), props.headers

    [line] = wait_result(w, "p-1")
    assert re.search(r"p-1 failed, exit 65, \d+ ms, attempt 1, rejected$", line), line
    time.sleep(1.5)     # a retry (1 s) would have run it again
    assert [r["attempt"] for r in runs_of(runs)] == [1]
    assert not exists(broker, q + ".failed"), "park = false made a parking queue"
    assert broker.ready_count(dlq) == 0
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# the handler cannot be started: requeued, never parked, then handled once fixed

LATER = r"""#!/bin/sh
# argv: RUNS
cat >/dev/null
printf '%s %s %s\n' "$WARREN_MESSAGE_ID" "$WARREN_ATTEMPT" "$WARREN_REDELIVERED" >>"$1"
exit 0
"""


@pytest.mark.parametrize("qtype", ["classic", "quorum"])
def test_handler_that_cannot_start_requeues_until_fixed(broker, cleanup, warrend, tmp_path, qtype):
    """Not the message's fault: the handler vanishes while warrend runs; the
    message is requeued, never retried or parked; the workers back off without
    taking messages (each checks the handler before it consumes) and say why
    once; once the handler is back the message is handled."""
    runs = tmp_path / "runs"
    handler = tmp_path / "bin" / "later.sh"
    handler.parent.mkdir()
    write_script(handler, LATER)
    attempts = 2
    w = warrend([str(handler), str(runs)], workers=1,
                queue_extra=f'    type = "{qtype}"\n' + retry_conf(attempts=attempts, delay=1))
    w.wait_consuming(1)
    failed = w.queue + ".failed"
    away = tmp_path / "later.away"
    os.rename(handler, away)
    broker.publish(w.queue, "wait for me", message_id="c-1")

    def parked():
        return "; ".join(l.split(": ", 3)[-1] for l in result_lines(w, "c-1"))

    wait_for(lambda: re.search(r"c-1: configuration problem: cannot run .*later\.sh.*; message requeued",
                               w.log()),
             timeout=30, interval=0.1, message="the configuration problem logged")
    # back in the queue, taken by nobody while the handler is missing
    wait_for(lambda: broker.ready_count(w.queue) == 1 and broker.consumer_count(w.queue) == 0,
             timeout=30, interval=0.1, message="the message ready again, no consumer")
    started = time.monotonic()
    wait_for(lambda: len(re.findall(r"configuration problem", w.log())) >= 2,
             timeout=30, interval=0.1, message="the master's word on it")
    time.sleep(max(0.0, 4 - (time.monotonic() - started)))   # let respawns happen
    log = w.log()
    master_lines = re.findall(r"warning: worker \S+ configuration problem: the handler cannot be started: "
                              r"cannot run \S*later\.sh: No such file or directory; respawning", log)
    assert len(master_lines) == 1, "the cause should be logged once:\n" + log[-3000:]
    assert broker.ready_count(failed) == 0, "parked for a configuration problem: " + parked()
    assert not exists(broker, w.queue + ".retry.1s"), "a configuration problem used up a retry"
    assert broker.ready_count(w.queue) == 1
    assert w.alive()

    # Fix it (atomically: never a half-written or non-executable file).
    os.rename(away, handler)
    wait_for(lambda: read_lines(runs) or broker.ready_count(failed) > 0, timeout=70,
             interval=0.1, message="the message handled once the handler exists")
    assert broker.ready_count(failed) == 0, "parked for a configuration problem: " + parked()
    [line] = wait_result(w, "c-1")
    assert re.search(r"c-1 ack, exit 0, ", line), line
    time.sleep(0.5)
    rows = [l.split() for l in read_lines(runs)]
    assert len(rows) == 1, f"handled {len(rows)} times"
    mid, attempt, redelivered = rows[0]
    assert (mid, redelivered) == ("c-1", "1")
    if qtype == "classic":
        assert attempt == "1", "a configuration problem counted as an attempt"
    else:
        # the one return to the queue shows in x-delivery-count
        assert attempt in ("1", "2"), attempt
    w.wait_consuming(1)
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# floods of output while heartbeats keep the connection

LOUD = r"""
out = sys.stdout.buffer
if BODY == b"flood":
    # 50 MiB as 524288 lines of 100 bytes, over ~6 s
    chunk = (b"a" * 100 + b"\n") * 8192
    for i in range(64):
        out.write(chunk)
        out.flush()
        time.sleep(0.1)
elif BODY == b"longline":
    # one 1 MiB line, dribbled out over ~6 s, then a short one
    for i in range(64):
        out.write(b"b" * 16384)
        out.flush()
        time.sleep(0.1)
    out.write(b"\nend\n")
    out.flush()
"""


def warrend_connections(broker, queue):
    """({(connection_name, connection pid)}, {negotiated heartbeat timeout})
    of the queue's workers."""
    rows = broker._table("list_connections", "pid", "timeout", "client_properties")
    conns, timeouts = set(), set()
    for pid, timeout, props in rows:
        m = re.search(r'connection_name\W+(warrend [^"]+)', props)
        if m and m.group(1).startswith(f"warrend {queue}/"):
            conns.add((m.group(1), pid))
            timeouts.add(timeout)
    return conns, timeouts


def test_output_floods_do_not_stall_heartbeats(broker, cleanup, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = handler(tmp_path / "loud.py", LOUD)
    # One worker runs both, one after the other (two at once would also
    # test that concurrent log lines stay whole: a test of its own below).
    w = warrend([h, str(runs)], workers=1, heartbeat=2)
    w.wait_consuming(1)
    workers = w.wait_children(1)
    conns, timeouts = warrend_connections(broker, w.queue)
    assert len(conns) == 1, conns
    assert timeouts == {"2"}, f"heartbeat not negotiated to 2 s: {timeouts}"

    broker.publish_many(w.queue, [(b"flood", None, "flood", {}),
                                  (b"longline", None, "longline", {})])
    # (the log grows to megabytes: read it seldom, not to steal the CPU)
    wait_for(lambda: result_lines(w, "flood") and result_lines(w, "longline"),
             timeout=60, interval=1, message="both messages settled")
    rs = runs_of(runs)
    assert sorted(r["mid"] for r in rs) == ["flood", "longline"], "a message ran twice"
    assert all(r["redelivered"] == "0" for r in rs)
    for mid in ("flood", "longline"):
        [line] = result_lines(w, mid)
        assert re.search(rf"{mid} ack, exit 0, \d+ ms$", line), line
        ms = int(re.search(r"(\d+) ms$", line).group(1))
        # long enough that a worker deaf to heartbeats would have been cut off
        assert ms >= 5000, f"{mid} ran only {ms} ms: the test proves nothing"

    # Same worker, same connection: nobody was disconnected or respawned.
    assert w.children() == workers
    assert warrend_connections(broker, w.queue)[0] == conns
    log = w.log()
    trouble = [l for l in log.splitlines()
               if re.match(r"warrend\[\d+\]: (warning|err|crit|alert|emerg)", l)
               and not l.endswith("more lines not logged")]
    assert trouble == [], f"warrend had trouble: {trouble[:5]}"

    # The flood: 10,000 lines logged, the rest counted.
    flood = output_lines(w, "flood")
    assert len(flood) == 10000, len(flood)
    assert all(l == "a" * 100 for l in flood)
    assert re.search(r": flood: stdout: 514288 more lines not logged$", log, re.M), \
        "no (or a wrong) 'more lines not logged' note"

    # The 1 MiB line: split into 4096-byte pieces, nothing lost. (An empty
    # piece after the last full one is test_split_line_...'s business.)
    long = output_lines(w, "longline")
    assert long[-1] == "end", long[-1][:80]
    pieces = [l for l in long[:-1] if l]
    assert len(pieces) == 256, len(pieces)
    assert all(len(p) == 4096 for p in pieces), "a piece is not 4096 bytes"
    assert "".join(pieces) == "b" * (1 << 20)
    stop_and_assert_empty(broker, w)


# ---------------------------------------------------------------------------
# how output is logged: split lines, concurrent workers, control bytes

SPLIT = r"""
sys.stdout.write("x" * 8192 + "\n" + "y" * 5000 + "\nend\n")
"""


def test_split_line_logs_exactly_its_pieces(broker, cleanup, warrend, tmp_path):
    """A line over 4096 bytes is logged as its 4096-byte pieces and nothing
    else: a line of exactly 2 x 4096 bytes is two log lines, not two and an
    empty one."""
    w = handle_one(broker, warrend, tmp_path, SPLIT, "split")
    # (length, characters) of each logged line, to keep a failure readable
    got = [(len(l), "".join(sorted(set(l)))) for l in output_lines(w, "split")]
    assert got == [(4096, "x"), (4096, "x"), (4096, "y"), (904, "y"), (3, "den")]
    w.stop()


# Waits until both handlers are ready, then both write 2500 lines of 4050
# bytes (one letter per message) at once: with its prefix each log line is
# over 4 KiB.
TOGETHER = r"""
d = os.path.dirname(RUNS)
open(os.path.join(d, "ready." + ENV["WARREN_MESSAGE_ID"]), "w").close()
deadline = time.monotonic() + 20
while len([n for n in os.listdir(d) if n.startswith("ready.")]) < 2:
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.01)
line = BODY * 4050 + b"\n"
for i in range(2500):
    sys.stdout.buffer.write(line)
sys.stdout.flush()
"""


def test_concurrent_long_output_lines_stay_whole(broker, cleanup, warrend, tmp_path):
    """Two workers logging long handler lines at the same moment: every log
    line is one whole event (warrend's stderr log is meant to be written one
    write per line, so that lines of several processes never mix)."""
    runs = tmp_path / "runs"
    h = handler(tmp_path / "together.py", TOGETHER)
    w = warrend([h, str(runs)], workers=2)
    w.wait_consuming(2)
    broker.publish_many(w.queue, [(b"p", None, "lp", {}), (b"q", None, "lq", {})])
    wait_for(lambda: result_lines(w, "lp") and result_lines(w, "lq"), timeout=60,
             interval=0.2, message="both messages settled")
    good = re.compile(r"warrend\[\d+\]: info: [^ ]+/[12]: l([pq]): stdout: ([pq]{4050})$")
    whole = {"p": 0, "q": 0}
    broken = []
    for line in w.log().splitlines():
        if not line.startswith("warrend[") or ": lp: stdout: " in line \
                or ": lq: stdout: " in line:
            m = good.match(line)
            if m and m.group(1) == m.group(2)[0]:
                whole[m.group(1)] += 1
            else:
                broken.append(line)
    assert broken == [], (
        f"{len(broken)} log lines were cut or mixed with another worker's, e.g. "
        + "; ".join(f"{len(l)} bytes: {l[:70]}...{l[-40:]}" for l in broken[:2]))
    assert whole == {"p": 2500, "q": 2500}
    w.stop()


CONTROL = r"""
sys.stdout.buffer.write(b"\x01" * 4106 + b"\n" + b"tab\there\x7f\x1b[0m\r\n" + b"end\n")
"""


def test_control_bytes_are_escaped_in_full(broker, cleanup, warrend, tmp_path):
    """Control bytes are logged as \\xNN, all of them: a 4096-byte piece of
    them is 16384 characters in the log, not cut short."""
    w = handle_one(broker, warrend, tmp_path, CONTROL, "ctl")
    out = output_lines(w, "ctl")
    assert len(out) == 4, [l[:60] for l in out]
    assert out[2] == "tab\there\\x7f\\x1b[0m\\x0d", out[2]
    assert out[3] == "end"
    assert out[1] == "\\x01" * 10, out[1]
    assert out[0] == "\\x01" * 4096, \
        f"{len(out[0])} characters logged for the first 4096 bytes, not 16384"
    w.stop()


# ---------------------------------------------------------------------------
# copies that the broker would refuse or drop (found in review)

EXIT_3 = r"""
sys.exit(3)
"""


def test_user_id_of_another_user_does_not_block_retry_and_park(broker, cleanup, warrend, tmp_path):
    """RabbitMQ refuses a publish whose user_id is not the publisher's login:
    copies must not carry the producer's user_id, or the message loops."""
    runs = tmp_path / "runs"
    h = handler(tmp_path / "fail.py", EXIT_3)
    broker.ctl("add_user", "warren-producer", "pw")
    try:
        broker.ctl("set_permissions", "-p", "/", "warren-producer", ".*", ".*", ".*")
        w = warrend([h, str(runs)], queue_extra=retry_conf(attempts=2, delay=1))
        w.wait_consuming(1)
        creds = pika.PlainCredentials("warren-producer", "pw")
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", broker.port, "/", creds))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("", w.queue, b"from another user",
                             pika.BasicProperties(delivery_mode=2, message_id="uid-1",
                                                  user_id="warren-producer"))
        finally:
            conn.close()
        props, body = wait_parked(broker, w.queue)
        assert body == b"from another user"
        assert props.headers["x-warren-attempts"] == 2
        assert props.user_id is None
        assert [r["attempt"] for r in runs_of(runs)] == [1, 2]
        stop_and_assert_empty(broker, w)
    finally:
        broker.ctl("delete_user", "warren-producer")


def test_many_headers_keep_the_attempt_count(broker, cleanup, warrend, tmp_path):
    """warren's own headers are never crowded out by the message's."""
    runs = tmp_path / "runs"
    h = handler(tmp_path / "fail.py", EXIT_3)
    w = warrend([h, str(runs)], queue_extra=retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    headers = {f"x-h{i:03d}": f"v{i}" for i in range(140)}
    broker.publish(w.queue, b"crowded", headers=headers, message_id="many-1")
    props, body = wait_parked(broker, w.queue)
    assert props.headers["x-warren-attempts"] == 2
    assert props.headers["x-warren-reason"] == "exit 3"
    assert all(props.headers[k] == v for k, v in headers.items())
    assert [r["attempt"] for r in runs_of(runs)] == [1, 2]
    stop_and_assert_empty(broker, w)


def test_parking_queue_deleted_meanwhile_loses_nothing(broker, cleanup, warrend, tmp_path):
    """A copy to a queue deleted since the worker declared it comes back
    (mandatory); the queue is declared again and the copy published once
    more, so the message is parked without running the handler again."""
    runs = tmp_path / "runs"
    h = handler(tmp_path / "bad.py", "sys.exit(65)\n")
    w = warrend([h, str(runs)])
    w.wait_consuming(1)
    broker.publish(w.queue, b"first", message_id="del-1")
    props, body = wait_parked(broker, w.queue)
    assert body == b"first"
    broker.delete_queue(w.queue + ".failed")
    assert not exists(broker, w.queue + ".failed")
    broker.publish(w.queue, b"second", message_id="del-2")
    props, body = wait_parked(broker, w.queue, timeout=60)
    assert body == b"second" and props.message_id == "del-2"
    assert "could not route" in w.log()
    assert len(runs_of(runs)) == 2, "the handler ran again"
    stop_and_assert_empty(broker, w)
