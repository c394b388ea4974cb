"""warrend's side of the service manager protocol and of the journal,
checked without a service manager (SPEC: systemd).

The notifications go to a NOTIFY_SOCKET of the test's own; the journal
records to a socket of the test's own, mounted where sd_journal_send()
looks for journald, in a private mount namespace of the daemon.
"""

import json
import os
import re
import signal
import subprocess

import pytest

from conftest import (WARREND, Warrend, finish_daemons, start_process, conf_list, conf_string,
                      queue_name_for, write_script)
from sd_helpers import (DelayProxy, JournalCapture, NotifyListener,
                        journal_stream_env, monotonic_usec)

# Body: JSON {"out": [lines], "err": [lines], "sleep": s, "exit": n}. Writes
# its environment (as execve gave it) to DIR/<message id>.env.json first.
HANDLER = r"""
#!/usr/bin/python3
import json, os, sys, time
d = sys.argv[1]
task = json.loads(sys.stdin.buffer.read() or b"{}")
env = {}
for item in open("/proc/self/environ", "rb").read().split(b"\0"):
    if item:
        k, _, v = item.partition(b"=")
        env[k.decode()] = v.decode("utf-8", "replace")
name = env.get("WARREN_MESSAGE_ID", "no-id")
with open(os.path.join(d, "." + name + ".tmp"), "w") as f:
    json.dump(env, f)
os.rename(os.path.join(d, "." + name + ".tmp"), os.path.join(d, name + ".env.json"))
for line in task.get("out", []):
    print(line, flush=True)
for line in task.get("err", []):
    print(line, file=sys.stderr, flush=True)
time.sleep(task.get("sleep", 0))
sys.exit(task.get("exit", 0))
"""

STATUS = re.compile(r"^(\S+) (\d+)/(\d+) consuming, (\d+) busy; "
                    r"(\d+) done, (\d+) retried, (\d+) failed$")


def status_of(d):
    """The STATUS= of a datagram as a tuple, or None."""
    s = d.value("STATUS")
    if s is None:
        return None
    m = STATUS.match(s)
    assert m, f"STATUS= not of the documented form: {s!r}"
    return (m.group(1),) + tuple(int(x) for x in m.groups()[1:])


class WrappedWarrend(Warrend):
    """A Warrend whose command line is argv (a wrapper that ends in
    `exec warrend`, so that its pid is warrend's)."""

    def __init__(self, argv, conf, log_path, queues, broker, env):
        self.conf = conf
        self.log_path = log_path
        self.queues = queues
        self.queue = queues[0]
        self.broker = broker
        self._log, self.proc = start_process(argv, log_path, env)
        self.pid = self.proc.pid
        self.extra_pids = set()

    def is_warrend(self):
        try:
            return os.readlink(f"/proc/{self.pid}/exe") == os.path.realpath(WARREND)
        except OSError:
            return False


@pytest.fixture
def daemon(broker, tmp_path, request):
    """Factory: daemon(argv_of(conf), workers=N, ...) -> WrappedWarrend.

    argv_of receives the path of the configuration written for the test.
    """
    started = []

    def start(argv_of, workers, env, url=None, queue_extra="",
              log_name="warrend.log"):
        queue = queue_name_for(request.node.name)
        conf = tmp_path / "warrend.conf"
        conf.write_text("\n".join([
            "broker {", f"    url = {conf_string(url or broker.url)}", "}",
            "shutdown_timeout = 10",
            f"queue {conf_string(queue)} {{",
            f"    workers = {workers}",
            f"    command = {conf_list([handler, str(outdir)])}",
            queue_extra, "}", ""]))
        w = WrappedWarrend(argv_of(conf), conf, tmp_path / log_name, [queue],
                           broker, env)
        started.append(w)
        return w

    outdir = tmp_path / "env"
    outdir.mkdir()
    handler = write_script(tmp_path / "handler.py", HANDLER)
    if not WARREND.exists():
        pytest.fail(f"{WARREND} is not built")
    yield start

    finish_daemons(request, started, lambda w: broker,
                   lambda w: [n for q in w.queues for n in (q, q + ".failed")])


def task(out=(), err=(), sleep=0, exit=0):
    return json.dumps({"out": list(out), "err": list(err), "sleep": sleep,
                       "exit": exit})


def test_notify_sequence(broker, daemon, tmp_path):
    """READY=1 only once both workers consume; a STATUS= line that counts;
    RELOADING=1 with MONOTONIC_USEC= then READY=1 on SIGHUP; STOPPING=1 on
    SIGTERM; WATCHDOG=1 pings; every datagram from the master; the
    handlers never see NOTIFY_SOCKET or the watchdog variables."""
    # The workers reach the broker through a relay that holds each
    # connection 1.5 s: a READY=1 not waiting for them would show.
    proxy = DelayProxy(broker.port, 1.5)
    consumers_at_ready = []
    holder = {}

    def on_datagram(d):
        if d.has("READY=1") and not consumers_at_ready:
            consumers_at_ready.append(broker.consumer_count(holder["queue"]))

    listener = NotifyListener(tmp_path / "notify", on_datagram)
    try:
        env = dict(os.environ, NOTIFY_SOCKET=listener.path,
                   WARREN_TEST_LEAK="1")
        for k in ("WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            env.pop(k, None)
        # sd_watchdog_enabled() wants WATCHDOG_PID to be warrend's own pid:
        # the shell's, which exec keeps.
        t_start = monotonic_usec()
        w = daemon(lambda conf: [
            "sh", "-c", 'exec env WATCHDOG_PID=$$ WATCHDOG_USEC=2000000 "$@"',
            "sh", WARREND, "-c", conf],
            workers=2, env=env,
            url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        holder["queue"] = q = w.queue

        ready = listener.wait_word("READY=1", 30)
        ds = listener.snapshot()
        assert w.is_warrend(), "the wrapper did not exec warrend"
        assert consumers_at_ready == [2], (
            f"READY=1 came with {consumers_at_ready} consumers on {q}, not 2")
        assert ds[ready].usec - t_start >= 1_400_000, (
            "READY=1 came before the workers could have connected")
        statuses = [status_of(d) for d in ds[:ready + 1] if d.has("STATUS=")]
        assert statuses and statuses[-1] == (q, 2, 2, 0, 0, 0, 0), statuses
        assert not any(d.has("READY=1") for d in ds[:ready])

        # STATUS= follows the work: three quick tasks, then a slow one.
        broker.publish_many(q, [(task(out=["hi"]), None, f"n{i}", {})
                                for i in range(3)])
        listener.wait(lambda ds: any(status_of(d) == (q, 2, 2, 0, 3, 0, 0)
                                     for d in ds if d.has("STATUS=")),
                      15, "STATUS= with 3 done")
        broker.publish(q, task(sleep=2.5), message_id="slow")
        listener.wait(lambda ds: any(status_of(d) == (q, 2, 2, 1, 3, 0, 0)
                                     for d in ds if d.has("STATUS=")),
                      15, "STATUS= with 1 busy")
        listener.wait(lambda ds: any(status_of(d) == (q, 2, 2, 0, 4, 0, 0)
                                     for d in ds if d.has("STATUS=")),
                      15, "STATUS= with 4 done")

        # SIGHUP: RELOADING=1 and MONOTONIC_USEC= in one datagram, READY=1.
        n = len(listener.snapshot())
        t0 = monotonic_usec()
        w.signal(signal.SIGHUP)
        i = listener.wait_word("RELOADING=1", 10, after=n)
        j = listener.wait_word("READY=1", 15, after=i + 1)
        ds = listener.snapshot()
        mono = ds[i].value("MONOTONIC_USEC")
        assert mono is not None and re.fullmatch(r"[0-9]+", mono), ds[i]
        assert t0 <= int(mono) <= ds[i].usec, (t0, mono, ds[i].usec)
        assert not any(d.has("READY=1") for d in ds[n:i]), ds[n:j + 1]

        # WATCHDOG=1: from the start, at least every WATCHDOG_USEC/2 or so.
        listener.wait(lambda ds: ds[-1].usec - t_start > 4_000_000 and
                      sum(d.has("WATCHDOG=1") for d in ds) >= 4,
                      10, "four WATCHDOG=1 pings")
        pings = [d.usec for d in listener.snapshot() if d.has("WATCHDOG=1")]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 1_600_000, f"watchdog pings {gaps} us apart"

        # SIGTERM: STOPPING=1, and no READY=1 after it.
        n = len(listener.snapshot())
        w.stop()
        k = listener.wait_word("STOPPING=1", 5, after=n)
        ds = listener.snapshot()
        assert not any(d.has("READY=1") for d in ds[k:]), ds[k:]

        # Only the master notifies; workers and handlers never do.
        assert listener.errors == []
        senders = {d.pid for d in ds}
        assert senders == {w.pid}, (
            f"datagrams from {senders}, warrend is {w.pid}: "
            f"{[d for d in ds if d.pid != w.pid]}")

        # The handlers' environment holds none of the manager's variables.
        dumps = sorted((tmp_path / "env").glob("*.env.json"))
        assert len(dumps) == 4, dumps
        for dump in dumps:
            env = json.loads(dump.read_text())
            leaked = [k for k in env if k in ("NOTIFY_SOCKET", "WATCHDOG_USEC",
                                              "WATCHDOG_PID", "WARREN_TEST_LEAK")]
            assert leaked == [], f"{dump.name}: {leaked}"
            assert all(k == "PATH" or k.startswith("WARREN_") for k in env), env
    finally:
        listener.close()
        proxy.close()


def test_journal_fields(broker, daemon, tmp_path):
    """With stderr the journal (JOURNAL_STREAM), every record goes to the
    native socket with PRIORITY, MESSAGE, SYSLOG_IDENTIFIER=warrend and the
    WARREN_* fields of what it is about."""
    cap = JournalCapture(tmp_path / "journal")
    try:
        stderr = tmp_path / "stderr.log"
        env = journal_stream_env(stderr)
        w = daemon(lambda conf: cap.wrap([WARREND, "-c", conf]), workers=2,
                   env=env, queue_extra="    retry { attempts = 1 }",
                   log_name="stderr.log")
        q = w.queue
        w.wait_consuming(2)
        assert w.is_warrend()
        workers = w.wait_children(2)

        out = ["first line", "second = line, with an equals sign"]
        broker.publish(q, task(out=out, err=["a line on stderr"], sleep=0.3),
                       message_id="ok-1")
        broker.publish(q, task(out=out, err=["a line on stderr"]),
                       message_id="ok-2")
        broker.publish(q, task(out=["about to fail"], err=["failing now"], exit=3),
                       message_id="bad")

        def outcomes(recs):
            got = {r.get("WARREN_MESSAGE_ID"): r for r in recs
                   if "WARREN_OUTCOME" in r.f}
            return got if {"ok-1", "ok-2", "bad"} <= set(got) else None

        outcome = cap.wait(outcomes, 30, "the outcomes of ok-1, ok-2 and bad")
        w.stop()
        cap.wait(lambda recs: any(r.pid == w.pid and r.get("MESSAGE") == "stopped"
                                  for r in recs), 5, "the master's 'stopped'")
        recs = cap.snapshot()

        assert cap.errors == [], cap.errors
        assert stderr.read_text() == "", "records went to stderr, not the journal"
        for r in recs:
            assert len(r.names) == len(set(r.names)), f"a field twice: {r}"
            assert r.get("SYSLOG_IDENTIFIER") == "warrend", r
            assert re.fullmatch(r"[0-7]", r.get("PRIORITY", "")), r
            assert r.get("MESSAGE"), r

        # Master records are about no queue; a worker's carry its identity.
        master = [r for r in recs if r.pid == w.pid]
        assert any(r.get("MESSAGE").startswith("starting with") for r in master)
        assert any(r.get("MESSAGE").startswith("ready: 2 workers") for r in master)
        for r in master:
            assert "WARREN_QUEUE" not in r.f and "WARREN_WORKER" not in r.f, r
        number_of = {}
        for r in recs:
            if r.pid == w.pid:
                continue
            assert r.pid in workers, f"a record from {r.pid}, not a worker: {r}"
            assert r.get("WARREN_QUEUE") == q, r
            assert r.get("WARREN_WORKER") in ("1", "2"), r
            assert number_of.setdefault(r.pid, r.get("WARREN_WORKER")) == r.get("WARREN_WORKER")
        assert sorted(number_of) == sorted(workers), "a worker logged nothing"
        assert sorted(number_of.values()) == ["1", "2"], number_of

        for mid in ("ok-1", "ok-2"):
            r = outcome[mid]
            assert r.get("WARREN_OUTCOME") == "ack", r
            assert r.get("WARREN_EXIT_STATUS") == "0", r
            assert r.get("PRIORITY") == "6", r
            assert r.get("WARREN_QUEUE") == q and r.get("WARREN_WORKER") in ("1", "2")
            assert re.fullmatch(r"[0-9]+", r.get("WARREN_DURATION_MS", "")), r
            assert "WARREN_STREAM" not in r.f, r
        assert int(outcome["ok-1"].get("WARREN_DURATION_MS")) >= 300

        bad = outcome["bad"]
        assert bad.get("WARREN_OUTCOME") == "failed", bad
        assert bad.get("WARREN_EXIT_STATUS") == "3", bad
        assert bad.get("PRIORITY") == "4", bad
        assert re.fullmatch(r"[0-9]+", bad.get("WARREN_DURATION_MS", "")), bad
        assert broker.ready_count(q + ".failed") == 1, "not parked"

        # One record per line of the handler's output, with its stream.
        def lines(mid, stream):
            return [r for r in recs if r.get("WARREN_MESSAGE_ID") == mid
                    and r.get("WARREN_STREAM") == stream]

        for mid in ("ok-1", "ok-2"):
            so, se = lines(mid, "stdout"), lines(mid, "stderr")
            assert [r.get("MESSAGE") for r in so] == [
                f"{mid}: stdout: {l}" for l in out], so
            assert [r.get("MESSAGE") for r in se] == [
                f"{mid}: stderr: a line on stderr"], se
            for r in so + se:
                assert r.get("WARREN_QUEUE") == q and "WARREN_OUTCOME" not in r.f
                assert r.get("WARREN_WORKER") == outcome[mid].get("WARREN_WORKER")
        assert [r.get("MESSAGE") for r in lines("bad", "stdout")] == [
            "bad: stdout: about to fail"]
        assert [r.get("MESSAGE") for r in lines("bad", "stderr")] == [
            "bad: stderr: failing now"]
        streams = {r.get("WARREN_STREAM") for r in recs} - {None}
        assert streams == {"stdout", "stderr"}, streams
    finally:
        cap.close()


def test_journal_only_when_stderr_is_the_journal(tmp_path):
    """JOURNAL_STREAM naming stderr: native records; naming another file:
    lines on stderr, nothing to the journal."""
    conf = tmp_path / "bad.conf"
    conf.write_text('broker {\n    url = "amqp://localhost/"\n}\nqueue "q" {\n'
                    '    workers = 1\n    bogus = 1\n    command = {"/bin/true"}\n}\n')
    cap = JournalCapture(tmp_path / "journal")
    try:
        for matching in (True, False):
            err = tmp_path / f"stderr-{matching}"
            err.touch()
            other = tmp_path / "other"
            other.touch()
            st = os.stat(err if matching else other)
            env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
            before = len(cap.snapshot())
            with open(err, "wb") as f:
                r = subprocess.run(cap.wrap([WARREND, "-c", conf]),
                                   stdin=subprocess.DEVNULL, stdout=f,
                                   stderr=f, env=env, timeout=30)
            assert r.returncode == 78
            text = err.read_text()
            if matching:
                recs = cap.wait(lambda rs: rs[before:], 5, "a record")
                assert text == ""
                assert len(recs) == 1, recs
                rec = recs[0]
                assert rec.get("PRIORITY") == "3"
                assert rec.get("SYSLOG_IDENTIFIER") == "warrend"
                assert rec.get("MESSAGE").startswith(f"{conf}:6:"), rec
            else:
                assert re.match(rf"^warrend\[\d+\]: error: {re.escape(str(conf))}:6:",
                                text), text
                assert len(cap.snapshot()) == before
    finally:
        cap.close()
