"""Helpers for the supervision tests (test_supervision.py): a warrend whose
configuration the test rewrites and reloads, started with extra flags (-d);
a private broker that a test may stop and start again; /proc inspection
(process states, zombies, handlers of workers); a log follower that notes
when each line appeared.

The session broker of conftest.py is never stopped: tests that break the
broker use a PrivateBroker of their own.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from conftest import (BROKER_SCRIPT, WARREND, start_process, Broker, Warrend, children_of,
                      conf_list, conf_string, free_port, proc_table)

# ---------------------------------------------------------------------------
# /proc


def proc_stat(pid):
    """(state, ppid, pgrp, sid) of pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def zombies_under(master):
    """Zombies whose parent is the master or one of its workers."""
    parents = {master, *children_of(master)}
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(int(entry))
        if st is not None and st[0] == "Z" and st[1] in parents:
            out.append((int(entry), st[1]))
    return out


def live_in_session(sid):
    """Live (non-zombie) processes of session sid."""
    out = []
    for pid, (_, s) in proc_table().items():
        if s == sid:
            st = proc_stat(pid)
            if st is not None and st[0] not in "ZX":
                out.append(pid)
    return sorted(out)


def handlers_of(workers):
    """Live children of the given worker pids: their handlers."""
    out = []
    for w in workers:
        out.extend(children_of(w))
    return out


# ---------------------------------------------------------------------------
# configuration


def conf_text(url, queues, shutdown_timeout=10, heartbeat=None):
    """A warrend.conf. queues: list of dicts with name, workers, command
    and optional extra (list of lines inside the queue section)."""
    lines = ["broker {", f"    url = {conf_string(url)}"]
    if heartbeat is not None:
        lines.append(f"    heartbeat = {heartbeat}")
    lines += ["}", f"shutdown_timeout = {shutdown_timeout}"]
    for q in queues:
        lines += [f"queue {conf_string(q['name'])} {{",
                  f"    workers = {q.get('workers', 1)}",
                  f"    command = {conf_list(q['command'])}"]
        lines += [f"    {l}" for l in q.get("extra", [])]
        lines.append("}")
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    """Replace path's content at once, so a reload never reads half a file."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


# ---------------------------------------------------------------------------
# warrend


class Daemon(Warrend):
    """A warrend started with extra flags whose configuration the test
    rewrites (queues as for conf_text) and reloads with SIGHUP."""

    def __init__(self, conf, log_path, broker, queues, args=(),
                 shutdown_timeout=10, heartbeat=None):
        self.conf = Path(conf)
        self.log_path = Path(log_path)
        self.broker = broker
        self.spec = [dict(q) for q in queues]
        self.shutdown_timeout = shutdown_timeout
        self.heartbeat = heartbeat
        self.queues = [q["name"] for q in queues]
        self.queue = self.queues[0]
        write_atomic(self.conf, self.text())
        env = dict(os.environ)
        env["WARREN_TEST_LEAK"] = "1"
        self._log, self.proc = start_process(
            [WARREND, "-c", self.conf, *args], self.log_path, env)
        self.pid = self.proc.pid
        self.extra_pids = set()

    def text(self):
        return conf_text(self.broker.url, self.spec,
                         shutdown_timeout=self.shutdown_timeout,
                         heartbeat=self.heartbeat)

    def rewrite(self, **changes):
        """Change keys of the first queue (workers=, command=, ...) and
        write the file; the change takes effect at the next reload."""
        self.spec[0].update(changes)
        write_atomic(self.conf, self.text())

    def reload(self):
        self.signal(signal.SIGHUP)

    def log_lines(self):
        return self.log().splitlines()

    def count_log(self, pattern):
        rx = re.compile(pattern)
        return sum(1 for l in self.log_lines() if rx.search(l))


class LogFollower:
    """Reads a growing log file, stamping each new line with the time it
    was first seen (time.monotonic())."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""
        self.lines = []     # (monotonic time, line)

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self.offset += len(data)
        now = time.monotonic()
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        for raw in complete:
            self.lines.append((now, raw.decode(errors="replace")))

    def follow(self, seconds, interval=0.02):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            time.sleep(interval)
        self.poll()


# ---------------------------------------------------------------------------
# a broker of the test's own


class PrivateBroker(Broker):
    """A RabbitMQ node of its own (scripts/broker), which a test may stop
    and start again on the same directory and port: its data directory is
    kept, so durable queues and persistent messages survive a restart."""

    def __init__(self, directory):
        super().__init__(directory, free_port())
        self.running = False
        self.restarts = 0

    def _script(self, *args, timeout):
        return subprocess.run([str(BROKER_SCRIPT), *args],
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)

    def start(self):
        r = self._script("start", str(self.dir), str(self.port), timeout=150)
        if r.returncode != 0:
            self._script("stop", str(self.dir), timeout=90)
            raise RuntimeError(f"broker start failed: {r.stderr}{r.stdout}")
        self.running = True

    def stop(self):
        if (self.dir / "env").exists():
            r = self._script("stop", str(self.dir), timeout=90)
            if r.returncode != 0:
                raise RuntimeError(f"broker stop failed: {r.stderr}{r.stdout}")
        self.running = False

    def restart(self):
        self.stop()
        self.start()
        self.restarts += 1
