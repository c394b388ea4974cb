"""Fixtures for warren's integration tests.

One private RabbitMQ node (scripts/broker) serves the whole session; each
test uses queues named after itself, so tests never see each other's
messages. `warrend` starts the daemon from a configuration written for the
test and makes sure that nothing it started outlives the test.

Run with /usr/bin/python3 (Debian's pika and pytest live there).
"""

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pika
import pika.exceptions
import pytest

REPO = Path(__file__).resolve().parents[2]
BUILDDIR = Path(os.environ.get("WARREN_BUILDDIR") or REPO)
WARREND = BUILDDIR / "src" / "warrend"
SUBMIT = BUILDDIR / "src" / "warren-submit"
BROKER_SCRIPT = REPO / "scripts" / "broker"

# pika logs every expected 404 of a passive declare as a warning.
logging.getLogger("pika").setLevel(logging.CRITICAL)

# The environment every handler must see, and nothing more (SPEC: handler).
HANDLER_PATH = "/usr/local/bin:/usr/bin:/bin"


# ---------------------------------------------------------------------------
# polling


def wait_for(predicate, timeout, interval=0.05, message=None):
    """Call predicate until it returns something true; return that value.

    Fails the test with `message` (or the predicate's name) when `timeout`
    seconds pass first. The predicate is always tried once more at the
    deadline, so a slow machine never loses a result that just arrived.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rindex(")") + 2]
    return state not in "ZX"


def proc_table():
    """{pid: (ppid, sid)} for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # state ppid pgrp session ...
        table[int(entry)] = (int(fields[1]), int(fields[3]))
    return table


def descendants(pid):
    table = proc_table()
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _) in table.items():
            if ppid == parent and child not in out:
                out.append(child)
                todo.append(child)
    return out


def children_of(pid):
    """Direct children of pid, from /proc/PID/task/*/children."""
    kids = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return sorted(k for k in set(kids) if pid_alive(k))


# ---------------------------------------------------------------------------
# the broker


class Broker:
    """A private RabbitMQ node started by scripts/broker."""

    def __init__(self, directory, port):
        self.dir = Path(directory)
        self.port = port
        self.url = f"amqp://guest:guest@127.0.0.1:{port}/"

    # rabbitmqctl ---------------------------------------------------------

    def ctl(self, *args, timeout=60):
        """Run rabbitmqctl against the node; return its stdout."""
        r = subprocess.run(
            [str(BROKER_SCRIPT), "ctl", str(self.dir), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}"
            )
        return r.stdout

    def _table(self, *args):
        out = self.ctl("-q", *args, "--no-table-headers")
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def queue_counts(self, queue):
        """(messages_ready, messages_unacknowledged) of queue, or None."""
        for row in self._table(
            "list_queues", "name", "messages_ready", "messages_unacknowledged"
        ):
            if row[0] == queue:
                return int(row[1]), int(row[2])
        return None

    def queue_info(self, queue, *columns):
        """{column: value} from list_queues for queue, or None."""
        for row in self._table("list_queues", "name", *columns):
            if row[0] == queue:
                return dict(zip(columns, row[1:]))
        return None

    def consumers(self, queue):
        """The queue's consumers as dicts (list_consumers columns)."""
        cols = ["queue_name", "channel_pid", "consumer_tag", "ack_required",
                "prefetch_count", "active"]
        return [
            dict(zip(cols, row))
            for row in self._table("list_consumers", *cols)
            if row[0] == queue
        ]

    def connection_count(self):
        return len(self._table("list_connections", "name"))

    # AMQP ------------------------------------------------------------------

    def connect(self):
        params = pika.URLParameters(self.url)
        params.connection_attempts = 3
        params.retry_delay = 0.5
        return pika.BlockingConnection(params)

    def _declare(self, ch, queue):
        """Declare queue durable unless it exists (its owner's args win)."""
        try:
            ch.queue_declare(queue, passive=True)
            return ch
        except pika.exceptions.ChannelClosedByBroker:
            ch = ch.connection.channel()
            ch.confirm_delivery()
            ch.queue_declare(queue, durable=True)
            return ch

    def publish(self, queue, body, headers=None, message_id=None, **props):
        self.publish_many(queue, [(body, headers, message_id, props)])

    def publish_many(self, queue, messages):
        """Publish persistent messages with confirms.

        messages: iterable of bytes/str bodies, or of (body, headers,
        message_id, props) tuples.
        """
        conn = self.connect()
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch = self._declare(ch, queue)
            for m in messages:
                if isinstance(m, tuple):
                    body, headers, message_id, props = m
                else:
                    body, headers, message_id, props = m, None, None, {}
                if isinstance(body, str):
                    body = body.encode()
                ch.basic_publish(
                    exchange="",
                    routing_key=queue,
                    body=body,
                    properties=pika.BasicProperties(
                        delivery_mode=2,
                        headers=headers,
                        message_id=message_id,
                        **(props or {}),
                    ),
                    mandatory=True,
                )
        finally:
            conn.close()

    def consumer_count(self, queue):
        """Consumers of queue (0 if it does not exist), fast: no rabbitmqctl."""
        return self._passive(queue, "consumer_count")

    def ready_count(self, queue):
        return self._passive(queue, "message_count")

    def _passive(self, queue, attr):
        conn = self.connect()
        try:
            ch = conn.channel()
            try:
                ok = ch.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                return 0
            return getattr(ok.method, attr)
        finally:
            if conn.is_open:
                conn.close()

    def get(self, queue):
        """basic_get with auto-ack: (method, properties, body) or Nones."""
        conn = self.connect()
        try:
            return conn.channel().basic_get(queue, auto_ack=True)
        finally:
            conn.close()

    def delete_queue(self, *names):
        """Delete the named queues; ones that do not exist are fine."""
        conn = self.connect()
        try:
            ch = conn.channel()
            for name in names:
                try:
                    ch.queue_delete(name)
                except pika.exceptions.ChannelClosedByBroker:
                    ch = conn.channel()
        finally:
            if conn.is_open:
                conn.close()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    if not BROKER_SCRIPT.exists():
        pytest.fail(f"{BROKER_SCRIPT} is missing")
    directory = tmp_path_factory.mktemp("broker")
    port = free_port()
    r = subprocess.run(
        [str(BROKER_SCRIPT), "start", str(directory), str(port)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )
    if r.returncode != 0:
        subprocess.run([str(BROKER_SCRIPT), "stop", str(directory)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=90)
        pytest.fail(f"could not start the test broker: {r.stderr}{r.stdout}")
    b = Broker(directory, port)
    try:
        yield b
    finally:
        subprocess.run(
            [str(BROKER_SCRIPT), "stop", str(directory)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=90,
        )


# ---------------------------------------------------------------------------
# warrend


def conf_string(s):
    """A libconfuse double-quoted string."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def conf_list(items):
    return "{" + ", ".join(conf_string(i) for i in items) + "}"


def queue_name_for(node_name):
    return "t." + re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name).strip("_")[:120]


def start_process(argv, log_path, env):
    """Start a daemon in a session of its own, stdout and stderr appended to
    log_path; returns (the open log file, the Popen)."""
    log = open(log_path, "ab")
    proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, env=env,
                            start_new_session=True)
    return log, proc


def finish_daemons(request, started, broker_of, queues_of, tail=20000):
    """Fixture teardown: kill what each daemon left, show its log when the
    test failed, and delete the queues it used."""
    rep = getattr(request.node, "rep_call", None)
    failed = rep is not None and rep.failed
    for d in started:
        leftovers = d.kill_everything()
        if failed:
            sys.stdout.write(f"--- {d.log_path} ---\n{d.log()[-tail:]}\n")
            if leftovers:
                sys.stdout.write(f"killed leftover processes: {leftovers}\n")
        try:
            broker_of(d).delete_queue(*queues_of(d))
        except Exception:
            pass


class Warrend:
    """One running warrend, started by the `warrend` fixture."""

    def __init__(self, conf, log_path, queues, broker, env, prefix=()):
        self.conf = conf
        self.log_path = log_path
        self.queues = queues
        self.queue = queues[0]
        self.broker = broker
        self._log, self.proc = start_process(
            [*prefix, str(WARREND), "-c", str(conf)], log_path, env)
        self.pid = self.proc.pid
        self.extra_pids = set()

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def children(self):
        """Worker pids: the live direct children of warrend."""
        return children_of(self.pid)

    def _check_alive(self):
        if not self.alive():
            raise AssertionError(
                f"warrend exited with {self.proc.returncode}; log:\n{self.log()}"
            )

    def wait_consuming(self, n, timeout=30, queue=None):
        """Wait until queue has exactly n consumers (and warrend lives)."""
        queue = queue or self.queue

        def consuming():
            self._check_alive()
            return self.broker.consumer_count(queue) == n

        wait_for(consuming, timeout, interval=0.1,
                 message=f"{n} consumers on {queue}")

    def wait_children(self, n, timeout=30):
        def enough():
            self._check_alive()
            kids = self.children()
            return kids if len(kids) == n else None

        return wait_for(enough, timeout, message=f"{n} worker processes")

    def signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, timeout=20):
        """SIGTERM, wait for the exit, and assert it was clean (status 0)."""
        self.signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"warrend did not exit within {timeout}s of SIGTERM; log:\n{self.log()}"
            )
        assert status == 0, f"warrend exited {status} after SIGTERM; log:\n{self.log()}"
        return status

    def kill_everything(self):
        """SIGKILL warrend and whatever it started, however it was detached."""
        victims = set(self.extra_pids)
        if self.alive():
            victims.add(self.pid)
            victims.update(descendants(self.pid))
        victims.update(
            pid for pid, (_, sid) in proc_table().items() if sid == self.pid
        )
        victims.discard(os.getpid())
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        return [p for p in victims if p != self.pid]


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def warrend(broker, tmp_path, request):
    """Factory: warrend(command=[...], workers=N, ...) -> Warrend.

    Keyword arguments:
      command      handler argv (required)
      workers      pool size (1)
      queue        queue name (default: derived from the test's name)
      environment  list of "NAME=value" for the handler
      workdir      handler working directory
      queue_extra  more lines inside the queue section
      extra        more lines at the top level
      env          warrend's own environment (default: ours + a marker)
      heartbeat, shutdown_timeout   as in warrend.conf
    """
    started = []
    counter = [0]

    def start(command, workers=1, queue=None, environment=None, workdir=None,
              queue_extra="", extra="", env=None, heartbeat=None,
              shutdown_timeout=10, prefix=()):
        counter[0] += 1
        if queue is None:
            queue = queue_name_for(request.node.name)
            if counter[0] > 1:
                queue += f".{counter[0]}"
        lines = ["broker {", f"    url = {conf_string(broker.url)}"]
        if heartbeat is not None:
            lines.append(f"    heartbeat = {heartbeat}")
        lines += ["}", f"shutdown_timeout = {shutdown_timeout}", extra,
                  f"queue {conf_string(queue)} {{",
                  f"    workers = {workers}",
                  f"    command = {conf_list(command)}"]
        if environment:
            lines.append(f"    environment = {conf_list(environment)}")
        if workdir:
            lines.append(f"    workdir = {conf_string(workdir)}")
        lines += [queue_extra, "}", ""]
        conf = tmp_path / f"warrend{counter[0]}.conf"
        conf.write_text("\n".join(lines))
        if env is None:
            env = dict(os.environ)
            env["WARREN_TEST_LEAK"] = "1"
        w = Warrend(conf, tmp_path / f"warrend{counter[0]}.log", [queue],
                    broker, env, prefix)
        started.append(w)
        return w

    if not WARREND.exists():
        pytest.fail(f"{WARREND} is not built")
    yield start

    def queues_of(w):
        # the queue, its parking queue and the retry queues of the default
        # retry schedule (10 s doubling, 5 attempts)
        return [n for q in w.queues for n in
                [q, q + ".failed"] + [f"{q}.retry.{d}s" for d in (10, 20, 40, 80)]]

    finish_daemons(request, started, lambda w: broker, queues_of)


# ---------------------------------------------------------------------------
# handlers


def write_script(path, text):
    path = Path(path)
    path.write_text(text.lstrip())
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def handlers(tmp_path):
    """Small handler programs written into the test's tmp_path."""
    return Handlers(tmp_path)


class Handlers:
    def __init__(self, tmp_path):
        self.dir = tmp_path

    def recorder(self, results):
        """Appends "WORKER MESSAGE_ID SHA256(body) PPID" to results, once."""
        return write_script(self.dir / "record.sh", r"""
#!/bin/sh
# argv: RESULTS. One printf to an O_APPEND file: one atomic write.
sum=$(sha256sum | cut -d' ' -f1)
printf '%s %s %s %s\n' "$WARREN_WORKER" "${WARREN_MESSAGE_ID:--}" "$sum" "$PPID" >>"$1"
""")

    def dumper(self, outdir):
        """Writes OUTDIR/<message-id>.json: environ, open fds, cwd, sha256."""
        return write_script(self.dir / "dump.py", r"""
#!/usr/bin/python3
import hashlib, json, os, sys
body = sys.stdin.buffer.read()
# /proc/self/environ is what execve() got; os.environ may gain LC_CTYPE.
raw = open("/proc/self/environ", "rb").read()
env = {}
for item in raw.split(b"\0"):
    if item:
        k, _, v = item.partition(b"=")
        env[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
fds = {}
for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    try:
        os.fstat(fd)            # the listdir's own fd is closed by now
        fds[fd] = os.readlink("/proc/self/fd/" + name)
    except OSError:
        pass
out = {
    "env": env, "fds": fds, "cwd": os.getcwd(), "argv": sys.argv,
    "sha256": hashlib.sha256(body).hexdigest(), "len": len(body),
    "pid": os.getpid(), "ppid": os.getppid(),
    "pgid": os.getpgid(0), "sid": os.getsid(0),
}
name = env.get("WARREN_MESSAGE_ID", "no-id")
tmp = os.path.join(sys.argv[1], "." + name + ".tmp")
with open(tmp, "w") as f:
    json.dump(out, f)
os.rename(tmp, os.path.join(sys.argv[1], name + ".json"))
""")

    def timer(self, results):
        """Sleeps for the body's number of seconds (float), appending
        "WORKER START_NS END_NS BODY PPID" to results when done."""
        return write_script(self.dir / "timer.py", r"""
#!/usr/bin/python3
import os, sys, time
body = sys.stdin.buffer.read().decode()
start = time.time_ns()
time.sleep(float(body.split()[0]) if body.strip() else 0)
end = time.time_ns()
line = "%s %d %d %s %d\n" % (os.environ.get("WARREN_WORKER"), start, end,
                             body.replace(" ", "_"), os.getppid())
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, line.encode())
os.close(fd)
""")


def read_lines(path):
    try:
        return [l for l in Path(path).read_text().splitlines() if l.strip()]
    except FileNotFoundError:
        return []


def runs_of(path):
    """The JSON lines a test's handler appended to path, one per run."""
    return [json.loads(line) for line in read_lines(path)]


def retry_conf(**kv):
    """A queue section's retry block: retry_conf(attempts=3, delay=1)."""
    return "    retry { " + "  ".join(f"{k} = {v}" for k, v in kv.items()) + " }"
