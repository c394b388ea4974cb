#!/usr/bin/python3
"""examples/handler.py: a persistent warren handler in Python.

    queue "records" {
        mode = "persistent"
        command = {"/usr/bin/python3", "/usr/share/doc/warren/examples/handler.py",
                   "/var/lib/records/records.jsonl"}
        environment = {"PYTHONPATH=/usr/share/doc/warren/examples"}
    }

For each message it appends one JSON line to the file named by its
argument: the message's metadata, the body's length and SHA-256, and the
body itself when it is UTF-8 text.  An empty body is bad input: failed for
good ("fail").  A write that fails (disk full, say) raises OSError: the
attempt fails and warrend retries the message later.

A message with a reply_to gets its record's length and SHA-256 back as a
JSON result (warrend sends it with queue.reply = true).

It uses the helper module warren_handler.py, found next to this file or on
PYTHONPATH.  It logs one line per message on stderr, which warrend logs.
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import warren_handler  # noqa: E402


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: handler.py RECORDS-FILE")
    out = open(sys.argv[1], "ab")
    count = 0

    def handle(msg):
        nonlocal count
        if not msg.body:
            raise warren_handler.Fail("empty body")
        digest = hashlib.sha256(msg.body).hexdigest()
        record = {"meta": msg.meta, "len": len(msg.body), "sha256": digest}
        try:
            record["text"] = msg.body.decode("utf-8")
        except UnicodeDecodeError:
            pass
        # one write of one line; flushed before the answer, so an "ok"
        # is only given for a record that reached the file
        out.write(json.dumps(record).encode() + b"\n")
        out.flush()
        count += 1
        print(f"{msg.meta.get('WARREN_MESSAGE_ID', '-')!r}: "
              f"{len(msg.body)} bytes, record {count}")
        if "WARREN_REPLY_TO" in msg.meta:
            result = {"len": len(msg.body), "sha256": digest}
            msg.ok(f"sha256 {digest}", result=json.dumps(result))
            return None
        return f"sha256 {digest}"

    warren_handler.serve(handle)
    out.close()


if __name__ == "__main__":
    main()
