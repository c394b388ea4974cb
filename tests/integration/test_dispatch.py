"""The work-queue pattern itself: every message handled once, prefetch 1 per
worker, and fair dispatch of uneven work (SPEC: process model)."""

import time
from collections import Counter

from conftest import read_lines, wait_for, write_script


def max_overlap(intervals):
    """Greatest number of (start, end) intervals open at one instant."""
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    # At equal times an end closes before a start opens.
    events.sort(key=lambda e: (e[0], e[1]))
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


def test_thousand_messages_each_handled_exactly_once(broker, warrend, handlers, tmp_path):
    import hashlib

    results = tmp_path / "results"
    w = warrend([handlers.recorder(results), str(results)], workers=4)
    w.wait_consuming(4)
    workers = w.wait_children(4)

    n = 1000
    bodies = {f"m{i:04d}": f"task {i} " + "." * (i % 7) for i in range(n)}
    broker.publish_many(
        w.queue, [(body, None, mid, {}) for mid, body in bodies.items()]
    )

    wait_for(lambda: len(read_lines(results)) >= n, timeout=180,
             message=f"{n} handled messages")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=30,
             message="an empty queue with nothing unacked")

    lines = [l.split() for l in read_lines(results)]
    ids = Counter(l[1] for l in lines)
    dupes = {k: v for k, v in ids.items() if v > 1}
    assert not dupes, f"handled more than once: {sorted(dupes)[:10]}"
    assert set(ids) == set(bodies), f"missing: {sorted(set(bodies) - set(ids))[:10]}"
    assert len(lines) == n

    for worker, mid, digest, _ in lines:
        assert digest == hashlib.sha256(bodies[mid].encode()).hexdigest(), mid

    took_part = Counter(l[0] for l in lines)
    assert set(took_part) <= {"1", "2", "3", "4"}, took_part
    assert len(took_part) > 1, f"only one worker did all the work: {took_part}"
    # Handlers are children of the workers, which are children of warrend.
    assert {int(l[3]) for l in lines} <= set(workers)
    assert w.children() == workers, "a worker was replaced while all went well"
    w.stop()


GATE = r"""
#!/bin/sh
# argv: DIR. Signals that it started, then holds the message until
# DIR/release exists.
cat >/dev/null
start=$(date +%s%N)
: >"$1/started.$WARREN_MESSAGE_ID"
while [ ! -e "$1/release" ]; do sleep 0.05; done
end=$(date +%s%N)
printf '%s %s %s %s\n' "$WARREN_WORKER" "$WARREN_MESSAGE_ID" "$start" "$end" >>"$1/results"
"""


def test_prefetch_one_per_worker_and_bounded_concurrency(broker, warrend, tmp_path):
    gate = write_script(tmp_path / "gate.sh", GATE)
    w = warrend([gate, str(tmp_path)], workers=4)
    w.wait_consuming(4)

    consumers = broker.consumers(w.queue)
    assert len(consumers) == 4, consumers
    for c in consumers:
        assert c["prefetch_count"] == "1", consumers
        assert c["ack_required"] == "true", consumers

    broker.publish_many(w.queue, [(f"job {i}", None, f"g{i}", {}) for i in range(8)])
    started = lambda: list(tmp_path.glob("started.*"))
    wait_for(lambda: len(started()) >= 4, timeout=30, message="4 busy handlers")

    # Four handlers hold one message each; with prefetch 1 nothing else may
    # be in flight: 4 unacked, 4 still ready in the queue.
    assert broker.queue_counts(w.queue) == (4, 4)
    assert len(started()) == 4, "a fifth handler started while all 4 were busy"

    (tmp_path / "release").touch()
    wait_for(lambda: len(read_lines(tmp_path / "results")) >= 8, timeout=30,
             message="all 8 messages handled")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20)

    rows = [l.split() for l in read_lines(tmp_path / "results")]
    assert sorted(r[1] for r in rows) == sorted(f"g{i}" for i in range(8))
    intervals = [(int(r[2]), int(r[3])) for r in rows]
    assert max_overlap(intervals) <= 4
    for worker in {r[0] for r in rows}:
        mine = [(int(r[2]), int(r[3])) for r in rows if r[0] == worker]
        assert max_overlap(mine) == 1, f"worker {worker} ran two handlers at once"
    w.stop()


def test_fair_dispatch_of_uneven_work(broker, warrend, handlers, tmp_path):
    """The tutorial's case: heavy (2 s) and light tasks alternate. Round-robin
    would hand all four heavy tasks to one worker (8 s); with prefetch 1 the
    idle worker takes the next one (4 s, the ideal: 8 s of work / 2)."""
    results = tmp_path / "results"
    w = warrend([handlers.timer(results), str(results)], workers=2)
    w.wait_consuming(2)

    tasks = []
    for i in range(4):
        tasks.append((f"2 heavy{i}", None, f"h{i}", {}))
        tasks.append((f"0 light{i}", None, f"l{i}", {}))
    t0 = time.time_ns()
    broker.publish_many(w.queue, tasks)
    wait_for(lambda: len(read_lines(results)) >= 8, timeout=30,
             message="8 handled tasks")
    rows = [l.split() for l in read_lines(results)]
    total = (max(int(r[2]) for r in rows) - t0) / 1e9

    heavy_workers = {r[0] for r in rows if r[3].startswith("2_")}
    assert len(heavy_workers) == 2, f"one worker got every heavy task: {rows}"
    assert total < 6.0, f"took {total:.1f}s; fair dispatch needs about 4s, round-robin 8s"
    w.stop()
