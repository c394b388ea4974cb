"""What happens when things break under a worker: a worker killed mid-message,
a handler that does not read its stdin (SPEC: process model, the handler)."""

import os
import signal

from conftest import pid_alive, read_lines, wait_for, write_script

# Takes the first delivery of a message and sleeps on it (the test kills its
# worker); any later delivery is recorded as done.
CLAIM = r"""
#!/usr/bin/python3
import os, sys, time
d = sys.argv[1]
sys.stdin.buffer.read()
env = os.environ
line = "%s %d %d %s %s %s\n" % (env["WARREN_WORKER"], os.getpid(), os.getppid(),
                                 env.get("WARREN_REDELIVERED"),
                                 env.get("WARREN_ATTEMPT"),
                                 env.get("WARREN_MESSAGE_ID"))
try:
    fd = os.open(os.path.join(d, "claimed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    fd = os.open(os.path.join(d, "done"), os.O_CREAT | os.O_APPEND | os.O_WRONLY)
    os.write(fd, line.encode())
    sys.exit(0)
os.close(fd)
with open(os.path.join(d, "running.tmp"), "w") as f:
    f.write(line)
os.rename(os.path.join(d, "running.tmp"), os.path.join(d, "running"))
time.sleep(120)
"""


def kill_worker_mid_message(broker, w, tmp_path, workers):
    """Publish one message, SIGKILL the worker running it; return
    (killed worker pid, its handler's pid, the original worker pids)."""
    w.wait_consuming(workers)
    before = w.wait_children(workers)
    broker.publish(w.queue, "work", message_id="victim")
    running = tmp_path / "running"
    wait_for(running.exists, timeout=30, message="the handler to start")
    _, handler_pid, worker_pid, redelivered, attempt, _ = running.read_text().split()
    handler_pid, worker_pid = int(handler_pid), int(worker_pid)
    w.extra_pids.add(handler_pid)  # killed at teardown whatever happens
    assert worker_pid in before, "the handler's parent is not a worker of warrend"
    assert (redelivered, attempt) == ("0", "1")
    os.kill(worker_pid, signal.SIGKILL)
    return worker_pid, handler_pid, before


def test_killed_worker_message_redelivered_and_pool_restored(broker, warrend, tmp_path):
    claim = write_script(tmp_path / "claim.py", CLAIM)
    w = warrend([claim, str(tmp_path)], workers=2)
    killed, _, before = kill_worker_mid_message(broker, w, tmp_path, 2)

    done = tmp_path / "done"
    wait_for(lambda: read_lines(done), timeout=30,
             message="the message to be handled again")
    rows = [l.split() for l in read_lines(done)]
    assert len(rows) == 1, rows
    worker, _, _, redelivered, attempt, mid = rows[0]
    assert mid == "victim"
    assert redelivered == "1", "broker's redelivered flag not passed on"

    # Back to full strength: two workers (one new), two consumers.
    after = w.wait_children(2, timeout=30)
    assert killed not in after
    assert len(set(after) & set(before)) == 1
    w.wait_consuming(2)
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="an empty queue")
    w.stop()


def test_handler_does_not_outlive_killed_worker(broker, warrend, tmp_path):
    claim = write_script(tmp_path / "claim.py", CLAIM)
    w = warrend([claim, str(tmp_path)], workers=1)
    _, handler, _ = kill_worker_mid_message(broker, w, tmp_path, 1)
    wait_for(lambda: not pid_alive(handler), timeout=15,
             message=f"handler {handler} to end with its worker")
    w.wait_consuming(1)
    w.stop()


IGNORE_STDIN = r"""
#!/bin/sh
# argv: RESULTS. Never reads stdin.
printf '%s %s\n' "${WARREN_MESSAGE_ID}" "$PPID" >>"$1"
exit 0
"""


def test_handler_ignoring_large_stdin(broker, warrend, tmp_path):
    results = tmp_path / "results"
    h = write_script(tmp_path / "ignore.sh", IGNORE_STDIN)
    w = warrend([h, str(results)], workers=1)
    w.wait_consuming(1)
    [worker] = w.wait_children(1)

    big = os.urandom(1 << 20)
    broker.publish_many(w.queue, [(big, None, f"big{i}", {}) for i in range(3)])
    wait_for(lambda: len(read_lines(results)) >= 3, timeout=30,
             message="3 large messages handled")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="all acked")

    broker.publish(w.queue, "small", message_id="small")
    wait_for(lambda: len(read_lines(results)) >= 4, timeout=30,
             message="the next message handled")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20,
             message="all acked")

    rows = [l.split() for l in read_lines(results)]
    # Each exactly once (a nack/requeue would run it again) by the same,
    # still living worker.
    assert sorted(r[0] for r in rows) == ["big0", "big1", "big2", "small"]
    assert {int(r[1]) for r in rows} == {worker}
    assert w.children() == [worker], "the worker died (SIGPIPE?) and was respawned"
    w.stop()
