"""Large pools (issue 9): 1,000 workers under a real systemd, and 1,100
outside it with the soft RLIMIT_NOFILE at 1024.

The master holds a few descriptors per worker (its control socket, pipes),
so a pool of 1,000 does not fit in the soft limit of 1024 that systemd
(and many shells) give a service: warrend must raise its soft limit (the
unit allows it: LimitNOFILE=) or say why once, never flood the log with
"Too many open files". The broker (the session's) inherits the test's
fd limit, which is well above 1,100 connections.

Each pool's handler is /bin/true; no message is published: what is
measured is the time to READY=1 (systemctl is-active) and until every
worker consumes (the broker's consumer counts).
"""

import re
import resource
import time

import pytest

from conftest import conf_list, conf_string, queue_name_for, wait_for
from cluster_helpers import Daemons
from test_systemd import UNIT, machine  # noqa: F401  (the module's systemd)

BOUND = 60  # seconds; the target is a few


def consuming(broker, queues):
    return [broker.consumer_count(q) for q in queues]


def test_1000_workers_under_systemd(machine, broker, request):  # noqa: F811
    base = queue_name_for(request.node.name)
    queues = [f"{base}.a", f"{base}.b"]
    conf = machine.dir / "etc" / "warren" / "warrend.conf"
    lines = ["broker {", f"    url = {conf_string(broker.url)}", "}",
             "shutdown_timeout = 10"]
    for q in queues:
        lines += [f"queue {conf_string(q)} {{", "    workers = 500",
                  f"    command = {conf_list(['/bin/true'])}", "}"]
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o644)
    limit = machine.show(UNIT, "LimitNOFILESoft", "LimitNOFILE")
    machine.systemctl("reset-failed", UNIT, check=False)
    try:
        t0 = time.monotonic()
        machine.systemctl("start", "--no-block", UNIT)

        def active():
            s = machine.systemctl("is-active", UNIT, check=False).stdout.strip()
            assert s in ("activating", "active"), (
                s, machine.run("journalctl", "--no-pager", "-n", "30",
                               check=False).stdout)
            return s == "active"
        wait_for(active, BOUND, interval=0.2, message="READY=1 (active)")
        t_ready = time.monotonic() - t0
        counts = wait_for(lambda: (lambda c: c if c == [500, 500] else None)(
            consuming(broker, queues)), BOUND, interval=0.5,
            message="1,000 consumers")
        t_all = time.monotonic() - t0
        print(f"\nunit limits {limit}; READY=1 after {t_ready:.1f} s, "
              f"{sum(counts)} consuming after {t_all:.1f} s")
        msgs = [r.get("MESSAGE", "") for r in machine.journal("-u", UNIT)]
        emfile = [m for m in msgs if "Too many open files" in m]
        assert len(emfile) <= 3, emfile[:10]
        assert t_all < BOUND
    finally:
        machine.systemctl("stop", UNIT, check=False, timeout=180)
        machine.systemctl("reset-failed", UNIT, check=False)
        try:
            broker.delete_queue(*queues, *[q + ".failed" for q in queues])
        except Exception:
            pass


@pytest.fixture
def daemons(tmp_path, request):
    d = Daemons(tmp_path, request)
    yield d
    d.finish()


def test_1100_workers_with_soft_nofile_1024(broker, daemons, request):
    """warrend alone started with the soft RLIMIT_NOFILE at 1024 (hard as
    ours): 'ready: 1100 workers started', all consuming, and at most a few
    'Too many open files' lines."""
    base = queue_name_for(request.node.name)
    queues = [f"{base}.a", f"{base}.b"]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard > 4096, (
        f"the hard limit ({hard}) leaves warrend nothing to raise to")
    t0 = time.monotonic()
    d = daemons.start(broker, broker.url,
                      [{"name": q, "workers": 550, "command": ["/bin/true"]}
                       for q in queues],
                      prefix=["prlimit", f"--nofile=1024:{hard}", "--"])

    def ready():
        assert d.alive(), d.log()[-3000:]
        return any("ready: 1100 workers started" in l for l in d.lines())
    wait_for(ready, BOUND, interval=0.2, message="ready: 1100 workers started")
    t_ready = time.monotonic() - t0
    counts = wait_for(lambda: (lambda c: c if c == [550, 550] else None)(
        consuming(broker, queues)), BOUND, interval=0.5, message="1,100 consumers")
    t_all = time.monotonic() - t0
    emfile = [l for l in d.lines() if "Too many open files" in l]
    with open(f"/proc/{d.pid}/limits") as f:
        nofile = next(l for l in f if l.startswith("Max open files"))
    print(f"\nready after {t_ready:.1f} s, {sum(counts)} consuming after "
          f"{t_all:.1f} s; warrend's {re.sub(' +', ' ', nofile.strip())}; "
          f"'Too many open files' lines: {len(emfile)}")
    assert len(emfile) <= 3, emfile[:10]
