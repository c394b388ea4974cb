"""The shipped monitoring files (monitoring/, SPEC "Files"): promtool
checks the alerting rules and runs their own cases; the real Prometheus
of test_metrics.py (the same fixture, scraping every second, loading
monitoring/warren.rules.yml) fires WarrenWorkersDown for a warrend whose
handler path is broken, within the rule's `for:` plus two scrape
intervals and not before its `for:`; every panel query of the Grafana
dashboard returns data from a live warrend that has acked and parked
messages."""

import json
import math
import re
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

pytest.register_assert_rewrite("ctl_helpers")

from conftest import REPO, retry_conf, wait_for, write_script
from ctl_helpers import start
from test_metrics import (EXIT_BY_BODY, JOB, PROMTOOL, RULES, metrics_port,  # noqa: F401
                          prometheus)

pytest_plugins = ["ctl_helpers"]

MONITORING = REPO / "monitoring"
DASHBOARD = MONITORING / "warren-dashboard.json"
SCRAPE_INTERVAL = 1  # test_metrics.Prometheus's
WORKERS_DOWN_FOR = 60  # the shipped for:, checked below: not shortened here


def seconds(duration):
    m = re.fullmatch(r"(\d+)([smh])", duration)
    assert m, duration
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def rule(name):
    groups = yaml.safe_load(RULES.read_text())["groups"]
    found = [r for g in groups for r in g["rules"] if r.get("alert") == name]
    assert len(found) == 1, name
    return found[0]


def api(prometheus, path, **params):
    url = f"{prometheus.url}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=10) as r:
        answer = json.load(r)
    assert answer["status"] == "success", answer
    return answer["data"]


def test_promtool_checks_and_tests_the_rules():
    for args in (["check", "rules", RULES.name],
                 ["test", "rules", "warren.rules.test.yml"]):
        r = subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, f"promtool {args}: {r.stdout}{r.stderr}"
        assert "SUCCESS" in r.stdout, r.stdout


def test_workers_down_fires_for_a_broken_handler(warrend, sockdir, prometheus,
                                                 metrics_port):
    """Two workers whose command does not exist: they never consume, and
    the alert is pending, then firing at `for:` (+ 2 scrape intervals)."""
    r = rule("WarrenWorkersDown")
    assert seconds(r["for"]) == WORKERS_DOWN_FOR, r["for"]
    names = {x["name"] for g in api(prometheus, "rules")["groups"] for x in g["rules"]}
    assert "WarrenWorkersDown" in names and "WarrenQueueStopped" in names, names

    w = start(warrend, sockdir, ["/nonexistent/warren-handler"], workers=2,
              metrics=f"127.0.0.1:{metrics_port}")
    q = w.queue
    not_consuming = (f'sum(warren_workers{{job="{JOB}",queue="{q}",'
                     f'state=~"down|starting"}}) > 0')
    wait_for(lambda: prometheus.value(not_consuming) is not None, 30, interval=0.2,
             message="Prometheus seeing the workers not consuming")
    t0 = time.monotonic()
    assert "cannot run /nonexistent/warren-handler" in w.log(), w.log()[-2000:]

    def state():
        for a in api(prometheus, "alerts")["alerts"]:
            if (a["labels"].get("alertname") == "WarrenWorkersDown"
                    and a["labels"].get("queue") == q):
                return a["state"]
        return None

    seen = {}

    def firing():
        s = state()
        if s is not None and s not in seen:
            seen[s] = time.monotonic() - t0
        return s == "firing"

    deadline = WORKERS_DOWN_FOR + 2 * SCRAPE_INTERVAL
    wait_for(firing, deadline + 1, interval=0.25,
             message=f"WarrenWorkersDown firing within {deadline} s")
    print(f"\nWarrenWorkersDown: pending at {seen.get('pending', -1):.1f} s, "
          f"firing at {seen['firing']:.1f} s")
    assert "pending" in seen and seen["pending"] < 5, seen
    assert WORKERS_DOWN_FOR - 2 <= seen["firing"] <= deadline + 0.5, seen
    # none of its workers ever consumed
    assert prometheus.value(
        f'sum(warren_messages_total{{job="{JOB}",queue="{q}",outcome="ack"}})') == 0


def panel_queries(queue):
    """(panel title, PromQL) of every panel target, template variables
    substituted as Grafana would for one queue."""
    dash = json.loads(DASHBOARD.read_text())
    regex = re.escape(queue).replace("\\", "\\\\")
    out = []
    for p in dash["panels"]:
        for t in p["targets"]:
            expr = (t["expr"].replace("$queue", regex)
                    .replace("$__rate_interval", "1m"))
            assert "$" not in expr, f"{p['title']}: unknown variable in {expr}"
            out.append((p["title"], expr))
    return dash, out


def test_every_dashboard_panel_has_data(warrend, broker, sockdir, tmp_path,
                                        prometheus, metrics_port):
    handler = write_script(tmp_path / "exit.sh", EXIT_BY_BODY)
    w = start(warrend, sockdir, [handler], workers=2,
              metrics=f"127.0.0.1:{metrics_port}",
              queue_extra=retry_conf(attempts=1))
    w.wait_consuming(2)
    q = w.queue
    sel = f'job="{JOB}",queue="{q}"'
    # Prometheus has the counters at 0 first, so that rates see them grow
    wait_for(lambda: prometheus.value(f'sum(warren_workers{{{sel}}})') == 2
             and prometheus.value(f'warren_messages_total{{{sel},outcome="ack"}}') == 0,
             30, interval=0.2, message="Prometheus scraping this warrend")
    # stamped, as warren-submit stamps them: the wait panel has data
    stamp = {"timestamp": int(time.time())}
    broker.publish_many(q, [(b"ok", None, f"ok-{i}", stamp) for i in range(20)]
                        + [(b"fail", None, f"fail-{i}", stamp) for i in range(5)])
    wait_for(lambda: prometheus.value(f'warren_messages_total{{{sel},outcome="ack"}}') == 20
             and prometheus.value(f'warren_messages_total{{{sel},outcome="failed"}}') == 5,
             60, interval=0.5, message="Prometheus: 20 acked, 5 parked")
    # every one of them stamped: the wait histogram counted each once
    wait_for(lambda: prometheus.value(f'warren_queue_wait_seconds_count{{{sel}}}') == 25,
             30, interval=0.5, message="Prometheus: 25 waits observed")

    dash, queries = panel_queries(q)
    assert len(dash["panels"]) >= 6 and len(queries) >= 8, queries
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for words in ("outcome", "p50", "p95", "p99", "state", "restart"):
        assert words in titles, (words, titles)

    def has_data(expr):
        result = api(prometheus, "query", query=expr)["result"]
        return [x for x in result if math.isfinite(float(x["value"][1]))]

    empty = []
    for title, expr in queries:
        try:
            wait_for(lambda: has_data(expr), 10, interval=0.5, message=expr)
        except AssertionError:
            empty.append((title, expr))
    if empty:
        raw = api(prometheus, "query", query=f'warren_handler_duration_seconds_bucket{{{sel}}}[1m]')
        pytest.fail(f"panel queries without data: {empty}\nbuckets: {json.dumps(raw)[:3000]}")

    # the queue variable lists the queue
    var = [v for v in dash["templating"]["list"] if v["name"] == "queue"][0]
    assert var["definition"] == "label_values(warren_workers, queue)"
    values = api(prometheus, "label/queue/values", **{"match[]": "warren_workers"})
    assert q in values, values
    # and the outcomes the throughput panel shows are the ones handled
    outcomes = {x["metric"]["outcome"]: float(x["value"][1]) for x in api(
        prometheus, "query", query=queries[0][1])["result"]}
    assert outcomes.get("ack", 0) > 0 and outcomes.get("failed", 0) > 0, outcomes
