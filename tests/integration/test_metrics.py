"""Prometheus metrics (SPEC: metrics { listen }, warrenctl metrics, the
metric names): scraped by a real Prometheus server and queried through its
HTTP API, read straight from warrend's listener, checked by promtool, and
compared with what the control socket and warrenctl print.

One Prometheus (Debian's package) serves the whole module: it scrapes
127.0.0.1:METRICS_PORT every second, and each test's warrend listens
there in turn. Each test's queue has its own name, so queries by
{queue="..."} never see another test's numbers.
"""

import json
import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.register_assert_rewrite("ctl_helpers")

from conftest import REPO, free_port, retry_conf, wait_for, write_script
from ctl_helpers import WARRENCTL, ask, queue_of, start, status, warrenctl

PROMETHEUS = "/usr/bin/prometheus"
# the shipped alerting rules, loaded by the module's Prometheus
# (test_monitoring.py checks their alerts)
RULES = REPO / "monitoring" / "warren.rules.yml"
PROMTOOL = "/usr/bin/promtool"
JOB = "warren"
BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
           600, 1800, 3600, math.inf]
FAMILIES = {
    "warren_messages_total": "counter",
    "warren_handler_duration_seconds": "histogram",
    "warren_workers": "gauge",
    "warren_worker_restarts_total": "counter",
    "warren_broker_connections_total": "counter",
}



# the sockdir fixture
pytest_plugins = ["ctl_helpers"]

# ---------------------------------------------------------------------------
# Prometheus


class Prometheus:
    def __init__(self, directory, target_port):
        self.dir = Path(directory)
        self.port = free_port()
        self.target = f"127.0.0.1:{target_port}"
        self.url = f"http://127.0.0.1:{self.port}"
        conf = self.dir / "prometheus.yml"
        conf.write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: {JOB}
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["{self.target}"]
""")
        self.log_path = self.dir / "prometheus.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={conf}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True, cwd=self.dir)

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}:\n"
                                 + self.log_path.read_text(errors="replace"))
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def query(self, q):
        """An instant query: [(labels, float value)]."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=10) as r:
            answer = json.load(r)
        assert answer["status"] == "success", answer
        return [(x["metric"], float(x["value"][1])) for x in answer["data"]["result"]]

    def value(self, q):
        """The one value of q, or None while it has none."""
        result = self.query(q)
        assert len(result) <= 1, f"{q}: more than one series: {result}"
        return result[0][1] if result else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def metrics_port():
    return free_port()


@pytest.fixture(scope="module")
def prometheus(metrics_port):
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} is missing (apt-get install prometheus; scripts/deps)")
    d = tempfile.mkdtemp(prefix="warren-prom-")
    p = Prometheus(d, metrics_port)
    try:
        wait_for(p.ready, 60, interval=0.2, message="prometheus /-/ready")
        yield p
    finally:
        p.stop()
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# the text exposition

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """(types {family: type}, samples [(name, {labels}, float)]) of a text
    exposition, in order."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = dict(LABEL.findall(m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def pick(samples, name, **labels):
    """The values of name whose labels include labels, in order."""
    return [v for n, l, v in samples
            if n == name and all(l.get(k) == x for k, x in labels.items())]


def one(samples, name, **labels):
    found = pick(samples, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def fetch(port, path="/metrics", timeout=5):
    """(status, content type, text) of GET http://127.0.0.1:PORT/PATH."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def scraped(port):
    """The parsed samples of the listener, or None while it does not answer."""
    try:
        code, _, text = fetch(port)
    except (urllib.error.URLError, OSError):
        return None
    return parse(text)[1] if code == 200 else None


def buckets_of(samples, queue):
    """[(le text, value)] of the queue's histogram, in order."""
    return [(l["le"], v) for n, l, v in samples
            if n == "warren_handler_duration_seconds_bucket" and l.get("queue") == queue]


# exit 3 for a body "fail", else success
EXIT_BY_BODY = r"""#!/bin/sh
body=$(cat)
[ "$body" = fail ] && exit 3
exit 0
"""


# ---------------------------------------------------------------------------
# tests


def test_prometheus_counts_what_was_handled(warrend, broker, sockdir, tmp_path,
                                            prometheus, metrics_port):
    """100 acked and 10 failed for good (attempts = 1): Prometheus's
    queried counters equal them, the histogram counted all 110."""
    handler = write_script(tmp_path / "exit.sh", EXIT_BY_BODY)
    w = start(warrend, sockdir, [handler], workers=2,
              metrics=f"127.0.0.1:{metrics_port}",
              queue_extra=retry_conf(attempts=1))
    w.wait_consuming(2)
    q = w.queue
    wait_for(lambda: prometheus.value(f'up{{job="{JOB}"}}') == 1
             and prometheus.value(f'sum(warren_workers{{queue="{q}"}})') == 2,
             30, interval=0.5, message="Prometheus scraping this warrend")

    broker.publish_many(q, [(b"ok", None, f"ok-{i}", {}) for i in range(100)]
                        + [(b"fail", None, f"fail-{i}", {}) for i in range(10)])

    def counted():
        got = (prometheus.value(f'warren_messages_total{{queue="{q}",outcome="ack"}}'),
               prometheus.value(f'warren_messages_total{{queue="{q}",outcome="failed"}}'),
               prometheus.value(f'warren_handler_duration_seconds_count{{queue="{q}"}}'))
        last[0] = got
        return got == (100, 10, 110)
    last = [None]
    try:
        wait_for(counted, 60, interval=0.5, message="100 ack, 10 failed, 110 observed")
    except AssertionError as e:
        raise AssertionError(f"{e}; last (ack, failed, count): {last[0]}") from None

    assert prometheus.value(f'warren_messages_total{{queue="{q}",outcome="retry"}}') == 0
    assert prometheus.value(f'warren_messages_total{{queue="{q}",outcome="requeued"}}') == 0
    states = {l["state"]: v for l, v in
              prometheus.query(f'warren_workers{{queue="{q}"}}')}
    assert set(states) == {"starting", "idle", "busy", "paused", "down"}, states
    assert sum(states.values()) == 2, states
    assert prometheus.value(f'up{{job="{JOB}"}}') == 1
    assert prometheus.value(f'warren_worker_restarts_total{{queue="{q}"}}') == 0
    node = f"127.0.0.1:{broker.port}"
    conns = prometheus.value(
        f'warren_broker_connections_total{{queue="{q}",node="{node}"}}')
    assert conns is not None and conns >= 2, conns
    # the broker and the master agree
    assert broker.ready_count(q + ".failed") == 10
    qs = queue_of(status(w.sock), q)
    assert (qs["acked"], qs["failed"], qs["retried"]) == (100, 10, 0), qs


def test_exposition_text(warrend, broker, sockdir, tmp_path, metrics_port, request):
    """The listener's text: promtool passes it; the five families with
    their types; cumulative buckets 10 ms .. 1 h and +Inf; the control
    socket's `metrics` and warrenctl metrics give the same text."""
    if not Path(PROMTOOL).exists():
        pytest.fail(f"{PROMTOOL} is missing (package prometheus)")
    handler = write_script(tmp_path / "exit.sh", EXIT_BY_BODY)
    w = start(warrend, sockdir, [handler], workers=1,
              metrics=f"127.0.0.1:{metrics_port}",
              queue_extra=retry_conf(attempts=2, delay=1))
    w.wait_consuming(1)
    q = w.queue
    request.addfinalizer(lambda: broker.delete_queue(q + ".retry.1s"))
    # 3 acks, one message failed twice: retry, then failed, parked
    broker.publish_many(q, [b"ok", b"ok", b"ok", b"fail"])
    wait_for(lambda: (s := scraped(metrics_port))
             and pick(s, "warren_handler_duration_seconds_count", queue=q) == [5],
             30, interval=0.2, message="5 handler runs observed")

    code, ctype, text = fetch(metrics_port)
    assert code == 200
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"promtool: {r.stdout}{r.stderr}\n{text}"

    types, samples = parse(text)
    assert {k: types.get(k) for k in FAMILIES} == FAMILIES, types
    for outcome, n in (("ack", 3), ("retry", 1), ("failed", 1), ("requeued", 0)):
        assert one(samples, "warren_messages_total", queue=q, outcome=outcome) == n

    b = buckets_of(samples, q)
    les = [le for le, _ in b]
    assert "0.01" in les and "3600" in les and "+Inf" in les, les
    assert [float(le) for le in les] == BUCKETS, les
    values = [v for _, v in b]
    assert values == sorted(values), f"buckets not cumulative: {b}"
    assert values[-1] == one(samples, "warren_handler_duration_seconds_count", queue=q) == 5
    assert 0 < one(samples, "warren_handler_duration_seconds_sum", queue=q) < 5

    # the same text from the control socket and from warrenctl, once quiet
    def same_text():
        a = ask(w.sock, "metrics")
        assert a["ok"] is True, a
        return a["text"] == fetch(metrics_port)[2]
    wait_for(same_text, 10, message="the socket's metrics text equal to /metrics")
    if WARRENCTL.exists():
        def same_print():
            r = warrenctl("-s", w.sock, "metrics")
            assert r.returncode == 0, r.stderr
            return r.stdout == fetch(metrics_port)[2]
        wait_for(same_print, 10, message="warrenctl metrics equal to /metrics")

    # only /metrics is served
    assert fetch(metrics_port, "/")[0] == 404


def test_durations_land_in_their_bucket(warrend, broker, sockdir, prometheus, metrics_port):
    """A handler of 0.3 s: counted in le="0.5", not in le="0.25"."""
    w = start(warrend, sockdir, ["/bin/sleep", "0.3"], workers=1,
              metrics=f"127.0.0.1:{metrics_port}")
    w.wait_consuming(1)
    q = w.queue
    broker.publish_many(q, [b"a", b"b", b"c"])
    samples = wait_for(
        lambda: (s := scraped(metrics_port))
        and pick(s, "warren_handler_duration_seconds_count", queue=q) == [3] and s,
        30, interval=0.2, message="3 runs observed")
    b = dict(buckets_of(samples, q))
    assert (b["0.1"], b["0.25"], b["0.5"], b["1"], b["+Inf"]) == (0, 0, 3, 3, 3), b
    total = one(samples, "warren_handler_duration_seconds_sum", queue=q)
    assert 0.9 <= total <= 1.5, total
    # and as Prometheus has it
    bucket = 'warren_handler_duration_seconds_bucket{queue="%s",le="%s"}'
    wait_for(lambda: prometheus.value(bucket % (q, "0.5")) == 3, 20, interval=0.5,
             message="Prometheus: 3 in le=0.5")
    assert prometheus.value(bucket % (q, "0.25")) == 0


def test_paused_and_busy_workers_in_metrics(warrend, broker, sockdir, tmp_path, metrics_port):
    gate = tmp_path / "gate"
    handler = write_script(tmp_path / "hold.sh", f"""#!/bin/sh
cat >/dev/null
while [ ! -e {gate} ]; do sleep 0.05; done
""")
    w = start(warrend, sockdir, [handler], workers=2,
              metrics=f"127.0.0.1:{metrics_port}")
    w.wait_consuming(2)
    q = w.queue

    def states():
        s = scraped(metrics_port)
        return {l["state"]: v for n, l, v in s
                if n == "warren_workers" and l["queue"] == q} if s else {}

    wait_for(lambda: states().get("idle") == 2, 10, message="2 idle")
    broker.publish(q, "x")
    wait_for(lambda: states().get("busy") == 1 and states().get("idle") == 1, 10,
             message="1 busy, 1 idle")
    assert ask(w.sock, f"pause {q}")["paused"] is True
    wait_for(lambda: states().get("paused") == 1 and states().get("busy") == 1, 10,
             message="1 paused, 1 still busy")
    gate.write_text("go")
    wait_for(lambda: states().get("paused") == 2, 10, message="2 paused")
    st = states()
    assert sum(st.values()) == 2 and st["idle"] == st["busy"] == 0, st
    assert ask(w.sock, f"resume {q}")["paused"] is False
    wait_for(lambda: states().get("idle") == 2, 10, message="2 idle again")


def test_label_values_escaped(warrend, broker, sockdir, tmp_path, metrics_port):
    """A queue name with a quote, a backslash and UTF-8: promtool still
    passes the text, and the label reads back as the name."""
    q = 't.metrics "quoted" back\\slash tâche'
    w = start(warrend, sockdir, ["/bin/true"], queue=q,
              metrics=f"127.0.0.1:{metrics_port}")
    w.wait_consuming(1)
    broker.publish(q, "x")
    wait_for(lambda: (s := scraped(metrics_port))
             and pick(s, "warren_messages_total", outcome="ack") == [1],
             20, interval=0.2, message="1 ack")
    code, _, text = fetch(metrics_port)
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"promtool: {r.stdout}{r.stderr}\n{text}"
    labels = {l["queue"] for n, l, v in parse(text)[1] if "queue" in l}
    unescaped = {re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), x)
                 for x in labels}
    assert unescaped == {q}, labels


def test_ipv6_listener(warrend, broker, sockdir, tmp_path):
    port = free_port()
    w = start(warrend, sockdir, ["/bin/true"], metrics=f"[::1]:{port}")
    w.wait_consuming(1)

    def get():
        try:
            with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as r:
                return r.status == 200 and "warren_workers" in r.read().decode()
        except (urllib.error.URLError, OSError):
            return False
    wait_for(get, 10, message="/metrics on [::1]")


def test_metrics_port_in_use(warrend, broker, sockdir, tmp_path):
    """warrend runs without metrics and says why once."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        w = start(warrend, sockdir, ["/bin/true"], metrics=f"127.0.0.1:{port}")
        w.wait_consuming(1)
        broker.publish(w.queue, "x")
        wait_for(lambda: queue_of(status(w.sock), w.queue)["acked"] == 1, 10,
                 message="a message handled without metrics")
        lines = [l for l in w.log().splitlines() if ": metrics" in l]
        assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], lines
        assert "running without metrics" in lines[0], lines
        # the control socket's metrics still answer
        assert ask(w.sock, "metrics")["ok"] is True


def test_idle_http_clients_do_not_stall(warrend, broker, sockdir, tmp_path):
    """20 HTTP clients that connect and send nothing (or half a request):
    the master's socket answers and messages flow meanwhile; /metrics
    answers again once they are gone, and once the listener's timeout
    (10 s) has dropped the ones that stay. A port of its own: the module's
    Prometheus, scraping over a kept-alive connection, would wake the
    listener up and hide one that never takes a connection again."""
    metrics_port = free_port()
    w = start(warrend, sockdir, ["/bin/true"], metrics=f"127.0.0.1:{metrics_port}")
    w.wait_consuming(1)
    wait_for(lambda: scraped(metrics_port), 10, message="/metrics answering")

    def flood(n):
        idle = []
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", metrics_port), timeout=5)
            if i % 2:
                c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never ends
            idle.append(c)
        return idle

    def scrape_soon():
        try:
            code, _, _ = fetch(metrics_port, timeout=1)
            return code == 200
        except (urllib.error.URLError, OSError):
            return False

    # they go away (3 times: whether their going is seen in one look of
    # the listener or in several is up to the scheduler)
    for n in range(1, 4):
        idle = flood(20)
        try:
            t0 = time.monotonic()
            assert status(w.sock)["pid"] == w.pid
            broker.publish(w.queue, "x")
            wait_for(lambda: queue_of(status(w.sock), w.queue)["acked"] == n, 5,
                     message="a message handled while HTTP clients hang on")
            assert time.monotonic() - t0 < 4
            scrape_soon()  # one more, waiting in the listen queue
        finally:
            for c in idle:
                c.close()
        wait_for(scrape_soon, 15, message=f"/metrics answering once the clients left ({n})")

    # they stay: dropped at the listener's timeout, then /metrics answers
    idle = flood(20)
    try:
        scrape_soon()
        wait_for(scrape_soon, 25, message="/metrics answering after the idle timeout")
        assert status(w.sock)["pid"] == w.pid
    finally:
        for c in idle:
            c.close()


def test_reload_moves_and_ends_the_listener(warrend, broker, sockdir, tmp_path):
    from ctl_helpers import reload
    a, b = free_port(), free_port()
    w = start(warrend, sockdir, ["/bin/true"], metrics=f"127.0.0.1:{a}")
    w.wait_consuming(1)
    wait_for(lambda: scraped(a), 10, message=f"/metrics on {a}")
    conf = Path(w.conf)
    conf.write_text(conf.read_text().replace(f"127.0.0.1:{a}", f"127.0.0.1:{b}"))
    reload(w)
    wait_for(lambda: scraped(b), 10, message=f"/metrics on {b} after the reload")
    with pytest.raises((urllib.error.URLError, OSError)):
        fetch(a)
    # metrics taken out of the file: no listener
    conf.write_text("\n".join(l for l in conf.read_text().splitlines()
                              if not l.startswith("metrics ")) + "\n")
    reload(w)
    wait_for(lambda: scraped(b) is None, 10, message="no listener once metrics is gone")
    assert status(w.sock)["pid"] == w.pid


def test_http_library_loaded_only_for_a_listener(warrend, broker, sockdir, tmp_path):
    """libmicrohttpd, and the GnuTLS it brings (about 2 MB of pages), is
    loaded once a metrics listener is configured: a warrend without one
    never maps it; a reload that adds one loads it and serves."""
    from ctl_helpers import reload

    def maps():
        return Path(f"/proc/{w.pid}/maps").read_text()
    w = start(warrend, sockdir, ["/bin/true"])
    w.wait_consuming(1)
    assert "libmicrohttpd" not in maps() and "libgnutls" not in maps()
    port = free_port()
    conf = Path(w.conf)
    conf.write_text(conf.read_text() +
                    f'\nmetrics {{ listen = "127.0.0.1:{port}" }}\n')
    reload(w)
    wait_for(lambda: scraped(port), 10, message=f"/metrics on {port} after the reload")
    assert "libmicrohttpd" in maps()

