"""warren_handler: the persistent handler protocol of warrend, for Python 3.

A persistent handler (queue.mode = "persistent") is started once by its
worker and reads one frame per message on stdin; it answers each with one
line on stdout.  This module speaks that protocol (warren-handler(7)):

    import warren_handler

    for msg in warren_handler.messages():
        if not msg.body:
            msg.fail("empty body")        # for good: parked
        elif not ready_yet():
            msg.retry("not ready")        # a failed attempt, retried later
        else:
            work(msg.meta["WARREN_MESSAGE_ID"], msg.body)
            msg.ok()                      # acked

or, letting the callback's outcome decide:

    def handle(msg):
        ...                 # return None or a reason text: ok
        raise warren_handler.Retry("db down")    # retry
        raise warren_handler.Fail("bad input")   # failed for good
        # any other exception: retry, with the traceback on stderr

    warren_handler.serve(handle)

With queue.reply = true, an answer can carry a result, which warrend
sends to the message's reply_to: msg.ok(result=b"...") (bytes, or str as
UTF-8), or a serve() callback that returns bytes.  msg.tempfail() (or
raising warren_handler.TempFail) says a dependency is down: with a
queue.breaker the message goes back unspent and the pool pauses.

msg.meta is a dict of the frame's metadata (the names and values of the
WARREN_* variables an exec handler gets), unescaped, decoded from UTF-8
with "surrogateescape" as os.environ is: value.encode("utf-8",
"surrogateescape") gives the bytes back.  msg.body is the body, bytes.

Once messages() starts, the protocol's descriptors are moved out of the
way: fd 1 (and sys.stdout) then writes to stderr, which warrend logs, and
fd 0 reads /dev/null, so neither print() nor a child process can corrupt
the conversation with warrend.
"""

import os
import re
import sys
import traceback

__all__ = ["Message", "messages", "serve", "Retry", "Fail", "TempFail",
           "ProtocolError"]

_HEAD = re.compile(rb"warren (0|[1-9][0-9]*) (0|[1-9][0-9]*)\n\Z")
_ESCAPE = re.compile(rb"\\(.?)", re.S)


class ProtocolError(Exception):
    """The input is not a well-formed frame (or ends inside one)."""


class Retry(Exception):
    """Raised by a serve() callback: this attempt failed, retry it."""


class Fail(Exception):
    """Raised by a serve() callback: the message is bad, do not retry."""


class TempFail(Exception):
    """Raised by a serve() callback: a dependency is down (the queue's
    breaker puts the message back unspent; without one, a retry)."""


def unescape(value):
    """A metadata value as sent ("\\\\" and "\\n" escapes) -> its bytes."""

    def one(m):
        if m.group(1) == b"\\":
            return b"\\"
        if m.group(1) == b"n":
            return b"\n"
        raise ProtocolError(f"bad escape in metadata value {value!r}")

    return _ESCAPE.sub(one, value)


class _Channel:
    """The two protocol streams, moved off fds 0 and 1."""

    def __init__(self):
        self.rd = os.fdopen(os.dup(0), "rb")  # os.dup: close-on-exec
        self.wr = os.fdopen(os.dup(1), "wb", buffering=0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdout.flush()
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self.pending = None  # the message awaiting its answer

    def frame(self):
        """The next (meta, body), or None at EOF between frames."""
        head = self.rd.readline()
        if not head:
            return None
        m = _HEAD.match(head)
        if not m:
            raise ProtocolError(f"bad frame header {head[:80]!r}")
        nmeta, length = int(m.group(1)), int(m.group(2))
        meta = {}
        for _ in range(nmeta):
            line = self.rd.readline()
            if not line.endswith(b"\n"):
                raise ProtocolError("end of input inside the metadata")
            name, eq, value = line[:-1].partition(b"=")
            if not eq or not name:
                raise ProtocolError(f"bad metadata line {line[:80]!r}")
            meta[name.decode("utf-8", "surrogateescape")] = unescape(
                value).decode("utf-8", "surrogateescape")
        body = self.rd.read(length)
        if len(body) != length:
            raise ProtocolError(
                f"end of input after {len(body)} of {length} body bytes")
        return meta, body

    def answer(self, word, reason, result=None):
        line = word
        if reason:
            # one line: the reason may not hold a line break
            line += " " + " ".join(str(reason).splitlines())
        out = line.encode("utf-8", "replace") + b"\n"
        if result is not None:
            if isinstance(result, str):
                result = result.encode("utf-8", "surrogateescape")
            out = b"result %d\n" % len(result) + bytes(result) + out
        self.wr.write(out)


class Message:
    """One message: .meta (dict of str), .body (bytes); answer it once
    with ok(), retry() or fail(), each with an optional reason."""

    def __init__(self, channel, meta, body):
        self._channel = channel
        self.meta = meta
        self.body = body
        self.answered = None  # the word, once answered

    def _answer(self, word, reason, result=None):
        if self.answered:
            raise RuntimeError(f"message already answered {self.answered!r}")
        self._channel.answer(word, reason, result)
        self.answered = word
        self._channel.pending = None

    def ok(self, reason=None, result=None):
        """Success: warrend acks the message; result (bytes or str) is the
        reply's body with queue.reply = true."""
        self._answer("ok", reason, result)

    def retry(self, reason=None):
        """A failed attempt: retried per queue.retry, parked after the last."""
        self._answer("retry", reason)

    def fail(self, reason=None):
        """Failed for good (as exit 65): parked, or rejected."""
        self._answer("fail", reason)

    def tempfail(self, reason=None):
        """A dependency is down (as exit 75): with a breaker, the message
        goes back unspent and the pool pauses; else a failed attempt."""
        self._answer("tempfail", reason)

    def __repr__(self):
        return (f"<Message {self.meta.get('WARREN_MESSAGE_ID', '-')!r} "
                f"{len(self.body)} bytes>")


_channel = None


def messages():
    """Yield each Message until warrend closes stdin.

    The previous message must have been answered before the next one is
    asked for (warrend sends the next frame only after the answer)."""
    global _channel
    if _channel is None:
        _channel = _Channel()
    ch = _channel
    while True:
        if ch.pending is not None:
            raise RuntimeError(f"{ch.pending!r} was never answered")
        got = ch.frame()
        if got is None:
            return
        ch.pending = Message(ch, *got)
        yield ch.pending


def serve(callback):
    """Run callback(msg) for each message; its outcome is the answer:
    returning (None or a reason text) is ok, returning bytes is ok with
    that result, Retry retry, Fail fail, TempFail tempfail, any other
    exception retry with its traceback on stderr.  A callback may also
    answer by itself (msg.ok() ...).  Returns at EOF: exit 0."""
    for msg in messages():
        result = None
        try:
            reason = callback(msg)
            if isinstance(reason, (bytes, bytearray, memoryview)):
                result, reason = reason, None
        except Retry as e:
            word, reason = "retry", str(e)
        except Fail as e:
            word, reason = "fail", str(e)
        except TempFail as e:
            word, reason = "tempfail", str(e)
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            word, reason = "retry", f"{type(e).__name__}: {e}"
        else:
            word = "ok"
        if msg.answered:
            continue
        if word == "ok":
            msg.ok(reason, result)
        else:
            getattr(msg, word)(reason)
