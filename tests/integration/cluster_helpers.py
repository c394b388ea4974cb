"""Brokers of a test's own for issue 9 (clusters, TLS, secrets).

- start_node() / Node: one RabbitMQ node started the way scripts/broker
  starts one (same DIR/env file, so `scripts/broker ctl DIR` and
  `scripts/broker stop DIR` work on it), but with a rabbitmq.conf, an
  Erlang cookie and an epmd port chosen by the caller. Nodes of one
  cluster must share the cookie (they authenticate each other with it)
  and the epmd port (a node finds another one by asking the epmd on the
  other node's host, at ERL_EPMD_PORT: with one epmd per node, as
  scripts/broker makes them, node A would ask its own epmd about node B
  and never find it). A node can be killed with kill -9 of its beam.smp
  and started again on the same directory.
- Cluster: three such nodes joined into one cluster (nodes 2 and 3
  stop_app, join_cluster node 1, start_app).
- Relay: a TCP listener on 127.0.0.1 that either forwards every
  connection to a port (counting the connections it accepted) or
  accepts and never says anything (a node that hangs).

Every process started here carries WARREN_TEST_RUN when the test run set
it (scripts/test kills what a cut-short run left by it), but stop() ends
each node and its epmd itself.
"""

import json
import os
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import BROKER_SCRIPT, Broker, free_port, pid_alive, wait_for


def sbin_dir():
    for d in sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/sbin")):
        if (d / "rabbitmq-server").exists():
            return d
    raise RuntimeError("rabbitmq-server is not installed (run scripts/deps)")


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _free_port_pair():
    """(amqp, dist) ports, both free and distinct."""
    while True:
        a, b = free_port(), free_port()
        if a != b:
            return a, b


class Node(Broker):
    """A RabbitMQ node of a test's own.

    conf_lines: extra lines of rabbitmq.conf (TLS listeners, ...). The
    plain AMQP listener is always on 127.0.0.1:port.
    """

    def __init__(self, directory, cookie=None, epmd_port=None, conf_lines=(),
                 port=None):
        port, dist = (port, free_port()) if port else _free_port_pair()
        super().__init__(directory, port)
        self.dist = dist
        self.cookie = cookie or secrets.token_hex(10).upper()
        self.epmd_port = epmd_port or free_port()
        self.name = f"warren-{port}@localhost"
        self.conf_lines = list(conf_lines)
        self.sbin = sbin_dir()
        self.wrapper = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self._setup()

    # files ------------------------------------------------------------

    def _envvars(self):
        d = self.dir
        return {
            "HOME": str(d),
            "RABBITMQ_SBIN": str(self.sbin),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
            "RABBITMQ_LOG_BASE": f"{d}/log",
            "RABBITMQ_PID_FILE": f"{d}/rabbitmq.pid",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            "RABBITMQ_CONF_ENV_FILE": f"{d}/rabbitmq-env.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{d}/advanced.config",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1}",
            "BROKER_PORT": str(self.port),
        }

    def _setup(self):
        d = self.dir
        (d / "mnesia").mkdir(exist_ok=True)
        (d / "log").mkdir(exist_ok=True)
        (d / "rabbitmq.conf").write_text("\n".join(
            [f"listeners.tcp.1 = 127.0.0.1:{self.port}",
             "log.file.level = info", "log.console = false",
             *self.conf_lines, ""]))
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("")
        cookie = d / ".erlang.cookie"
        if cookie.exists():
            cookie.chmod(0o600)
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        self._write_env()

    def _write_env(self):
        lines = [f"export {k}='{v}'" for k, v in self._envvars().items()]
        if self.wrapper is not None:
            lines.append(f"export BROKER_WRAPPER_PID={self.wrapper.pid}")
        (self.dir / "env").write_text("\n".join(lines) + "\n")

    def beam_pid(self):
        try:
            pid = int((self.dir / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    # life -------------------------------------------------------------

    def launch(self):
        """Start the server without waiting for it."""
        (self.dir / "rabbitmq.pid").unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(self._envvars())
        log = open(self.dir / "server.log", "ab")
        self.wrapper = subprocess.Popen(
            [str(self.sbin / "rabbitmq-server")], cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            start_new_session=True)
        log.close()
        self._write_env()

    def wait_up(self, timeout=90):
        r = subprocess.run(
            [str(self.sbin / "rabbitmqctl"), "-n", self.name, "-q",
             "--timeout", str(timeout), "wait", str(self.dir / "rabbitmq.pid")],
            env={**os.environ, **self._envvars()}, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout + 15)
        if r.returncode != 0:
            tail = (self.dir / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"node {self.name} did not come up: "
                               f"{r.stderr}{r.stdout}\n{tail}")
        wait_for(lambda: _listening(self.port), timeout,
                 message=f"{self.name} listening on {self.port}")

    def start(self, timeout=90):
        self.launch()
        self.wait_up(timeout)

    def kill9(self):
        """kill -9 the node's beam.smp (and its wrapper); returns when the
        AMQP port is closed."""
        beam = self.beam_pid()
        for pid in (beam, self.wrapper.pid if self.wrapper else None):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.wrapper is not None:
            try:
                self.wrapper.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if beam:
            wait_for(lambda: not pid_alive(beam), 10, message="beam.smp to die")
        wait_for(lambda: not _listening(self.port), 10,
                 message=f"port {self.port} to close")

    def stop(self, fast=False):
        """Stop the node: with fast, kill -9 (a throwaway node: nothing in
        it needs a clean shutdown); else scripts/broker stop (rabbitmqctl
        stop, then SIGKILL; ends the epmd when no node is left on it)."""
        if not (self.dir / "env").exists():
            return
        if fast:
            try:
                self.kill9()
            finally:
                (self.dir / "env").rename(self.dir / "env.stopped")
            return
        subprocess.run([str(BROKER_SCRIPT), "stop", str(self.dir)],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=90)
        beam = self.beam_pid()
        if beam:
            os.kill(beam, signal.SIGKILL)
        if self.wrapper is not None and self.wrapper.poll() is None:
            self.wrapper.kill()
            self.wrapper.wait(10)

    # rabbitmqctl ------------------------------------------------------

    def connections(self):
        return connections(self)


def connections(broker):
    """Every client connection the broker (the whole cluster, whichever
    node is asked) lists, as dicts: port (the AMQP port of the node
    serving it: each node here has its own), name (the client's
    connection_name, '' if none), user, connected_at (ms since the
    epoch)."""
    out = broker.ctl("-q", "list_connections", "port", "user",
                     "client_properties", "connected_at", "--formatter", "json")
    rows = json.loads(out) if out.strip() else []
    result = []
    for r in rows:
        props = r.get("client_properties") or []
        name = ""
        if isinstance(props, dict):
            name = props.get("connection_name", "")
        else:   # the json formatter: [[key, type, value], ...]
            for p in props:
                if isinstance(p, (list, tuple)) and p and p[0] == "connection_name":
                    name = p[-1]
        result.append({"port": int(r.get("port") or 0), "name": name,
                       "user": r.get("user"),
                       "connected_at": r.get("connected_at")})
    return result


def kill_epmd(port):
    subprocess.run(["epmd", "-port", str(port), "-kill"],
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=10)


def start_nodes(nodes, timeout=90):
    """Start nodes in parallel; on failure stop them all and raise."""
    for n in nodes:
        n.launch()
    try:
        with ThreadPoolExecutor(len(nodes)) as ex:
            for f in [ex.submit(n.wait_up, timeout) for n in nodes]:
                f.result()
    except BaseException:
        stop_nodes(nodes)
        raise


def stop_nodes(nodes, fast=True):
    with ThreadPoolExecutor(max(1, len(nodes))) as ex:
        list(ex.map(lambda n: n.stop(fast), nodes))
    for port in {n.epmd_port for n in nodes}:
        kill_epmd(port)


class Cluster:
    """Three nodes with one cookie and one epmd, joined into a cluster."""

    def __init__(self, directory, size=3):
        directory = Path(directory)
        cookie = secrets.token_hex(10).upper()
        epmd = free_port()
        self.nodes = [Node(directory / f"node{i + 1}", cookie=cookie,
                           epmd_port=epmd) for i in range(size)]
        self.epmd_port = epmd

    def start(self):
        t0 = time.monotonic()
        start_nodes(self.nodes)
        try:
            first = self.nodes[0]
            for n in self.nodes[1:]:
                n.ctl("stop_app")
                n.ctl("join_cluster", first.name)
                n.ctl("start_app")
                n.wait_up()
            self.wait_running(len(self.nodes))
        except BaseException:
            self.stop()
            raise
        self.formed_in = time.monotonic() - t0
        return self

    def running_nodes(self, via=None):
        via = via or next(n for n in self.nodes if n.beam_pid())
        out = via.ctl("-q", "cluster_status", "--formatter", "json")
        return json.loads(out).get("running_nodes", [])

    def wait_running(self, n, timeout=60):
        def enough():
            try:
                return len(self.running_nodes()) == n
            except (RuntimeError, StopIteration, ValueError):
                return False
        wait_for(enough, timeout, interval=0.5,
                 message=f"{n} running nodes in the cluster")

    def stop(self):
        stop_nodes(self.nodes)

    def node_named(self, erlang_name):
        return next(n for n in self.nodes if n.name == erlang_name)


# ---------------------------------------------------------------------------
# a TCP relay / a silent node


class Relay:
    """Listens on 127.0.0.1; each connection is forwarded to target_port
    (None: accepted and then left silent for ever). `accepted` keeps the
    time.monotonic() of each accept."""

    def __init__(self, target_port=None):
        self.target = target_port
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.accepted = []
        self._stop = False
        self._socks = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted.append(time.monotonic())
                self._socks.append(c)
            if self.target is None:
                continue        # silent: never read, never write
            t = threading.Thread(target=self._relay, args=(c,), daemon=True)
            self._threads.append(t)
            t.start()

    def _relay(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            c.close()
            return
        with self._lock:
            self._socks.append(u)
        peer = {c: u, u: c}
        try:
            while not self._stop:
                r, _, _ = select.select([c, u], [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    peer[s].sendall(data)
        except OSError:
            pass
        finally:
            c.close()
            u.close()

    def count(self):
        with self._lock:
            return len(self.accepted)

    def close(self):
        self._stop = True
        self.srv.close()
        for t in self._threads:
            t.join(5)
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass


# ---------------------------------------------------------------------------
# warrend with a configuration of the test's own


from conftest import (WARREND, Warrend, conf_list, conf_string,  # noqa: E402
                      finish_daemons, start_process)


def conf_text(urls, queues, broker_lines=(), top=()):
    """warrend.conf: broker { url = {...}; broker_lines }, top-level lines,
    queues: dicts with name, workers, command and optional extra lines."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    url = conf_string(urls[0]) if len(urls) == 1 else conf_list(urls)
    lines = ["broker {", f"    url = {url}",
             *[f"    {l}" for l in broker_lines], "}",
             "shutdown_timeout = 10", *top]
    for q in queues:
        lines += [f"queue {conf_string(q['name'])} {{",
                  f"    workers = {q.get('workers', 1)}",
                  f"    command = {conf_list(q['command'])}",
                  *[f"    {l}" for l in q.get("extra", [])], "}"]
    return "\n".join(lines) + "\n"


class Daemon(Warrend):
    """A warrend on a conf_text() file, with extra flags and a prefix."""

    def __init__(self, conf, log_path, queues, broker, args=(), prefix=(),
                 env=None):
        self.conf = Path(conf)
        self.log_path = Path(log_path)
        self.queues = list(queues)
        self.queue = self.queues[0]
        self.broker = broker
        if env is None:
            env = dict(os.environ)
            env["WARREN_TEST_LEAK"] = "1"
        self._log, self.proc = start_process(
            [*prefix, WARREND, *args, "-c", self.conf], self.log_path, env)
        self.pid = self.proc.pid
        self.extra_pids = set()

    def lines(self):
        return self.log().splitlines()


class Daemons:
    """Factory for a fixture: start(urls, queues, ...) -> Daemon; finish()
    kills what is left and deletes the queues (via the daemon's broker)."""

    def __init__(self, tmp_path, request):
        self.tmp = Path(tmp_path)
        self.request = request
        self.started = []

    def start(self, broker, urls, queues, broker_lines=(), top=(), args=(),
              prefix=(), env=None):
        n = len(self.started) + 1
        conf = self.tmp / f"warrend{n}.conf"
        conf.write_text(conf_text(urls, queues, broker_lines, top))
        d = Daemon(conf, self.tmp / f"warrend{n}.log",
                   [q["name"] for q in queues], broker, args, prefix, env)
        self.started.append(d)
        return d

    def finish(self):
        def queues_of(d):
            return [n for q in d.queues for n in
                    [q, q + ".failed"] + [f"{q}.retry.{s}s" for s in (10, 20, 40, 80)]]
        finish_daemons(self.request, self.started, lambda d: d.broker, queues_of)
