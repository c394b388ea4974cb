"""warrend and warren-submit under valgrind: no memory errors and no leaks.

The master and its workers run under memcheck (children traced, handlers
not) through a day in the life: messages acked, retried and parked, handler
output, a reload that grows the pool, one that rolls it, and a graceful
stop. Every process writes its own valgrind log; with -q a log holds only
errors and definite leaks, so every log must end up empty.
"""
import os
import re
import shutil
import subprocess

import pytest

from conftest import BUILDDIR, read_lines, wait_for, write_script

VALGRIND = shutil.which("valgrind")

HANDLER = r"""#!/bin/sh
body=$(cat)
echo "$WARREN_MESSAGE_ID $body" >>"$1"
echo "handled $body"
echo "a note on stderr" >&2
case "$body" in fail*) exit 3;; esac
exit 0
"""

pytestmark = pytest.mark.skipif(VALGRIND is None, reason="valgrind is not installed")


def memcheck(logdir, handler_dir):
    return [VALGRIND, "-q", "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
            "--trace-children=yes",
            f"--trace-children-skip={handler_dir}/*,/bin/*,/usr/*",
            f"--log-file={logdir}/vg.%p.log"]


def vg_dirs(tmp_path):
    """valgrind's log folder, the handler's folder (memcheck skips what
    runs from it), the results file, and the handler in its folder."""
    logdir = tmp_path / "vg"
    logdir.mkdir()
    hdir = tmp_path / "h"
    hdir.mkdir()
    handler = write_script(hdir / "handler.sh", HANDLER)
    return logdir, hdir, tmp_path / "results", handler


def reports(logdir):
    """{log name: text} of the valgrind logs that are not empty."""
    return {p.name: p.read_text() for p in logdir.glob("vg.*.log")
            if p.read_text().strip()}


def test_master_and_workers_are_clean_under_memcheck(broker, warrend, tmp_path):
    logdir, hdir, results, handler = vg_dirs(tmp_path)
    w = warrend([handler, str(results)], workers=2,
                queue_extra="    retry {\n        attempts = 2\n        delay = 1\n    }\n",
                prefix=memcheck(logdir, hdir), shutdown_timeout=20)
    w.wait_consuming(2, timeout=90)

    # warren-submit under memcheck too: -l, -i, -H and confirms
    submit = subprocess.run(
        [VALGRIND, "-q", "--leak-check=full", "--errors-for-leak-kinds=definite",
         "--error-exitcode=99", str(BUILDDIR / "src" / "warren-submit"),
         "-u", broker.url, "-q", w.queue, "-l", "-i", "vg", "-H", "X-Trace: t1"],
        input=b"one\ntwo\nfail me\nthree\n", capture_output=True, timeout=120)
    assert submit.returncode == 0, submit.stderr.decode()

    # 3 acks, and the failing one run twice (retry, then parked)
    wait_for(lambda: len(read_lines(results)) >= 5, timeout=120,
             message="five handler runs")
    wait_for(lambda: re.search(r"vg-3 failed, exit 3, .*parked", w.log()),
             timeout=60, message="the failing message parked")
    assert w.log().count(" ack, exit 0,") == 3

    # a reload that grows the pool, then one that rolls it
    conf = w.conf.read_text()
    w.conf.write_text(conf.replace("workers = 2", "workers = 3"))
    w.signal(1)
    w.wait_consuming(3, timeout=90)
    w.conf.write_text(conf.replace("workers = 2", "workers = 3")
                      .replace("attempts = 2", "attempts = 3"))
    w.signal(1)
    wait_for(lambda: "rolling its workers" in w.log(), timeout=30,
             message="the roll")
    w.wait_consuming(3, timeout=90)
    broker.publish(w.queue, "after the roll", message_id="late")
    wait_for(lambda: any(l.startswith("late ") for l in read_lines(results)),
             timeout=60, message="a message after the roll")

    w.stop(timeout=90)
    logs = list(logdir.glob("vg.*.log"))
    assert len(logs) >= 1 + 2 + 1 + 3, [p.name for p in logs]   # master, workers
    bad = reports(logdir)
    assert not bad, "\n\n".join(f"== {k}\n{v}" for k, v in bad.items())


REPLY_HANDLER = r"""#!/bin/sh
body=$(cat)
case "$body" in
bad*) exit 65;;
down*) [ -e "$1" ] || exit 75;;
esac
printf 'result of %s' "$body"
"""


def test_replies_breaker_and_submit_wait_are_clean_under_memcheck(
        broker, warrend, tmp_path):
    logdir = tmp_path / "vg"
    logdir.mkdir()
    hdir = tmp_path / "h"
    hdir.mkdir()
    dep = tmp_path / "dependency"
    handler = write_script(hdir / "handler.sh", REPLY_HANDLER)
    w = warrend([handler, str(dep)], workers=2,
                queue_extra="    reply = true\n    breaker { cooldown = 1 }\n",
                prefix=memcheck(logdir, hdir), shutdown_timeout=20)
    w.wait_consuming(2, timeout=90)

    def submit(body, status):
        r = subprocess.run(
            [VALGRIND, "-q", "--leak-check=full",
             "--errors-for-leak-kinds=definite", "--error-exitcode=99",
             str(BUILDDIR / "src" / "warren-submit"), "-u", broker.url,
             "-q", w.queue, "--wait", "--timeout", "120", body],
            capture_output=True, timeout=180)
        assert r.returncode == status, r.stderr.decode()
        return r.stdout

    assert submit("hello", 0) == b"result of hello"
    assert submit("bad one", 1) == b""
    # exit 75: back unspent, the pool paused; answered once the
    # dependency is there and a probe succeeds
    dep_later = subprocess.Popen(
        ["/bin/sh", "-c", f"sleep 3; touch {dep}"])
    assert submit("down now", 0) == b"result of down now"
    dep_later.wait(10)
    assert "circuit breaker open" in w.log()
    assert "circuit breaker closed" in w.log()
    w.stop(timeout=90)
    bad = reports(logdir)
    assert not bad, "\n\n".join(f"== {k}\n{v}" for k, v in bad.items())


def test_oversize_message_is_clean_under_memcheck(broker, warrend, tmp_path):
    """queue.max_body: a body spooled and mapped, then parked (a copy
    published from the mapping) or, with park = false, rejected; the
    mapping and the library's frames let go. (valgrind needs TMPDIR too:
    the body that no spool file takes is test_max_body's.)"""
    logdir, hdir, results, handler = vg_dirs(tmp_path)
    big = os.urandom(2 * (1 << 20) + 1)
    env = dict(os.environ, TMPDIR=str(tmp_path))
    for n, park in enumerate(["true", "false"]):
        w = warrend([handler, str(results)],
                    queue_extra=f"    max_body = 1\n    park = {park}\n",
                    prefix=memcheck(logdir, hdir), env=env)
        w.wait_consuming(1, timeout=90)
        broker.publish_many(w.queue, [(big, None, f"big{n}", {}),
                                      (b"small", None, f"small{n}", {})])
        end = "parked" if park == "true" else "rejected"
        wait_for(lambda: re.search(rf"big{n} failed, body \d+ bytes over "
                                   rf"max_body 1 MiB.*{end}", w.log()),
                 timeout=120, message=f"the big message {end}")
        wait_for(lambda: any(l.startswith(f"small{n} ") for l in read_lines(results)),
                 timeout=60, message="the small message handled")
        w.stop(timeout=90)
    bad = reports(logdir)
    assert not bad, "\n\n".join(f"== {k}\n{v}" for k, v in bad.items())
