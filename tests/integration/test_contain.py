"""Containing the handler (issue 16): queue.user, queue.limits, a warrend
that is not dumpable. A hostile handler (hostile_handler.py) tries the
issue's attacks and writes what worked.

warrend runs as root, as the unprivileged system user `list`, or as `list`
holding only CAP_SETUID and CAP_SETGID (as the systemd unit runs it);
handlers as `irc` (attacks) or `backup` (the CPU limit). These are
Debian's own system users, used by nothing else here, so nothing is added
to the system.
"""

import json
import os
import pwd
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (Warrend, conf_list, conf_string, queue_name_for,
                      wait_for)

HERE = Path(__file__).resolve().parent
DAEMON_USER, HANDLER_USER, CPU_USER = "list", "irc", "backup"
SETPRIV = ["setpriv", "--reuid", DAEMON_USER, "--regid", DAEMON_USER,
           "--init-groups"]
CAPS = ["--inh-caps", "+setuid,+setgid", "--ambient-caps", "+setuid,+setgid"]
ATTACKS = ["password_file", "worker_memory", "master_memory", "ptrace_worker",
           "signal_master", "signal_other_worker", "pause_queue",
           "worker_environ", "fork_3000", "allocate_2g"]


@pytest.fixture(scope="module")
def secret(broker):
    """A broker user whose password only password_file holds."""
    password = "pw-" + secrets.token_hex(12)
    broker.ctl("add_user", "warren-contain", password)
    broker.ctl("set_permissions", "warren-contain", ".*", ".*", ".*")
    yield password
    broker.ctl("delete_user", "warren-contain")


@pytest.fixture
def room(request):
    """A directory every user may enter; what warrend alone may read in it
    is made so per file."""
    d = Path(tempfile.mkdtemp(prefix="warren-contain-"))
    d.chmod(0o755)
    started = []
    yield d, started
    for w in started:
        w.kill_everything()
        try:
            w.broker.delete_queue(*[n for q in w.queues
                                    for n in (q, q + ".failed", q + ".retry.1s")])
        except Exception:
            pass
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        for w in started:
            print(f"--- {w.log_path} ---\n{w.log()[-8000:]}")
    shutil.rmtree(d, ignore_errors=True)


def start(broker, room, secret, name, queue_lines, prefix=(), owner="root",
          workers=2, extra_queues=(), command=None):
    d, started = room
    uid = pwd.getpwnam(owner).pw_uid
    out = d / "out"
    out.mkdir(exist_ok=True)
    out.chmod(0o777)
    pwfile = d / "password"
    pwfile.write_text(secret + "\n")
    os.chown(pwfile, uid, uid)
    pwfile.chmod(0o600)
    handler = d / "hostile.py"
    shutil.copy(HERE / "hostile_handler.py", handler)
    handler.chmod(0o755)
    queue = queue_name_for(name)
    half = len(secret) // 2
    lines = ["broker {",
             f'    url = "amqp://warren-contain@127.0.0.1:{broker.port}/"',
             f"    password_file = {conf_string(str(pwfile))}", "}",
             "shutdown_timeout = 5",
             f"control_socket = {conf_string(str(d / 'ctl.sock'))}",
             f"queue {conf_string(queue)} {{", f"    workers = {workers}",
             f"    command = {conf_list([str(command or handler)])}",
             "    environment = " + conf_list([
                 f"OUT={out}", f"PWFILE={pwfile}", f"CTL={d / 'ctl.sock'}",
                 f"PW_A={secret[:half]}", f"PW_B={secret[half:]}"]),
             "    retry { attempts = 2  delay = 1 }",
             *queue_lines, "}", *extra_queues, ""]
    conf = d / "warrend.conf"
    conf.write_text("\n".join(lines))
    os.chown(conf, uid, uid)
    conf.chmod(0o600)
    os.chown(d, uid, uid)  # the control socket is made here
    w = Warrend(conf, d / "warrend.log", [queue], broker, dict(os.environ),
                prefix)
    started.append(w)
    w.wait_consuming(workers, timeout=30)
    return w, out


def run_hostile(broker, w, out):
    broker.publish(w.queue, b"a hostile message")
    path = wait_for(lambda: next(iter(out.glob("result-*.json")), None), 60,
                    message="the hostile handler's result")
    # acked: nothing ready, nothing unacked, nothing parked
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), 20,
             message="the message acked")
    return json.loads(path.read_text())


def table(r):
    return {a: bool(r.get(a)) for a in ATTACKS}


def check_contained_status(r, user, with_bounding):
    u = pwd.getpwnam(user)
    st = r["status"]
    assert st["Uid"].split() == [str(u.pw_uid)] * 4, st
    assert st["Gid"].split() == [str(u.pw_gid)] * 4, st
    # irc's groups: its own only; never root's or list's
    assert st["Groups"].split() in ([], [str(u.pw_gid)]), st
    for k in ("CapEff", "CapPrm", "CapAmb", "CapInh"):
        assert int(st[k], 16) == 0, (k, st)
    if with_bounding:
        assert int(st["CapBnd"], 16) == 0, st
    assert st["NoNewPrivs"] == "1", st


LIMITS = ["    limits {", "        processes = 64", "        memory = 256",
          "    }"]


def test_with_user_as_root_nothing_works(broker, room, secret):
    w, out = start(broker, room, secret, "contain_root",
                   [f'    user = "{HANDLER_USER}"', *LIMITS],
                   )
    r = run_hostile(broker, w, out)
    print("with user, warrend root:", table(r))
    assert table(r) == {a: False for a in ATTACKS}, r
    assert 0 < r["forked"] < 64, r
    check_contained_status(r, HANDLER_USER, with_bounding=True)
    assert "cannot" not in w.log() or "could not start" not in w.log()


def test_without_user_unprivileged_memory_and_ptrace_fail(broker, room, secret):
    w, out = start(broker, room, secret, "contain_self", [],
                   prefix=SETPRIV, owner=DAEMON_USER)
    r = run_hostile(broker, w, out)
    print("without user, warrend as list:", table(r))
    t = table(r)
    for a in ("worker_memory", "master_memory", "ptrace_worker",
              "worker_environ"):
        assert not t[a], (a, r)
    assert "Permission denied" in r["worker_memory_error"] or \
        "Operation not permitted" in r["worker_memory_error"], r
    # the rest is what a shared uid allows: said in warrend.conf(5)
    for a in ("password_file", "signal_master", "signal_other_worker",
              "pause_queue", "fork_3000", "allocate_2g"):
        assert t[a], (a, r)


def test_caps_only_warrend_switches(broker, room, secret):
    w, out = start(broker, room, secret, "contain_caps",
                   [f'    user = "{HANDLER_USER}"', *LIMITS],
                   prefix=SETPRIV + CAPS, owner=DAEMON_USER)
    r = run_hostile(broker, w, out)
    print("with user, warrend as list with CAP_SETUID+CAP_SETGID:", table(r))
    assert table(r) == {a: False for a in ATTACKS}, r
    check_contained_status(r, HANDLER_USER, with_bounding=False)


def test_user_without_privilege_is_a_configuration_error(broker, room, secret):
    import subprocess
    d, _ = room
    conf = d / "c.conf"
    conf.write_text("broker {\n url = \"amqp://u@localhost/\"\n}\n"
                    "queue \"q\" {\n command = {\"/bin/cat\"}\n"
                    f" user = \"{HANDLER_USER}\"\n}}\n")
    conf.chmod(0o644)
    warrend = str(Path(__file__).resolve().parents[2] / "src" / "warrend")
    r = subprocess.run([*SETPRIV, warrend, "-t", "-c", str(conf)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 78, r
    assert f"{conf}:6: " in r.stderr and "CAP_SETUID" in r.stderr, r.stderr
    r = subprocess.run([*SETPRIV, *CAPS, warrend, "-t", "-c", str(conf)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r
    # warrend could switch; a queue without user runs as warrend: warned
    conf.write_text(conf.read_text().replace(f' user = "{HANDLER_USER}"\n', ""))
    r = subprocess.run([warrend, "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and "run as warrend's own user (root)" in r.stderr, r


SPIN = """#!/usr/bin/python3
import sys
sys.stdin.buffer.%s()
while True:
    pass
"""


@pytest.mark.parametrize("mode", ["exec", "persistent"])
def test_cpu_limit_parks_with_reason(broker, room, secret, mode):
    d, _ = room
    spin = d / "spin.py"
    spin.write_text(SPIN % ("read" if mode == "exec" else "readline"))
    spin.chmod(0o755)
    quick = queue_name_for(f"contain_quick_{mode}")
    other = [f"queue {conf_string(quick)} {{", "    workers = 1",
             '    command = {"/bin/cat"}', "}"]
    w, _ = start(broker, room, secret, f"contain_cpu_{mode}",
                 [f'    user = "{CPU_USER}"', f'    mode = "{mode}"',
                  "    kill_grace = 1",
                  "    limits {", "        cpu = 2", "    }"],
                 workers=1, extra_queues=other, command=spin)
    w.queues.append(quick)
    t0 = time.monotonic()
    broker.publish(w.queue, b"spin")
    # other queue's messages keep flowing while it spins
    for i in range(5):
        broker.publish(quick, f"m{i}".encode())
    wait_for(lambda: broker.queue_counts(quick) == (0, 0), 10,
             message="the other queue's messages handled")
    first = wait_for(lambda: _reason_line(w.log()), 2 + 1 + 5,
                     message="the first attempt stopped by the cpu limit")
    took = time.monotonic() - t0
    print(f"{mode}: first attempt stopped after {took:.2f}s: {first}")
    assert took <= 2 + 1 + 2.5, took  # cpu + kill_grace + slack
    def got():
        try:
            m = broker.get(w.queue + ".failed")
        except Exception:  # not declared yet
            return None
        return m if m[0] is not None else None
    parked = wait_for(got, 30, interval=0.5, message="the message parked")
    assert parked[1].headers["x-warren-reason"] == "cpu limit 2s"


def _reason_line(log):
    for line in log.splitlines():
        if "cpu limit 2s" in line:
            return line
    return None
