"""Drop-in configuration files (SPEC: top level `include`): queues of two
drop-ins run beside the main file's; an error in the second drop-in is
reported with that file's path and line by `warrend -t` and by a reload,
which keeps the running configuration; at a reload a drop-in added and
one removed start and drain their queues without touching a busy worker
of another."""

import subprocess

import pytest

pytest.register_assert_rewrite("ctl_helpers")

from conftest import WARREND, conf_string, wait_for, write_script
from ctl_helpers import queue_of, reload, start, status, wait_status, workers_of

pytest_plugins = ["ctl_helpers"]

EX_CONFIG = 78


def dropin(path, queue, command, workers=1, extra=""):
    path.write_text(f"# {path.name}: one queue\n"
                    f"queue {conf_string(queue)} {{\n"
                    f"    workers = {workers}\n"
                    f"    command = {{{conf_string(command)}}}\n"
                    f"{extra}"
                    "}\n")


@pytest.fixture
def confd(tmp_path):
    d = tmp_path / "conf.d"
    d.mkdir()
    return d


def started(warrend, sockdir, confd, command, dropins):
    """warrend with its own queue, including confd/*.conf which holds
    dropins {file name: queue name}; every queue cleaned up after."""
    for name, queue in dropins.items():
        dropin(confd / name, queue, command)
    w = start(warrend, sockdir, [command],
              extra=f"include = {{{conf_string(str(confd / '*.conf'))}}}")
    w.queues.extend(dropins.values())
    return w


def consuming(w, queue, n=1):
    w.wait_consuming(n, queue=queue)


def test_queues_of_two_dropins_run(warrend, broker, sockdir, confd):
    a, b = "t.include.a", "t.include.b"
    w = started(warrend, sockdir, confd, "/bin/true",
                {"10-a.conf": a, "20-b.conf": b})
    for q in (w.queue, a, b):
        consuming(w, q)
    broker.publish(a, "to a")
    broker.publish(b, "to b")
    wait_status(w, lambda st: queue_of(st, a)["acked"] == 1
                and queue_of(st, b)["acked"] == 1,
                message="one message acked on each drop-in's queue")
    r = subprocess.run([str(WARREND), "-t", "-c", str(w.conf)],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r


def test_error_in_second_dropin_by_t_and_by_reload(warrend, broker, sockdir, confd):
    a, b = "t.include.err.a", "t.include.err.b"
    w = started(warrend, sockdir, confd, "/bin/true",
                {"10-a.conf": a, "20-b.conf": b})
    for q in (w.queue, a, b):
        consuming(w, q)
    pids = sorted(x["pid"] for x in status(w.sock)["workers"])

    # line 3 of the second file: workers out of range
    dropin(confd / "20-b.conf", b, "/bin/true", workers=5000)
    where = f"{confd / '20-b.conf'}:3: "
    r = subprocess.run([str(WARREND), "-t", "-c", str(w.conf)],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode == EX_CONFIG, r
    assert r.stderr.startswith(where) and "workers = 5000" in r.stderr, r.stderr

    reload(w)
    wait_for(lambda: where in w.log(), 10, message=f"{where} in the log")
    line = [l for l in w.log().splitlines() if where in l][-1]
    assert "keeping the running configuration" in line, line
    # the running configuration stays: same queues, same workers
    st = status(w.sock)
    assert sorted(x["pid"] for x in st["workers"]) == pids, st
    for q in (w.queue, a, b):
        assert broker.consumer_count(q) == 1, q

    # a queue defined in both files: the second place, naming the first
    # (a section's place is the line that closes it, as for every queue)
    dropin(confd / "20-b.conf", a, "/bin/true")
    r = subprocess.run([str(WARREND), "-t", "-c", str(w.conf)],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode == EX_CONFIG, r
    assert r.stderr.startswith(f"{confd / '20-b.conf'}:5: "), r.stderr
    assert f"already defined at {confd / '10-a.conf'}:5" in r.stderr, r.stderr


def test_dropin_added_and_removed_at_reload(warrend, broker, sockdir, confd, tmp_path):
    """The main queue's only worker holds a message through the reload:
    same pid, its message acked after; b's queue drains, c's starts."""
    gate = tmp_path / "gate"
    hold = write_script(tmp_path / "hold.sh", f"""#!/bin/sh
cat >/dev/null
while [ ! -e {gate} ]; do sleep 0.05; done
""")
    b, c = "t.include.mv.b", "t.include.mv.c"
    w = started(warrend, sockdir, confd, str(hold), {"20-b.conf": b})
    w.queues.append(c)
    for q in (w.queue, b):
        consuming(w, q)
    broker.publish(w.queue, "held")
    busy = wait_status(w, lambda st: [x for x in workers_of(st, w.queue)
                                      if x["state"] == "busy"],
                       message="the main queue's worker busy")
    pid = workers_of(busy, w.queue)[0]["pid"]

    (confd / "20-b.conf").unlink()
    dropin(confd / "30-c.conf", c, "/bin/true")
    reload(w)
    consuming(w, c)
    wait_for(lambda: broker.consumer_count(b) == 0, 20, message=f"{b} drained")
    st = status(w.sock)
    assert [q["name"] for q in st["queues"] if q["name"] == b] == [], st["queues"]
    mine = workers_of(st, w.queue)
    assert [(x["pid"], x["state"]) for x in mine] == [(pid, "busy")], mine

    gate.write_text("go")
    wait_status(w, lambda st: queue_of(st, w.queue)["acked"] == 1,
                message="the held message acked by the same worker")
    assert [x["pid"] for x in workers_of(status(w.sock), w.queue)] == [pid]
    broker.publish(c, "to c")
    wait_status(w, lambda st: queue_of(st, c)["acked"] == 1,
                message="c's queue handles a message")
