"""Quorum queues that never drop (SPEC: queue.delivery_limit): declared with
x-delivery-limit and at-least-once dead-lettering to NAME.failed, so a
message the broker gives up on is parked, and warrenctl failed shows it
with the broker's reason from x-death.

A single node hosts quorum queues (RabbitMQ 3.10); what is tested here is
the queue's own limit and dead-lettering, which do not need a cluster.
"""

import json
import re
import shutil
import subprocess

from conftest import (BUILDDIR, WARREND, read_lines, wait_for, write_script)

WARRENCTL = BUILDDIR / "src" / "warrenctl"

# argv: RUNS. Records itself, then SIGKILLs its parent, the worker: every
# delivery of the message ends without an outcome.
KILL_WORKER = r"""
#!/bin/sh
cat >/dev/null
printf '%s %s %s\n' "$WARREN_ATTEMPT" "$$" "$PPID" >>"$1"
kill -9 "$PPID"
sleep 30
"""


def arguments_of(broker, queue):
    info = broker.queue_info(queue, "arguments")
    assert info is not None, f"no queue {queue}"
    return info["arguments"]


def ctl(conf, *args, prefix=()):
    r = subprocess.run([*prefix, str(WARRENCTL), "-c", str(conf), *args],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, f"warrenctl {args}: {r.returncode}\n{r.stderr}{r.stdout}"
    return r.stdout


def test_message_killing_its_worker_is_parked_by_the_broker(broker, warrend, tmp_path):
    runs = tmp_path / "runs"
    h = write_script(tmp_path / "killer.sh", KILL_WORKER)
    # attempts 5 (the default) would let warrend park it at its 6th
    # delivery; the broker's limit of 3 comes first
    w = warrend([h, str(runs)], workers=1,
                queue_extra='    type = "quorum"\n    delivery_limit = 3')
    q = w.queue

    # -t says the limit is below the attempts
    r = subprocess.run([str(WARREND), "-t", "-c", str(w.conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert re.search(rf'{re.escape(str(w.conf))}:\d+: warning: queue "{re.escape(q)}": '
                     r"delivery_limit = 3 is below retry attempts = 5", r.stdout + r.stderr)

    w.wait_consuming(1, timeout=30)
    args = arguments_of(broker, q)
    for want in ("x-queue-type", "quorum", "x-delivery-limit", "x-dead-letter-strategy",
                 "at-least-once", "x-overflow", "reject-publish",
                 "x-dead-letter-routing-key", q + ".failed"):
        assert want in args, args
    assert broker.queue_info(q + ".failed", "name") is not None

    broker.publish(q, "poison", message_id="q-poison")
    wait_for(lambda: broker.ready_count(q + ".failed") == 1, 90,
             message="the message dead-lettered to NAME.failed")
    rows = [l.split() for l in read_lines(runs)]
    for row in rows:
        w.extra_pids.add(int(row[1]))
    # delivered 3 or 4 times (the limit, or once past it: RabbitMQ's count)
    print(f"the handler ran {len(rows)} times before the broker parked it")
    assert 3 <= len(rows) <= 4, rows
    assert broker.ready_count(q) == 0

    out = ctl(w.conf, "failed", q)
    [line] = [l for l in out.splitlines() if l.startswith("q-poison")]
    assert "delivery_limit" in line, out
    # the x-death reading under memcheck, where valgrind is installed
    vg = shutil.which("valgrind")
    memcheck = [vg, "-q", "--leak-check=full", "--errors-for-leak-kinds=definite",
                "--error-exitcode=99"] if vg else []
    [row] = json.loads(ctl(w.conf, "failed", q, "--json", prefix=memcheck))
    assert row["message_id"] == "q-poison", row
    assert row["reason"] == "delivery_limit", row
    assert row["dead_lettered_from"] == q, row
    assert isinstance(row["failed_at"], int), row
    # warrenctl failed gave it back: still parked
    assert broker.ready_count(q + ".failed") == 1
    # the pool is back after the deaths
    w.wait_consuming(1, timeout=60)
    w.stop()

    # replay --reason picks it by the broker's reason; the copy keeps it
    out = ctl(w.conf, "replay", q, "--reason", "delivery_limit")
    assert "replayed 1" in out, out
    assert broker.ready_count(q + ".failed") == 0
    _, props, body = broker.get(q)
    assert body == b"poison"
    assert props.headers["x-warren-replayed-from"] == "delivery_limit", props.headers
    assert "x-death" not in props.headers and "x-warren-reason" not in props.headers
