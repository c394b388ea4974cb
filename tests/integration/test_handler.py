"""The handler's world (SPEC: the handler): its stdin, environment, file
descriptors, working directory and process group; nothing from a message
ever reaches a shell."""

import decimal
import hashlib
import json
import os
import socket

from conftest import HANDLER_PATH, wait_for, write_script


def results_of(outdir, mid, timeout=30):
    path = outdir / f"{mid}.json"
    wait_for(path.exists, timeout=timeout, message=f"the handler's dump for {mid}")
    return json.loads(path.read_text())


def test_bodies_arrive_byte_for_byte(broker, warrend, handlers, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    w = warrend([handlers.dumper(outdir), str(outdir)], workers=2)
    w.wait_consuming(2)

    bodies = {
        "nul": b"a\0b\0\0c\0",
        "nuls": b"\0" * 4096,
        "random": os.urandom(1 << 20),
        "empty": b"",
        "crlf": b"line one\r\nline two\r\n\r\n",
        "binary": bytes(range(256)) * 64,
    }
    broker.publish_many(w.queue, [(b, None, k, {}) for k, b in bodies.items()])
    for mid, body in bodies.items():
        got = results_of(outdir, mid)
        assert got["len"] == len(body), mid
        assert got["sha256"] == hashlib.sha256(body).hexdigest(), mid
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20)
    w.stop()


def test_handler_environment_fds_cwd_and_process_group(broker, warrend, handlers, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    # warrend's own environment carries a marker and a NOTIFY_SOCKET (a real
    # one, so that warrend can use it); neither may reach the handler.
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    env = dict(os.environ, WARREN_TEST_LEAK="1", NOTIFY_SOCKET=notify_path)
    try:
        w = warrend([handlers.dumper(outdir), str(outdir), "arg with spaces", "$HOME"],
                    workers=1, env=env,
                    environment=["GREETING=hello world", "EMPTY=", "PATHLIKE=/a:/b"])
        w.wait_consuming(1)
        [worker] = w.wait_children(1)
        q = w.queue

        broker.publish(
            q, b"body", message_id="full",
            headers={
                "x-trace-id": "abc-123",
                "X-Count": 42,
                "negative": -7,
                "weird.name-1": "v",
                "x-nul": "a\0b",
                # other types, as SPEC.md renders them
                "x-decimal": decimal.Decimal("1.5"),
                "x-bool": True,
                "x-list": ["a", 1],
                "x-table": {"k": "v"},
            },
            correlation_id="corr-1", reply_to="replies", content_type="text/plain",
            content_encoding="utf-8", type="job", app_id="tests",
            timestamp=1700000000,
        )
        full = results_of(outdir, "full")
        broker.publish(q, b"bare")          # no properties at all
        bare = results_of(outdir, "no-id")
    finally:
        notify.close()

    common = {
        "PATH": HANDLER_PATH,
        "GREETING": "hello world",
        "EMPTY": "",
        "PATHLIKE": "/a:/b",
        "WARREN_QUEUE": q,
        "WARREN_WORKER": "1",
        "WARREN_ATTEMPT": "1",
        "WARREN_REDELIVERED": "0",
        "WARREN_ROUTING_KEY": q,
    }
    expected_full = dict(
        common,
        WARREN_MESSAGE_ID="full",
        WARREN_CORRELATION_ID="corr-1",
        WARREN_REPLY_TO="replies",
        WARREN_CONTENT_TYPE="text/plain",
        WARREN_CONTENT_ENCODING="utf-8",
        WARREN_TYPE="job",
        WARREN_APP_ID="tests",
        WARREN_TIMESTAMP="1700000000",
        WARREN_HEADER_X_TRACE_ID="abc-123",
        WARREN_HEADER_X_COUNT="42",
        WARREN_HEADER_NEGATIVE="-7",
        WARREN_HEADER_WEIRD_NAME_1="v",
        WARREN_HEADER_X_DECIMAL="1.5",
        WARREN_HEADER_X_BOOL="true",
        WARREN_HEADER_X_LIST='["a",1]',
        WARREN_HEADER_X_TABLE='{"k":"v"}',
        # x-nul holds a NUL byte: left out
    )
    for got, expected in ((full["env"], expected_full), (bare["env"], common)):
        # The default exchange is "": an empty WARREN_EXCHANGE or none.
        assert got.pop("WARREN_EXCHANGE", "") == ""
        assert "WARREN_TEST_LEAK" not in got
        assert "NOTIFY_SOCKET" not in got
        assert got == expected

    for d in (full, bare):
        assert sorted(int(fd) for fd in d["fds"]) == [0, 1, 2], d["fds"]
        assert d["cwd"] == "/"
        assert d["argv"][1:] == [str(outdir), "arg with spaces", "$HOME"]
        assert d["pgid"] == d["pid"], "the handler is not its own process group"
        assert d["ppid"] == worker
    w.stop()


def test_handler_workdir(broker, warrend, handlers, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    wd = tmp_path / "work dir"
    wd.mkdir()
    w = warrend([handlers.dumper(outdir), str(outdir)], workdir=str(wd))
    w.wait_consuming(1)
    broker.publish(w.queue, b"x", message_id="wd")
    assert results_of(outdir, "wd")["cwd"] == str(wd)
    w.stop()


HOSTILE_HANDLER = r"""
#!/bin/sh
# argv: DIR. Keeps what it was given, byte for byte, and echoes the header
# to stdout (which warrend logs).
cat >"$1/body"
printf '%s' "$WARREN_HEADER_X_EVIL" >"$1/header"
printf '%s' "$WARREN_CORRELATION_ID" >"$1/correlation"
printf 'evil header: %s\n' "$WARREN_HEADER_X_EVIL"
: >"$1/done"
"""


def test_hostile_message_stays_inert(broker, warrend, tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker}); rm -rf / `touch {marker}` ; touch {marker}"
    h = write_script(tmp_path / "hostile.sh", HOSTILE_HANDLER)
    w = warrend([h, str(tmp_path)])
    w.wait_consuming(1)
    broker.publish(w.queue, hostile.encode(), message_id="hostile",
                   headers={"x-evil": hostile, f"$(touch {marker})": "x"},
                   correlation_id=hostile)
    wait_for((tmp_path / "done").exists, timeout=30, message="the handler to run")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=20)

    assert (tmp_path / "header").read_text() == hostile
    assert (tmp_path / "correlation").read_text() == hostile
    assert (tmp_path / "body").read_text() == hostile
    wait_for(lambda: "evil header: " + hostile in w.log(), timeout=10,
             message="the handler's stdout in warrend's log")
    assert not marker.exists(), "a message's content was run by a shell"
    w.stop()
    assert not marker.exists()
