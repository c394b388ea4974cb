"""Broker faults and odd messages: never loop, hang or lose a task (issue 8;
SPEC: broker.consumer_timeout, broker.connect_timeout, retries and parking).

Each fault here used to make a worker loop: the message went back to the
queue, the handler ran again, the worker restarted, forever. Each test
makes one fault happen and checks that the message settles for good
(acked, parked, or rejected to a dead-letter queue), that its handler ran a
bounded number of times, that the worker did not restart where it need not,
and that the log says why, once.

The tests that change the broker's own settings (consumer_timeout, the
memory watermark) must not share the session broker, so this file starts
one private node of its own (module scope) and runs all of its tests on it;
each test restores what it changed. `warrend -t` checks need no broker.

Each test prints what it measured (times to settle, handler runs): run with
-s, or read the junit output.
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import (BROKER_SCRIPT, WARREND, Broker, Warrend, conf_list,
                      conf_string, finish_daemons, free_port, pid_alive,
                      queue_name_for, retry_conf, runs_of,
                      wait_for, write_script)

EX_CONFIG = 78

# ---------------------------------------------------------------------------
# a broker of this file's own


@pytest.fixture(scope="module")
def fbroker(tmp_path_factory):
    if not BROKER_SCRIPT.exists():
        pytest.fail(f"{BROKER_SCRIPT} is missing")
    directory = tmp_path_factory.mktemp("faults-broker")
    port = free_port()
    r = subprocess.run([str(BROKER_SCRIPT), "start", str(directory), str(port)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=150)
    if r.returncode != 0:
        subprocess.run([str(BROKER_SCRIPT), "stop", str(directory)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=90)
        pytest.fail(f"could not start the test broker: {r.stderr}{r.stdout}")
    b = Broker(directory, port)
    try:
        yield b
    finally:
        subprocess.run([str(BROKER_SCRIPT), "stop", str(directory)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=90)


RETRY_DELAYS = (1, 2, 3, 4, 8, 10, 20, 40, 80)


def all_queues_of(q):
    return [q, q + ".failed", q + ".dlq"] + [f"{q}.retry.{d}s" for d in RETRY_DELAYS]


@pytest.fixture
def undo(fbroker, request):
    """Callbacks run at teardown, after warrend is gone (request this fixture
    before `fwarrend`); then the test's queues are deleted."""
    todo = []
    yield todo
    for f in reversed(todo):
        try:
            f()
        except Exception as e:  # teardown: say it, go on
            print(f"undo failed: {e}")
    try:
        fbroker.delete_queue(*all_queues_of(queue_name_for(request.node.name)))
    except Exception:
        pass


@pytest.fixture
def fwarrend(fbroker, tmp_path, request):
    """Like conftest's `warrend`, on this file's broker, with lines for the
    broker section (broker_extra) as well."""
    started = []

    def start(command, workers=1, queue_extra="", broker_extra="",
              heartbeat=None, prefix=()):
        queue = queue_name_for(request.node.name)
        n = len(started) + 1
        lines = ["broker {", f"    url = {conf_string(fbroker.url)}"]
        if heartbeat is not None:
            lines.append(f"    heartbeat = {heartbeat}")
        lines += [broker_extra, "}", "shutdown_timeout = 10",
                  f"queue {conf_string(queue)} {{",
                  f"    workers = {workers}",
                  f"    command = {conf_list(command)}",
                  queue_extra, "}", ""]
        conf = tmp_path / f"warrend{n}.conf"
        conf.write_text("\n".join(lines))
        env = dict(os.environ)
        env["WARREN_TEST_LEAK"] = "1"
        w = Warrend(conf, tmp_path / f"warrend{n}.log", [queue], fbroker, env,
                    prefix)
        started.append(w)
        return w

    if not WARREND.exists():
        pytest.fail(f"{WARREND} is not built")
    yield start
    finish_daemons(request, started, lambda w: fbroker,
                   lambda w: all_queues_of(w.queue))


# ---------------------------------------------------------------------------
# handlers and helpers

# The top of every handler: appends one JSON line describing this run to
# argv[1] (RUNS), then does what the rest of the script says. DIR is the
# directory of RUNS, for marker files.
PRELUDE = r"""#!/usr/bin/python3
import json, os, signal, sys, time
RUNS = sys.argv[1]
DIR = os.path.dirname(RUNS)
BODY = sys.stdin.buffer.read()
ENV = os.environ
MID = ENV.get("WARREN_MESSAGE_ID", "-")
ATTEMPT = int(ENV.get("WARREN_ATTEMPT", "0"))
_run = {"t": time.monotonic(), "pid": os.getpid(), "ppid": os.getppid(),
        "attempt": ATTEMPT, "redelivered": ENV.get("WARREN_REDELIVERED"),
        "mid": MID}
_fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(_fd, (json.dumps(_run) + "\n").encode())
os.close(_fd)

def runs_so_far():
    with open(RUNS) as f:
        return [json.loads(l) for l in f if l.strip()]
"""


def handler(path, code):
    return write_script(path, PRELUDE + code.lstrip("\n"))


def result_lines(w, mid):
    """warrend's result lines for message mid (ack/retry/failed/requeued)."""
    pat = re.compile(rf": {re.escape(mid)} (ack|retry|failed|requeued), ")
    return [l for l in w.log().splitlines() if pat.search(l)]


def said(w, pattern):
    """warrend's log lines matching regex pattern, each without its
    "warrend[PID]: " prefix and with the queue's name written Q (so that
    neither a pid nor a test's name can match)."""
    out = []
    for line in w.log().splitlines():
        line = re.sub(r"^warrend\[\d+\]: ", "", line).replace(w.queue, "Q")
        if re.search(pattern, line):
            out.append(line)
    return out


def take_parked(b, queue, n, timeout):
    """Wait for n messages in QUEUE.failed, take them: [(props, body)]."""
    failed = queue + ".failed"
    wait_for(lambda: b.ready_count(failed) >= n, timeout=timeout, interval=0.2,
             message=f"{n} message(s) parked in {failed}")
    out = []
    for _ in range(n):
        method, props, body = b.get(failed)
        assert method is not None, f"{failed} emptier than it said"
        out.append((props, body))
    return out


def declare(b, name, arguments=None):
    conn = b.connect()
    try:
        conn.channel().queue_declare(name, durable=True, arguments=arguments)
    finally:
        conn.close()


def assert_settled(b, w):
    """Stop warrend cleanly; nothing may be left in its queue (a message it
    held unacked would be back, ready, once its connection closed)."""
    w.stop()
    wait_for(lambda: b.consumer_count(w.queue) == 0, timeout=10, interval=0.1,
             message="no consumers left")
    counts = b.queue_counts(w.queue)
    assert counts == (0, 0), f"left in {w.queue} (ready, unacked): {counts}"


def worker_pid_of_run(w, run):
    assert run["ppid"] in w.children(), \
        f"the handler's parent {run['ppid']} is not a worker of warrend {w.children()}"
    return run["ppid"]


# ---------------------------------------------------------------------------
# 6. warrend -t: warnings about timeouts, ranges of the new keys


def conf_lines(port, broker_line="", slow_timeout_line=""):
    return [
        "broker {",                                           # 1
        f'    url = "amqp://guest:guest@127.0.0.1:{port}/"',  # 2
        broker_line,                                          # 3
        "}",                                                  # 4
        'queue "fast.q" {',                                   # 5
        '    command = {"/bin/true"}',                        # 6
        "    timeout = 60",                                   # 7
        "}",                                                  # 8
        'queue "slow.q" {',                                   # 9
        '    command = {"/bin/true"}',                        # 10
        slow_timeout_line,                                    # 11
        "}",                                                  # 12
    ]


def timeout_warnings(stderr):
    """-t's warnings, less the one about handlers that run as warrend's
    own user (these queues set no user: that is test_contain's)."""
    return [l for l in stderr.splitlines()
            if "warning:" in l and "warrend's own user" not in l]


def check(tmp_path, lines):
    path = tmp_path / "warrend.conf"
    path.write_text("\n".join(lines) + "\n")
    if not WARREND.exists():
        pytest.fail(f"{WARREND} is not built")
    r = subprocess.run([str(WARREND), "-t", "-c", str(path)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=15)
    return path, r


@pytest.mark.parametrize("broker_line,slow_line", [
    ("", ""),                                   # timeout left at 0 (none)
    ("", "    timeout = 0"),
    ("    consumer_timeout = 1800", "    timeout = 2000"),
    ("    consumer_timeout = 120", "    timeout = 600"),
], ids=["timeout-default", "timeout-0", "timeout-2000-ct-1800", "timeout-600-ct-120"])
def test_check_warns_of_timeout_not_below_consumer_timeout(tmp_path, broker_line, slow_line):
    path, r = check(tmp_path, conf_lines(free_port(), broker_line, slow_line))
    print(f"stderr: {r.stderr!r}")
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert "configuration OK" in r.stdout, r.stdout
    warnings = timeout_warnings(r.stderr)
    assert len(warnings) == 1, f"want one warning, about slow.q: {r.stderr!r}"
    [line] = warnings
    assert '"slow.q"' in line or "slow.q" in line, line
    assert "fast.q" not in line, line
    # the queue section's line: where it opens or (libconfuse) closes
    assert re.match(rf"{re.escape(str(path))}:(9|12): ", line), \
        f"not FILE:LINE of the queue section: {line}"


@pytest.mark.parametrize("broker_line", [
    "",
    "    consumer_timeout = 1800",
    "    consumer_timeout = 604800",
    "    connect_timeout = 1",
    "    connect_timeout = 3600",
], ids=["defaults", "ct-1800", "ct-max", "connect-1", "connect-max"])
def test_check_quiet_when_timeout_below_consumer_timeout(tmp_path, broker_line):
    path, r = check(tmp_path, conf_lines(free_port(), broker_line, "    timeout = 60"))
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert "configuration OK" in r.stdout, r.stdout
    assert timeout_warnings(r.stderr) == [], r.stderr


@pytest.mark.parametrize("broker_line", [
    "    connect_timeout = 0",
    "    connect_timeout = 10000000",
    "    consumer_timeout = 0",
    "    consumer_timeout = 10000000",
    "    consumer_timeout = -1",
], ids=["connect-0", "connect-huge", "ct-0", "ct-huge", "ct-negative"])
def test_check_rejects_out_of_range_timeouts(tmp_path, broker_line):
    path, r = check(tmp_path, conf_lines(free_port(), broker_line, "    timeout = 60"))
    print(f"stderr: {r.stderr!r}")
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    assert f"{path}:3:" in r.stderr, r.stderr
    assert "configuration OK" not in r.stdout


# ---------------------------------------------------------------------------
# 3. the parking queue nacks the copy: the original is rejected, not looped

PARK_AT_ONCE = r"""
sys.exit(65)
"""


def test_parking_queue_that_nacks_rejects_the_original(fbroker, undo, fwarrend, tmp_path):
    b, runs = fbroker, tmp_path / "runs"
    q = queue_name_for("test_parking_queue_that_nacks_rejects_the_original")
    failed, dlq = q + ".failed", q + ".dlq"
    rej, dlx = "rej-" + q, "dlx-" + q
    undo.append(lambda: b.ctl("clear_policy", rej))
    undo.append(lambda: b.ctl("clear_policy", dlx))
    b.ctl("set_policy", "--apply-to", "queues", rej, "^" + re.escape(failed) + "$",
          json.dumps({"max-length": 0, "overflow": "reject-publish"}))
    b.ctl("set_policy", "--apply-to", "queues", dlx, "^" + re.escape(q) + "$",
          json.dumps({"dead-letter-exchange": "", "dead-letter-routing-key": dlq}))
    for name in (q, failed, dlq):
        declare(b, name)
    table = {row[0]: row[1] for row in b._table("list_queues", "name", "policy")}
    assert (table.get(q), table.get(failed)) == (dlx, rej), table

    h = handler(tmp_path / "bad.py", PARK_AT_ONCE)
    w = fwarrend([h, str(runs)], queue_extra=retry_conf(attempts=3, delay=1))
    w.wait_consuming(1)
    [worker] = w.wait_children(1)
    mids = [f"pq-{i}" for i in range(3)]
    t0 = time.monotonic()
    b.publish_many(q, [(f"body {m}".encode(), {"x-custom": m}, m, {}) for m in mids])

    wait_for(lambda: b.ready_count(dlq) >= 3, timeout=30, interval=0.2,
             message=f"3 messages rejected to {dlq}")
    settle = time.monotonic() - t0
    time.sleep(1.5)     # a requeue or a retry (1 s) would run one again
    rs = runs_of(runs)
    print(f"\nnack: 3 messages rejected to {dlq} in {settle:.2f}s; "
          f"handler runs {len(rs)}; workers {sorted({r['ppid'] for r in rs})}")
    assert sorted(r["mid"] for r in rs) == mids, \
        f"the handler ran {len(rs)} times for 3 messages: {[r['mid'] for r in rs]}"
    got = {}
    for _ in range(3):
        method, props, body = b.get(dlq)
        assert method is not None
        got[props.message_id] = (props, body)
    assert sorted(got) == mids
    for m, (props, body) in got.items():
        assert body == f"body {m}".encode()
        assert props.headers["x-custom"] == m
        death = props.headers["x-death"][0]
        assert (death["reason"], death["queue"]) == ("rejected", q), death
    assert b.ready_count(dlq) == 0, "rejected more than once"
    assert w.children() == [worker], "the worker restarted"
    assert {r["ppid"] for r in rs} == {worker}

    for m in mids:
        assert said(w, rf"\b{m}\b.*\brejected\b"), f"the log does not say {m} was rejected"
    why = said(w, r"(?i)\bnack(ed)?\b|\brefused\b")
    print("nack: explanation lines:\n  " + "\n  ".join(why))
    assert len(why) == 1, f"the cause should be said once per worker: {why}"
    assert not said(w, "respawning")
    assert_settled(b, w)
    assert b.queue_counts(failed) == (0, 0)


# ---------------------------------------------------------------------------
# 4. a retry queue declared by someone else with other arguments: park

FAIL_3 = r"""
sys.exit(3)
"""


@pytest.mark.parametrize("how", ["other-arguments", "nacking-policy"])
def test_retry_queue_that_refuses_the_copy_parks_instead(fbroker, undo, fwarrend, tmp_path, how, request):
    """A retry queue declared by someone else with other arguments (our
    declare gets 406 PRECONDITION_FAILED), or one whose policy nacks every
    publish (max-length 0, reject-publish): the retry can never be made, so
    the message is parked at once, and acked (not also rejected)."""
    b, runs = fbroker, tmp_path / "runs"
    q = queue_name_for(request.node.name)
    retry_q, dlq, dlx, rej = q + ".retry.1s", q + ".dlq", "dlx-" + q, "rej-" + q
    if how == "other-arguments":
        declare(b, retry_q, arguments={"x-max-length": 5})
    else:
        undo.append(lambda: b.ctl("clear_policy", rej))
        b.ctl("set_policy", "--apply-to", "queues", rej, "^" + re.escape(retry_q) + "$",
              json.dumps({"max-length": 0, "overflow": "reject-publish"}))
    # to catch an original rejected (not acked) after all
    undo.append(lambda: b.ctl("clear_policy", dlx))
    b.ctl("set_policy", "--apply-to", "queues", dlx, "^" + re.escape(q) + "$",
          json.dumps({"dead-letter-exchange": "", "dead-letter-routing-key": dlq}))
    declare(b, dlq)

    h = handler(tmp_path / "fail.py", FAIL_3)
    w = fwarrend([h, str(runs)], queue_extra=retry_conf(attempts=3, delay=1))
    w.wait_consuming(1)
    [worker] = w.wait_children(1)
    mids = ["rq-1", "rq-2"]
    t0 = time.monotonic()
    b.publish_many(q, [(m.encode(), None, m, {}) for m in mids])

    parked = take_parked(b, q, 2, timeout=30)
    settle = time.monotonic() - t0
    time.sleep(1.5)     # a requeue or a retry would run one again
    rs = runs_of(runs)
    if how == "other-arguments":
        told = said(w, r"Q\.retry\.1s\b.*\b406\b|\b406\b.*Q\.retry\.1s\b")
    else:
        told = said(w, r"(?i)\bnack(ed)?\b|\brefused\b")
    print(f"\nretry queue {how}: 2 messages parked in {settle:.2f}s; handler runs "
          f"{[r['mid'] for r in rs]}; lines explaining it: {len(told)}")
    for l in told:
        print("  " + l)
    assert sorted(r["mid"] for r in rs) == mids, "a handler ran more than once per message"
    assert sorted(p.message_id for p, _ in parked) == mids
    for props, body in parked:
        assert body == props.message_id.encode()
        assert props.headers["x-warren-reason"] == "exit 3", props.headers
        assert props.headers["x-warren-attempts"] == 1, props.headers
    assert w.children() == [worker], "the worker restarted"
    assert {r["ppid"] for r in rs} == {worker}
    assert b.ready_count(dlq) == 0, \
        "the original was rejected (dead-lettered) although its copy was parked"
    for m in mids:
        [line] = result_lines(w, m)
        assert re.search(rf"{m} failed, exit 3, \d+ ms, attempt 1, parked$", line), line
    assert told, "the log does not say why the retry could not be made" + (
        f" (naming {retry_q} and 406)" if how == "other-arguments" else "")
    # one worker: the cause is explained once, not once per message
    assert len(told) == 1, f"said {len(told)} times by one worker"
    info = b.queue_info(retry_q, "arguments", "messages")
    if how == "other-arguments":
        # the stranger's queue is left as it was
        assert "x-max-length" in info["arguments"], info
        assert "x-message-ttl" not in info["arguments"], info
    assert info["messages"] == "0", info
    assert not said(w, "respawning")
    assert_settled(b, w)


# ---------------------------------------------------------------------------
# 5. a message its worker dies on: parked after two crashes, not after kills

# Runs 1 and 2 hang (the test kills the worker); run 3 and later succeed.
HANG_TWICE = r"""
if len(runs_so_far()) <= 2:
    time.sleep(30)
sys.exit(0)
"""

NO_CORE = ("/bin/sh", "-c", 'ulimit -c 0; exec "$0" "$@"')


def kill_worker_twice(b, w, runs, body, sig, message_id=None):
    """Publish body; twice, kill the worker running its handler with sig.
    Returns the pids of the workers killed."""
    w.wait_consuming(1)
    w.wait_children(1)
    b.publish(w.queue, body, message_id=message_id)
    killed = []
    for n in (1, 2):
        wait_for(lambda: len(runs_of(runs)) >= n, timeout=30, interval=0.05,
                 message=f"run {n} of the handler")
        run = runs_of(runs)[n - 1]
        w.extra_pids.add(run["pid"])
        worker = worker_pid_of_run(w, run)
        assert worker not in killed, "the same worker ran it twice"
        os.kill(worker, sig)
        killed.append(worker)
        wait_for(lambda: not pid_alive(worker), timeout=10, message="the worker to die")
    return killed


@pytest.mark.parametrize("mid", ["crash-1", None], ids=["message-id", "no-message-id"])
def test_message_crashing_its_worker_twice_is_parked(fbroker, undo, fwarrend, tmp_path, mid):
    """Two crashes (SIGSEGV) of the worker holding it: the next worker parks
    it without running it. Without a message_id, the message is known by
    its routing key and body."""
    b, runs = fbroker, tmp_path / "runs"
    h = handler(tmp_path / "hang.py", HANG_TWICE)
    w = fwarrend([h, str(runs)], queue_extra=retry_conf(attempts=5, delay=1),
                 prefix=NO_CORE)
    t0 = time.monotonic()
    killed = kill_worker_twice(b, w, runs, "crash-1", signal.SIGSEGV, message_id=mid)
    [(props, body)] = take_parked(b, w.queue, 1, timeout=30)
    settle = time.monotonic() - t0
    time.sleep(1)
    rs = runs_of(runs)
    died = said(w, "worker died")
    print(f"\ncrash: parked {settle:.2f}s after the publish; handler runs "
          f"{len(rs)}; workers killed {killed}; x-warren-attempts "
          f"{props.headers.get('x-warren-attempts')}; lines saying 'worker died':")
    for l in died:
        print("  " + l)
    assert len(rs) == 2, f"the handler ran {len(rs)} times (want 2: not after the 2nd crash)"
    assert body == b"crash-1" and props.message_id == mid
    assert props.headers["x-warren-reason"] == "worker died", props.headers
    assert len(died) == 1, f"want it said once: {died}"
    [line] = result_lines(w, mid or "-")
    assert re.search(r" failed, worker died, .*parked$", line), line
    assert b.ready_count(w.queue + ".failed") == 0, "parked twice"
    w.wait_consuming(1)
    assert_settled(b, w)


def test_message_whose_worker_is_sigkilled_twice_is_not_parked(fbroker, undo, fwarrend, tmp_path):
    b, runs = fbroker, tmp_path / "runs"
    h = handler(tmp_path / "hang.py", HANG_TWICE)
    w = fwarrend([h, str(runs)], queue_extra=retry_conf(attempts=5, delay=1))
    t0 = time.monotonic()
    killed = kill_worker_twice(b, w, runs, "kill-1", signal.SIGKILL, message_id="kill-1")
    wait_for(lambda: result_lines(w, "kill-1"), timeout=30, interval=0.1,
             message="a result for kill-1")
    settle = time.monotonic() - t0
    time.sleep(1)
    rs = runs_of(runs)
    print(f"\nsigkill: settled {settle:.2f}s after the publish; handler runs "
          f"{len(rs)}; workers killed {killed}; {result_lines(w, 'kill-1')}")
    [line] = result_lines(w, "kill-1")
    assert re.search(r"kill-1 ack, exit 0, ", line), line
    assert len(rs) == 3
    assert [r["redelivered"] for r in rs] == ["0", "1", "1"]
    assert b.ready_count(w.queue + ".failed") == 0, "SIGKILLs counted as deaths"
    assert not said(w, "worker died")
    w.wait_consuming(1)
    assert_settled(b, w)


# ---------------------------------------------------------------------------
# 1. consumer_timeout: the broker's, learnt the hard way; the configured one

SLOW = r"""
time.sleep(12)
sys.exit(0)
"""

CT_ENV = ("application:set_env(rabbit, consumer_timeout, {ct}), "
          "application:set_env(rabbit, channel_tick_interval, {tick}).")


@pytest.fixture
def broker_ct3(fbroker):
    """The broker's consumer_timeout at 3000 ms, checked every second, for
    channels opened from now on; RabbitMQ's defaults back afterwards."""
    fbroker.ctl("eval", CT_ENV.format(ct=3000, tick=1000))
    try:
        yield fbroker
    finally:
        fbroker.ctl("eval", CT_ENV.format(ct=1800000, tick=60000))


# the line that says what the broker's consumer_timeout is, and the advice
LEARNT = r"^(?=.*\b3000 ms\b)(?=.*\bbroker\.consumer_timeout\b)"


def duration_ms(line):
    return int(re.search(r", (\d+) ms", line).group(1))


def test_broker_consumer_timeout_is_learnt_and_the_message_settles(broker_ct3, undo, fwarrend, tmp_path):
    b, runs = broker_ct3, tmp_path / "runs"
    h = handler(tmp_path / "slow.py", SLOW)
    w = fwarrend([h, str(runs)], workers=2, queue_extra=retry_conf(attempts=2, delay=1))
    w.wait_consuming(2)
    w.wait_children(2)
    t0 = time.monotonic()
    b.publish(w.queue, "slow", message_id="ct-1")

    [(props, body)] = take_parked(b, w.queue, 1, timeout=40)
    park_s = time.monotonic() - t0
    rs = runs_of(runs)
    for r in rs:
        w.extra_pids.add(r["pid"])
    learnt = said(w, LEARNT)
    closes = said(w, "timed out")
    respawns = said(w, "respawning")
    workers = sorted({r["ppid"] for r in rs})
    print(f"\nbroker consumer_timeout: parked {park_s:.2f}s after the publish; "
          f"handler runs {len(rs)} (attempts {[r['attempt'] for r in rs]}); "
          f"worker pids {workers}; respawn lines {len(respawns)}; "
          f"x-warren-reason {props.headers.get('x-warren-reason')!r}")
    for l in learnt + closes + respawns:
        print("  " + l)
    assert body == b"slow" and props.message_id == "ct-1"
    assert "consumer_timeout" in props.headers["x-warren-reason"], props.headers
    assert props.headers["x-warren-attempts"] == 2, props.headers
    assert 1 <= len(rs) <= 3, f"the handler ran {len(rs)} times with attempts = 2"
    assert len(learnt) == 1, f"want one line with the broker's 3000 ms and the advice: {learnt}"
    assert len(respawns) <= 2 and len(workers) <= 3, "the worker kept restarting"
    wait_for(lambda: b.queue_counts(w.queue) == (0, 0), timeout=15, interval=0.5,
             message="nothing ready or unacked in the queue")
    wait_for(lambda: not any(pid_alive(r["pid"]) for r in rs), timeout=10,
             message="every handler gone")

    # From now on every worker uses the broker's value, also the one that
    # never saw the broker close a channel: two slow messages at once, one
    # for each worker, are stopped by warrend before the broker would.
    w.wait_consuming(2)
    n_closes = len(closes)
    t1 = time.monotonic()
    b.publish_many(w.queue, [(b"slow", None, m, {}) for m in ("ct-2", "ct-3")])
    parked = take_parked(b, w.queue, 2, timeout=30)
    park2_s = time.monotonic() - t1
    lines = result_lines(w, "ct-2") + result_lines(w, "ct-3")
    first = {r["mid"]: r["ppid"] for r in runs_of(runs) if r["attempt"] == 1}
    print(f"broker consumer_timeout, next two messages: parked {park2_s:.2f}s after "
          f"the publish; first runs by workers {first}; results:")
    for l in lines:
        print("  " + l)
    for props2, _ in parked:
        assert props2.headers["x-warren-reason"] == "consumer_timeout 3s", props2.headers
        assert props2.headers["x-warren-attempts"] == 2, props2.headers
    assert len(lines) == 4, lines
    assert all(duration_ms(l) < 3000 for l in lines), \
        f"a handler ran for the broker's whole 3000 ms: {lines}"
    assert first["ct-2"] != first["ct-3"], "not one message for each worker"
    assert len(said(w, "timed out")) == n_closes, "the broker had to close a channel again"
    assert len(said(w, LEARNT)) == 1, "said again"
    assert_settled(b, w)


def test_configured_consumer_timeout_stops_handler_before_broker(broker_ct3, undo, fwarrend, tmp_path):
    b, runs = broker_ct3, tmp_path / "runs"
    h = handler(tmp_path / "slow.py", SLOW)
    w = fwarrend([h, str(runs)], broker_extra="    consumer_timeout = 3",
                 queue_extra=retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    [worker] = w.wait_children(1)
    t0 = time.monotonic()
    b.publish(w.queue, "slow", message_id="cfg-1")

    [(props, body)] = take_parked(b, w.queue, 1, timeout=30)
    park_s = time.monotonic() - t0
    rs = runs_of(runs)
    for r in rs:
        w.extra_pids.add(r["pid"])
    lines = result_lines(w, "cfg-1")
    print(f"\nconfigured consumer_timeout = 3: parked {park_s:.2f}s after the publish; "
          f"handler runs {len(rs)}; results: {lines}")
    assert props.headers["x-warren-reason"] == "consumer_timeout 3s", props.headers
    assert props.headers["x-warren-attempts"] == 2, props.headers
    assert [r["attempt"] for r in rs] == [1, 2]
    assert len(lines) == 2, lines
    assert re.search(r"cfg-1 retry, consumer_timeout 3s, \d+ ms, attempt 1, again in 1 s$",
                     lines[0]), lines[0]
    assert re.search(r"cfg-1 failed, consumer_timeout 3s, \d+ ms, attempt 2, parked$",
                     lines[1]), lines[1]
    assert all(duration_ms(l) < 3000 for l in lines), lines
    broker_said = said(w, r"\b406\b|timed out|PRECONDITION")
    assert broker_said == [], f"the broker closed the channel: {broker_said}"
    assert w.children() == [worker] and {r["ppid"] for r in rs} == {worker}, \
        "the worker restarted"
    wait_for(lambda: not any(pid_alive(r["pid"]) for r in rs), timeout=10,
             message="every handler gone")
    assert_settled(b, w)


# ---------------------------------------------------------------------------
# 2. memory alarm while a retry copy is to be published

# The first run of each message fails (exit 3), later ones succeed. The
# first run of mem-0 waits for the test to raise the alarm first.
FAIL_FIRST = r"""
marker = os.path.join(DIR, "seen." + MID)
if os.path.exists(marker):
    sys.exit(0)
open(marker, "w").close()
if MID == "mem-0":
    open(os.path.join(DIR, "mem-0.started"), "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(DIR, "alarm-on")):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
sys.exit(3)
"""


def alarms(b):
    return b.ctl("eval", "rabbit_alarm:get_alarms().")


def test_memory_alarm_holds_the_retry_copy_until_it_clears(fbroker, undo, fwarrend, tmp_path):
    b, runs = fbroker, tmp_path / "runs"
    q = queue_name_for("test_memory_alarm_holds_the_retry_copy_until_it_clears")
    mids = [f"mem-{i}" for i in range(5)]
    b.publish_many(q, [(m.encode(), None, m, {}) for m in mids])
    undo.append(lambda: b.ctl("set_vm_memory_high_watermark", "0.4"))

    h = handler(tmp_path / "fail_first.py", FAIL_FIRST)
    w = fwarrend([h, str(runs)], heartbeat=2, queue_extra=retry_conf(attempts=3, delay=1))
    wait_for(lambda: (tmp_path / "mem-0.started").exists(), timeout=30,
             message="the first run of mem-0")
    [worker] = w.wait_children(1)
    b.ctl("set_vm_memory_high_watermark", "0.0000001")
    wait_for(lambda: "memory" in alarms(b), timeout=15, interval=0.2,
             message="the broker's memory alarm")
    (tmp_path / "alarm-on").touch()
    alarm_at = time.monotonic()

    # The handler fails now; its retry copy cannot be published. The worker
    # waits, keeps its connection, holds the original, runs nothing else.
    blocked = wait_for(lambda: said(w, "broker blocked publishing"), timeout=10,
                       interval=0.1, message="warrend to say the broker blocks publishing")
    told_s = time.monotonic() - alarm_at
    while time.monotonic() - alarm_at < 8:      # > 2 heartbeat timeouts
        assert w.children() == [worker], "the worker restarted while blocked"
        assert len(runs_of(runs)) == 1, "another handler ran while the copy was blocked"
        time.sleep(0.5)
    counts = b.queue_counts(q)
    retry_ready = b.ready_count(q + ".retry.1s")
    print(f"\nmemory alarm: warrend said so {told_s:.2f}s after the alarm: {blocked}; "
          f"after 8 s (ready, unacked) = {counts}, retry queue {retry_ready}")
    assert counts == (4, 1), f"(ready, unacked) = {counts}, want (4, 1)"
    assert retry_ready == 0

    b.ctl("set_vm_memory_high_watermark", "0.4")
    wait_for(lambda: "memory" not in alarms(b), timeout=15, interval=0.2,
             message="the memory alarm to clear")
    cleared = time.monotonic()

    def all_acked():
        return all(any(" ack, " in l for l in result_lines(w, m)) for m in mids)

    wait_for(all_acked, timeout=40, interval=0.2, message="every message acked")
    settle_s = time.monotonic() - cleared
    time.sleep(1)
    rs = runs_of(runs)
    per = {m: sum(1 for r in rs if r["mid"] == m) for m in mids}
    print(f"memory alarm: all 5 acked {settle_s:.2f}s after the alarm cleared; "
          f"runs per message {per}")
    assert per == {m: 2 for m in mids}, f"runs per message: {per}"
    for m in mids:
        assert [r["attempt"] for r in rs if r["mid"] == m] == [1, 2], m
    assert {r["ppid"] for r in rs} == {worker}
    assert w.children() == [worker], "the worker restarted"
    log_blocked = said(w, "broker blocked publishing")
    log_unblocked = said(w, "broker unblocked publishing")
    print("  " + "\n  ".join(log_blocked + log_unblocked))
    assert len(log_blocked) == 1 and "memory" in log_blocked[0], log_blocked
    assert len(log_unblocked) == 1, log_unblocked
    assert not said(w, "respawning")
    assert_settled(b, w)
    assert b.ready_count(q + ".failed") == 0


BIG_MIB = 40  # > the socket buffers on both sides: the send deadline is 40 s

# Fails its first run once the test has raised the alarm, succeeds later.
FAIL_AFTER_ALARM = r"""
marker = os.path.join(DIR, "seen." + MID)
if os.path.exists(marker):
    sys.exit(0)
open(marker, "w").close()
open(os.path.join(DIR, "big.started"), "w").close()
deadline = time.monotonic() + 30
while not os.path.exists(os.path.join(DIR, "alarm-on")):
    if time.monotonic() > deadline:
        break
    time.sleep(0.05)
sys.exit(3)
"""


def test_big_copy_caught_mid_send_hits_the_sockets_deadline(fbroker, undo, fwarrend, tmp_path):
    """A retry copy larger than the socket buffers, sent as the broker
    blocks publishing: the broker stops reading mid-body. The worker's
    send deadline (30 s, or 1 s per MiB) is the socket's own (poll before
    each frame), not a process-wide alarm: past it the worker drops the
    connection, and the redelivery is settled by the outcome it had."""
    b, runs = fbroker, tmp_path / "runs"
    q = queue_name_for("test_big_copy_caught_mid_send_hits_the_sockets_deadline")
    b.publish_many(q, [(b"x" * (BIG_MIB << 20), None, "big-0", {})])
    undo.append(lambda: b.ctl("set_vm_memory_high_watermark", "0.4"))
    h = handler(tmp_path / "fail_after_alarm.py", FAIL_AFTER_ALARM)
    w = fwarrend([h, str(runs)], heartbeat=2, queue_extra=retry_conf(attempts=3, delay=1))
    wait_for(lambda: (tmp_path / "big.started").exists(), timeout=60,
             message="the first run of big-0")
    b.ctl("set_vm_memory_high_watermark", "0.0000001")
    wait_for(lambda: "memory" in alarms(b), timeout=15, interval=0.2,
             message="the broker's memory alarm")
    (tmp_path / "alarm-on").touch()
    alarm_at = time.monotonic()

    pat = rf"took no data for {BIG_MIB} s"
    wait_for(lambda: said(w, pat), timeout=BIG_MIB + 40, interval=0.2,
             message="the send deadline")
    hit_s = time.monotonic() - alarm_at
    b.ctl("set_vm_memory_high_watermark", "0.4")
    wait_for(lambda: "memory" not in alarms(b), timeout=15, interval=0.2,
             message="the memory alarm to clear")
    wait_for(lambda: any(" ack, " in l for l in result_lines(w, "big-0")),
             timeout=90, interval=0.2, message="big-0 acked")
    rs = runs_of(runs)
    print(f"\nbig copy mid-send: deadline hit {hit_s:.1f}s after the alarm: "
          f"{said(w, pat)}; runs {[r['attempt'] for r in rs]}; "
          f"results {result_lines(w, 'big-0')}")
    assert BIG_MIB - 1 <= hit_s <= BIG_MIB + 30, hit_s
    assert [r["attempt"] for r in rs] == [1, 2], rs
    assert_settled(b, w)
    assert b.ready_count(q + ".failed") == 0


# ---------------------------------------------------------------------------
# 3. prefetch > 1: a message that waited in the prefetch is not failed

ONE_SECOND = r"""
time.sleep(1)
sys.exit(0)
"""


def test_prefetched_message_past_half_its_budget_goes_back_unrun(fbroker, undo, fwarrend, tmp_path):
    """With prefetch 4 and consumer_timeout 3 s, a handler's budget is
    about 1.3 s: the messages waiting behind a 1 s handler would be
    stopped at once and fail every attempt. They go back to the queue
    unrun instead, and each is handled once, nothing parked."""
    b, runs = fbroker, tmp_path / "runs"
    h = handler(tmp_path / "one.py", ONE_SECOND)
    w = fwarrend([h, str(runs)], broker_extra="    consumer_timeout = 3",
                 queue_extra="    prefetch = 4\n" + retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    t0 = time.monotonic()
    b.publish_many(w.queue, [(f"p-{i}", None, f"p-{i}", {}) for i in range(4)])

    def all_acked():
        return all(len([l for l in result_lines(w, f"p-{i}") if " ack, " in l]) == 1
                   for i in range(4))

    wait_for(all_acked, timeout=60, message="the 4 messages acked")
    rs = runs_of(runs)
    back = said(w, r"in the prefetch, too near the consumer_timeout")
    print(f"\nprefetch 4, consumer_timeout 3 s: all acked in {time.monotonic() - t0:.1f} s; "
          f"handler runs {len(rs)}; given back unrun {len(back)} times")
    assert sorted(r["mid"] for r in rs) == [f"p-{i}" for i in range(4)], rs
    assert not said(w, r"consumer_timeout 3s"), "a handler was stopped as a timeout"
    assert b.queue_counts(w.queue + ".failed") in (None, (0, 0))
    assert back, "nothing was given back: the test did not exercise the prefetch"
    assert_settled(b, w)
