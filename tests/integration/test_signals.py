"""Stopping (SPEC: signals, systemd)."""

import os
import socket
import time

from conftest import pid_alive, wait_for, write_script


def test_sigterm_idle_pool_exits_promptly(broker, warrend):
    w = warrend(["/bin/cat"], workers=3)
    w.wait_consuming(3)
    workers = w.wait_children(3)

    t0 = time.monotonic()
    w.stop(timeout=10)
    took = time.monotonic() - t0
    assert took < 5, f"an idle pool took {took:.1f}s to stop"
    wait_for(lambda: not any(pid_alive(p) for p in workers), timeout=5,
             message="every worker gone")
    assert broker.consumer_count(w.queue) == 0


def test_systemd_notifications(broker, warrend, tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    received = []

    def got(word):
        while True:
            try:
                received.extend(sock.recv(65536).decode().splitlines())
            except BlockingIOError:
                break
        return any(line == word or (word.endswith("=") and line.startswith(word))
                   for line in received)

    try:
        w = warrend(["/bin/cat"], workers=2,
                    env=dict(os.environ, NOTIFY_SOCKET=path))
        wait_for(lambda: got("READY=1"), timeout=30, message="READY=1")
        # READY=1 means every worker consumes (SPEC: systemd).
        assert w.broker.consumer_count(w.queue) == 2
        wait_for(lambda: got("STATUS="), timeout=10, message="a STATUS= line")
        w.stop()
        wait_for(lambda: got("STOPPING=1"), timeout=5, message="STOPPING=1")
    finally:
        sock.close()


SLOW = r"""
#!/usr/bin/python3
# argv: DIR SECONDS. Marks its start, works SECONDS, marks its end.
import os, sys, time
d, seconds = sys.argv[1], float(sys.argv[2])
sys.stdin.buffer.read()
open(os.path.join(d, "started"), "w").write(str(os.getpid()))
time.sleep(seconds)
open(os.path.join(d, "finished"), "w").close()
"""


def test_sigterm_lets_running_handler_finish(broker, warrend, tmp_path):
    h = write_script(tmp_path / "slow.py", SLOW)
    w = warrend([h, str(tmp_path), "2"], workers=2)
    w.wait_consuming(2)
    broker.publish(w.queue, "job", message_id="slow")
    wait_for((tmp_path / "started").exists, timeout=30, message="the handler to start")
    w.stop(timeout=15)
    assert (tmp_path / "finished").exists(), "warrend exited before its handler finished"
    # Its message was acked, not left for redelivery.
    assert broker.queue_counts(w.queue) == (0, 0)


def test_sigterm_past_shutdown_timeout_keeps_the_message(broker, warrend, tmp_path):
    h = write_script(tmp_path / "slow.py", SLOW)
    w = warrend([h, str(tmp_path), "60"], workers=1, shutdown_timeout=1,
                queue_extra="    kill_grace = 1")
    w.wait_consuming(1)
    broker.publish(w.queue, "job", message_id="slow")
    wait_for((tmp_path / "started").exists, timeout=30, message="the handler to start")
    handler = int((tmp_path / "started").read_text())
    w.extra_pids.add(handler)
    t0 = time.monotonic()
    w.stop(timeout=15)
    took = time.monotonic() - t0
    assert took < 8, f"took {took:.1f}s with shutdown_timeout 1 and kill_grace 1"
    assert not pid_alive(handler), "the handler outlived warrend"
    assert not (tmp_path / "finished").exists()
    # Stopped, not handled: the message waits in the queue, not acked.
    assert broker.queue_counts(w.queue) == (1, 0)
