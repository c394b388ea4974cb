"""What each message cost (SPEC: journal fields WARREN_CPU_MS and
WARREN_MAX_RSS_KB, warren_handler_cpu_seconds_total{queue}, a parked
message's x-warren-cpu-ms and x-warren-max-rss-kb), in exec and in
persistent mode.

The handler allocates and touches 100 MiB and spins for 0.5 s of CPU on a
"heavy" message, does nothing much on a "light" one, and fails a "bad" one
after the same work (exit 65, or the answer "fail"): that one is parked at
once. warrend's records go to a stand-in for journald's native socket
(sd_helpers.JournalCapture, as in test_notify_journal.py), so the fields
are read as journald would store them.
"""

import re

import pytest

from conftest import wait_for, write_script
from ctl_helpers import ask, sockdir  # noqa: F401 (a fixture)
from sd_helpers import JournalCapture, journal_stream_env

MIB = 1024 * 1024

# The work of one message, by its body: "heavy", "bad" or "light".
WORK = r"""
import os, sys, time

def work(body):
    if body not in (b"heavy", b"bad"):
        return
    block = b"\x01" * (100 * 1024 * 1024)    # memset: every page touched
    t = time.process_time()
    while time.process_time() - t < 0.5:
        pass
    del block
"""

EXEC_HANDLER = "#!/usr/bin/python3\n" + WORK + r"""
body = sys.stdin.buffer.read()
work(body)
sys.exit(65 if body == b"bad" else 0)
"""

PERSISTENT_HANDLER = "#!/usr/bin/python3\n" + WORK + r"""
inp = sys.stdin.buffer
while True:
    head = inp.readline()
    if not head:
        sys.exit(0)
    _, n, length = head.split()
    for _ in range(int(n)):
        inp.readline()
    body = inp.read(int(length))
    work(body)
    sys.stdout.write("fail bad input\n" if body == b"bad" else "ok\n")
    sys.stdout.flush()
"""

METRIC = re.compile(r'^warren_handler_cpu_seconds_total\{queue="([^"]*)"\} (\S+)$', re.M)


def cpu_metric(text, queue):
    found = [float(v) for q, v in METRIC.findall(text) if q == queue]
    assert len(found) == 1, text
    return found[0]


@pytest.mark.parametrize("mode", ["exec", "persistent"])
def test_cost_of_each_message(broker, warrend, tmp_path, sockdir, mode):  # noqa: F811
    handler = write_script(tmp_path / "handler.py",
                           EXEC_HANDLER if mode == "exec" else PERSISTENT_HANDLER)
    cap = JournalCapture(tmp_path / "journal")
    try:
        # stderr is the journal: the first daemon's log file, made first
        log = tmp_path / "warrend1.log"
        env = journal_stream_env(log)
        sock = sockdir / "w.sock"
        w = warrend(command=[handler], env=env, prefix=cap.wrap([]),
                    extra=f'control_socket = "{sock}"',
                    queue_extra=f'    mode = "{mode}"\n    retry {{ attempts = 3 }}')
        q = w.queue
        w.wait_consuming(1)
        for mid in ("heavy", "bad", "light"):
            broker.publish(q, mid.encode(), message_id=mid)

        def outcomes(recs):
            got = {r.get("WARREN_MESSAGE_ID"): r for r in recs
                   if "WARREN_OUTCOME" in r.f}
            return got if {"heavy", "bad", "light"} <= set(got) else None

        got = cap.wait(outcomes, 30, "the outcomes of heavy, bad and light")
        assert log.read_text() == "", "records went to stderr, not the journal"
        cpu = {m: int(r.get("WARREN_CPU_MS")) for m, r in got.items()}
        rss = {m: int(r.get("WARREN_MAX_RSS_KB")) for m, r in got.items()}
        print(f"{mode}: WARREN_CPU_MS {cpu}, WARREN_MAX_RSS_KB {rss}")
        assert got["heavy"].get("WARREN_OUTCOME") == "ack"
        assert got["bad"].get("WARREN_OUTCOME") == "failed"
        for m in ("heavy", "bad"):
            assert cpu[m] >= 400, (m, cpu)
            assert rss[m] >= 100 * 1024, (m, rss)
        # a light message costs little: the figures are per message (in
        # persistent mode too, where the process is the same)
        assert cpu["light"] < 300, cpu
        assert rss["light"] < 100 * 1024, rss

        # the parked copy carries them, as integers
        wait_for(lambda: broker.ready_count(q + ".failed") == 1, 10,
                 message="bad parked")
        _, props, body = broker.get(q + ".failed")
        hd = props.headers
        assert body == b"bad" and hd["x-warren-reason"] in ("exit 65", "bad input")
        assert isinstance(hd["x-warren-cpu-ms"], int), hd
        assert isinstance(hd["x-warren-max-rss-kb"], int), hd
        assert hd["x-warren-cpu-ms"] == cpu["bad"], hd
        assert hd["x-warren-max-rss-kb"] == rss["bad"], hd

        # the counter sums what the log says, message by message
        total = sum(cpu.values()) / 1000

        def counted():
            v = cpu_metric(ask(sock, "metrics")["text"], q)
            return v if abs(v - total) < 1e-6 else None

        v = wait_for(counted, 10, message=f"the counter at {total}")
        assert v >= 0.8
        [qs] = ask(sock, "status")["queues"]
        assert abs(qs["cpu_seconds"] - total) < 1e-6, qs
        w.stop()
    finally:
        cap.close()
