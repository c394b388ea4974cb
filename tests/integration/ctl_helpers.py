"""Helpers for the control socket and metrics tests (SPEC: warrenctl,
control_socket, metrics).

The protocol, as warrend's master speaks it: a client connects to the
unix socket, sends one request line (`status`, `pause QUEUE`, `resume
QUEUE`, `metrics`), and reads one JSON object until the master closes the
connection. `ask()` is that client, in a few lines of Python, so that the
master's side is tested without warrenctl; `warrenctl()` runs the real
program where the tree has it.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BUILDDIR, conf_string, wait_for

WARRENCTL = BUILDDIR / "src" / "warrenctl"
NOBODY = 65534


# ---------------------------------------------------------------------------
# the protocol


def raw(path, data, timeout=10):
    """Send data to the socket at path, read until EOF; return the bytes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                # closed with part of a request unread (one too long):
                # a reset, after the answer
                if out:
                    return out
                raise
            if not chunk:
                return out
            out += chunk


def ask(path, line, timeout=10):
    """One request line; the master's JSON answer, as a dict.

    The answer must be exactly one JSON object and a newline."""
    out = raw(path, line.encode() + b"\n", timeout)
    assert out.endswith(b"\n") and out.count(b"\n") == 1, \
        f"answer to {line!r} is not one line: {out[:300]!r}"
    return json.loads(out)


def status(path):
    answer = ask(path, "status")
    assert answer.get("ok") is True, answer
    return answer


def queue_of(st, name):
    """The per-queue entry of a status answer."""
    found = [q for q in st["queues"] if q["name"] == name]
    assert len(found) == 1, f"queue {name} not once in {st['queues']}"
    return found[0]


def workers_of(st, name):
    return [w for w in st["workers"] if w["queue"] == name]


def answers_at(path):
    """True when something answers `status` at path (for wait_for)."""
    try:
        return ask(path, "status", timeout=2).get("ok") is True
    except (OSError, ValueError, AssertionError):
        return False


# ---------------------------------------------------------------------------
# warrend with a control socket


@pytest.fixture
def sockdir():
    """A short directory for sockets (sun_path holds 108 bytes; pytest's
    tmp_path can be longer), mode 0755 so that another user can reach a
    socket in it."""
    d = tempfile.mkdtemp(prefix="wctl-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def start(warrend, sockdir, command, sock="w.sock", metrics=None, extra="",
          **kw):
    """warrend(...) with control_socket = SOCKDIR/sock (sock None: the key
    is left out, "" : written as ""), and metrics { listen = metrics }."""
    lines = []
    path = None
    if sock is not None:
        path = "" if sock == "" else str(Path(sockdir) / sock)
        lines.append(f"control_socket = {conf_string(path)}")
    if metrics:
        lines.append(f"metrics {{ listen = {conf_string(metrics)} }}")
    if extra:
        lines.append(extra)
    w = warrend(command=command, extra="\n".join(lines), **kw)
    w.sock = path
    return w


def wait_answers(w, timeout=30):
    """Wait until w's master answers status on its socket."""
    def answering():
        w._check_alive()
        return answers_at(w.sock)
    wait_for(answering, timeout, interval=0.1,
             message=f"warrend answering on {w.sock}")


def wait_status(w, predicate, timeout=30, message=None):
    """Poll w's status until predicate(status) is true; return the status."""
    last = [None]

    def check():
        w._check_alive()
        try:
            st = status(w.sock)
        except OSError:
            return None
        last[0] = st
        return st if predicate(st) else None

    try:
        return wait_for(check, timeout, interval=0.1, message=message)
    except AssertionError as e:
        raise AssertionError(f"{e}; last status: {json.dumps(last[0])}") from None


def set_workers(w, n):
    """Rewrite w's configuration with `workers = n` for its queue."""
    text = Path(w.conf).read_text()
    lines = [f"    workers = {n}" if l.startswith("    workers = ") else l
             for l in text.splitlines()]
    Path(w.conf).write_text("\n".join(lines) + "\n")


def reload(w, timeout=20):
    """SIGHUP, and wait until the master has logged one more reload (the
    reload is applied before the master reads its next client)."""
    import signal
    before = w.log().count("reloading ")
    w.signal(signal.SIGHUP)
    wait_for(lambda: w.log().count("reloading ") > before, timeout,
             message="the reload in warrend's log")


# ---------------------------------------------------------------------------
# warrenctl and other users


def need_warrenctl():
    if not WARRENCTL.exists():
        pytest.skip(f"{WARRENCTL} is not built (warrenctl comes with the ctl branch)")


def warrenctl(*args, timeout=30, preexec_fn=None):
    return subprocess.run([str(WARRENCTL), *[str(a) for a in args]],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)


def as_nobody():
    """preexec_fn: become nobody/nogroup, no supplementary groups."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


# A client run as another user: prints {"errno": N} when connect fails,
# else {"answer": TEXT}.
CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"errno": e.errno})); sys.exit(0)
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    out += c
print(json.dumps({"answer": out.decode()}))
"""


def ask_as_nobody(path, line):
    r = subprocess.run([sys.executable, "-c", CLIENT, str(path), line],
                       capture_output=True, text=True, timeout=30,
                       preexec_fn=as_nobody, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class Idle:
    """A client that connects and never sends; knows when it was closed."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.setblocking(False)
        self.t0 = time.monotonic()
        self.closed_at = None
        self.data = b""

    def poll(self):
        """True once the master has closed it (EOF or reset)."""
        if self.closed_at is not None:
            return True
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if chunk:
            self.data += chunk
            return False
        self.closed_at = time.monotonic()
        return True

    def close(self):
        self.sock.close()
