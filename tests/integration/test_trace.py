"""W3C trace context (SPEC: the handler): the headers traceparent,
tracestate and baggage reach the handler as TRACEPARENT, TRACESTATE and
BAGGAGE (exec environment and persistent metadata), checked and bounded,
and every journal record of that message carries TRACE_ID.

warrend's records go to a stand-in for journald's native socket
(sd_helpers.JournalCapture, as in test_accounting.py), so the fields are
read as journald would store them; the last test reads them from the
journal of the suite's real systemd (test_systemd.py's machine).
"""


import pytest

from conftest import runs_of, wait_for, write_script
from sd_helpers import JournalCapture, journal_stream_env
from test_systemd import machine, service  # noqa: F401 (fixtures)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = f"00-{TRACE}-00f067aa0ba902b7-01"
OTHER = "0af7651916cd43dd8448eb211c80319c"

NAMES = ("TRACEPARENT", "TRACESTATE", "BAGGAGE")

# Appends {"id", and the three variables or null} to argv[1], prints a line
# (a record of the handler's own output) and exits 0.
EXEC_HANDLER = r"""
#!/usr/bin/python3
import json, os, sys
sys.stdin.buffer.read()
env = {}
for item in open("/proc/self/environ", "rb").read().split(b"\0"):
    if item:
        k, _, v = item.partition(b"=")
        env[k.decode()] = v.decode("utf-8", "replace")
row = {"id": env.get("WARREN_MESSAGE_ID")}
for n in ("TRACEPARENT", "TRACESTATE", "BAGGAGE"):
    row[n] = env.get(n)
print("handling", row["id"], flush=True)
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(row) + "\n")
"""

# The same from a persistent handler's metadata (its environment has none).
PERSISTENT_HANDLER = r"""
#!/usr/bin/python3
import json, os, sys
inp = sys.stdin.buffer
while True:
    head = inp.readline()
    if not head:
        sys.exit(0)
    _, n, length = head.split()
    meta = {}
    for _ in range(int(n)):
        k, _, v = inp.readline().rstrip(b"\n").partition(b"=")
        meta[k.decode()] = v.decode("utf-8", "replace")
    inp.read(int(length))
    row = {"id": meta.get("WARREN_MESSAGE_ID"), "env": "TRACEPARENT" in os.environ}
    for n in ("TRACEPARENT", "TRACESTATE", "BAGGAGE"):
        row[n] = meta.get(n)
    print("handling", row["id"], file=sys.stderr, flush=True)
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(row) + "\n")
    sys.stdout.write("ok\n")
    sys.stdout.flush()
"""

# (message id, headers, expected TRACEPARENT, TRACESTATE, BAGGAGE)
CASES = [
    ("full", {"traceparent": TP, "tracestate": "congo=t61rcWkgMzE",
              "baggage": "userId=alice,serverNode=DF%2028"},
     TP, "congo=t61rcWkgMzE", "userId=alice,serverNode=DF%2028"),
    ("none", {"x-other": "1"}, None, None, None),
    # a malformed traceparent takes its tracestate with it, not baggage
    ("bad", {"traceparent": "00-xyz-00f067aa0ba902b7-01",
             "tracestate": "a=b", "baggage": "k=v"}, None, None, "k=v"),
    # over the bounds, or not printable: left out
    ("big", {"traceparent": f"00-{OTHER}-00f067aa0ba902b7-01",
             "tracestate": "a=" + "x" * 600, "baggage": "k=" + "v" * 9000},
     f"00-{OTHER}-00f067aa0ba902b7-01", None, None),
    ("ctl", {"traceparent": TP, "baggage": "k=a\nb"}, TP, None, None),
]


@pytest.mark.parametrize("mode", ["exec", "persistent"])
def test_trace_context_reaches_handler_and_journal(broker, warrend, tmp_path, mode):
    runs = tmp_path / "runs"
    handler = write_script(tmp_path / "h.py",
                           EXEC_HANDLER if mode == "exec" else PERSISTENT_HANDLER)
    cap = JournalCapture(tmp_path / "journal")
    try:
        log = tmp_path / "warrend1.log"
        env = journal_stream_env(log)
        w = warrend(command=[handler, str(runs)], env=env,
                    prefix=cap.wrap([]), queue_extra=f'    mode = "{mode}"')
        w.wait_consuming(1)
        broker.publish_many(w.queue, [(mid.encode(), hd, mid, {})
                                      for mid, hd, *_ in CASES])
        wait_for(lambda: len(runs_of(runs)) == len(CASES), 30,
                 message="every message handled")
        got = {r["id"]: r for r in runs_of(runs)}
        for mid, _, tp, ts, bg in CASES:
            assert (got[mid]["TRACEPARENT"], got[mid]["TRACESTATE"],
                    got[mid]["BAGGAGE"]) == (tp, ts, bg), (mid, got[mid])
        if mode == "persistent":
            # metadata only: the kept process's environment has none
            assert not any(r["env"] for r in runs_of(runs))

        def outcomes(recs):
            done = {r.get("WARREN_MESSAGE_ID") for r in recs
                    if "WARREN_OUTCOME" in r.f}
            return recs if {m for m, *_ in CASES} <= done else None

        recs = cap.wait(outcomes, 30, "the outcome of every message")
        # the handler's own line and the outcome of "full" carry its trace
        # id; so does "big"'s (its traceparent is valid)
        out = [r for r in recs if r.get("WARREN_STREAM") is not None]
        for mid, trace in (("full", TRACE), ("big", OTHER)):
            mine = [r for r in recs if r.get("WARREN_MESSAGE_ID") == mid]
            assert any("WARREN_OUTCOME" in r.f for r in mine)
            assert mine and all(r.get("TRACE_ID") == trace for r in mine), mine
            said = [r for r in out if f"handling {mid}" in r.get("MESSAGE", "")]
            assert said and all(r.get("TRACE_ID") == trace for r in said), said
        # no trace id where the message had no valid traceparent, nor on
        # the records between messages
        for mid in ("none", "bad"):
            mine = [r for r in recs if r.get("WARREN_MESSAGE_ID") == mid]
            assert mine and not any("TRACE_ID" in r.f for r in mine), mine
        consuming = [r for r in recs if "consuming" in r.get("MESSAGE", "")]
        assert consuming and not any("TRACE_ID" in r.f for r in consuming)
        w.stop()
    finally:
        cap.close()


# ---------------------------------------------------------------------------
# under the suite's real systemd (sd_helpers.Machine, as in test_systemd.py):
# the records journald stored for the unit carry TRACE_ID

SD_HANDLER = r"""#!/bin/sh
cat >/dev/null
echo "traceparent=${TRACEPARENT:-none} baggage=${BAGGAGE:-none}"
"""


def test_trace_id_in_the_journal_of_real_systemd(machine, service):  # noqa: F811
    handler = machine.dir / "trace-handler.sh"
    handler.write_text(SD_HANDLER)
    handler.chmod(0o755)
    service.handler = f"{machine.INSIDE}/trace-handler.sh"
    service.start(1)
    service.broker.publish(service.queue, b"x", message_id="traced",
                           headers={"traceparent": TP, "baggage": "k=v"})
    service.broker.publish(service.queue, b"x", message_id="plain")

    def both(recs):
        done = {r.get("WARREN_MESSAGE_ID") for r in recs if "WARREN_OUTCOME" in r}
        return recs if {"traced", "plain"} <= done else None

    recs = service.wait_records(both, 30, "the outcomes of traced and plain")
    traced = [r for r in recs if r.get("WARREN_MESSAGE_ID") == "traced"]
    out = [r for r in traced if r.get("WARREN_STREAM") == "stdout"]
    assert out and out[0]["MESSAGE"].endswith(f"traceparent={TP} baggage=k=v"), out
    assert any("WARREN_OUTCOME" in r for r in traced)
    assert all(r.get("TRACE_ID") == TRACE for r in traced), traced
    plain = [r for r in recs if r.get("WARREN_MESSAGE_ID") == "plain"]
    assert plain and not any("TRACE_ID" in r for r in plain), plain
    # journalctl finds the trace by its field
    found = machine.journal(f"TRACE_ID={TRACE}")
    assert {r.get("WARREN_MESSAGE_ID") for r in found} == {"traced"}, found
