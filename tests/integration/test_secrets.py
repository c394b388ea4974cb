"""The broker password kept out of sight (SPEC: broker.password_file) --
issue 9.

A broker user of the test's own with a random password; warrend's URL
names the user only, the password is in a file (mode 0600). The secret
must never reach a command line, an environment (warrend, its workers,
the handler) or the log; a file others can read is warned about; a
rotated password needs only SIGHUP; a wrong one is reported naming the
user and the file, never the password.
"""

import os
import re
import secrets
import signal
import time

import pytest

from conftest import queue_name_for, read_lines, wait_for, write_script
from cluster_helpers import Daemons, connections


@pytest.fixture
def daemons(tmp_path, request):
    d = Daemons(tmp_path, request)
    yield d
    d.finish()


@pytest.fixture
def user(broker):
    name = "warren-" + secrets.token_hex(4)
    password = "Pw-" + secrets.token_urlsafe(18)
    broker.ctl("add_user", name, password)
    broker.ctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
    u = type("User", (), {})()
    u.name, u.password = name, password
    yield u
    try:
        broker.ctl("delete_user", name)
    except RuntimeError:
        pass


def write_password(path, password, mode=0o600):
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.write(fd, (password + "\n").encode())
    os.close(fd)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def url_of(broker, user):
    return f"amqp://{user.name}@127.0.0.1:{broker.port}/"


def pool(queue, command, workers=1):
    return [{"name": queue, "workers": workers, "command": command,
             "extra": ["retry { attempts = 1 }"]}]


def proc_files_holding(pids, secret):
    """[(pid, file)] among /proc/PID/{cmdline,environ} that hold secret."""
    hits = []
    for pid in pids:
        for f in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{f}", "rb") as fh:
                    if secret.encode() in fh.read():
                        hits.append((pid, f))
            except OSError:
                pass
    return hits


def test_password_appears_nowhere(broker, user, daemons, tmp_path, request):
    """After a message is handled and while the next one's handler runs:
    the password is in no cmdline or environ of warrend, its workers or
    the handler, nor in warrend's (debug) log."""
    queue = queue_name_for(request.node.name)
    pwfile = tmp_path / "broker.password"
    write_password(pwfile, user.password)
    running = tmp_path / "running"
    h = write_script(tmp_path / "h.sh", r"""
#!/bin/sh
cat >/dev/null
echo "$WARREN_MESSAGE_ID" >>"$1"
[ "$WARREN_MESSAGE_ID" = hold ] && sleep 4
exit 0
""")
    d = daemons.start(broker, url_of(broker, user), pool(queue, [h, str(running)]),
                      broker_lines=[f'password_file = "{pwfile}"'], args=("-d",))
    d.wait_consuming(1, timeout=20)
    conns = [c for c in connections(broker) if c["name"].startswith(f"warrend {queue}/")]
    assert conns and all(c["user"] == user.name for c in conns), conns
    broker.publish(queue, "one", message_id="first")
    broker.publish(queue, "two", message_id="hold")
    wait_for(lambda: read_lines(running) == ["first", "hold"], 20,
             message="the first message handled and the second one running")
    workers = d.children()
    pids = [d.pid, *workers]
    for w in workers:
        pids += [p for p in os.listdir("/proc") if p.isdigit()
                 and _ppid(p) == w]
    pids = sorted({int(p) for p in pids})
    assert len(pids) >= 3, f"warrend, a worker and the handler: {pids}"
    hits = proc_files_holding(pids, user.password)
    log = d.log()
    print(f"\nlooked at /proc/PID/cmdline and environ of {pids}: {hits or 'clean'}; "
          f"log: {len(log.splitlines())} lines")
    assert not hits, f"the password is in {hits}"
    assert user.password not in log, "the password is in the log"


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return int(s[s.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_password_file_readable_by_others_is_warned(broker, user, daemons,
                                                   tmp_path, request):
    queue = queue_name_for(request.node.name)
    pwfile = tmp_path / "open.password"
    write_password(pwfile, user.password, mode=0o644)
    d = daemons.start(broker, url_of(broker, user), pool(queue, ["/bin/true"]),
                      broker_lines=[f'password_file = "{pwfile}"'])
    d.wait_consuming(1, timeout=20)

    def warned():
        return [l for l in d.lines() if str(pwfile) in l and "readable" in l]
    lines = wait_for(warned, 10, message=f"a warning naming {pwfile} and 'readable'")
    print(f"\n{lines}")
    assert user.password not in d.log()


def test_rotation_needs_only_sighup(broker, user, daemons, tmp_path, request):
    """change_password on the broker and in the file, SIGHUP: the workers
    log in again (new connections) between messages; what was published
    before, during and after is handled, each message once."""
    queue = queue_name_for(request.node.name)
    pwfile = tmp_path / "broker.password"
    write_password(pwfile, user.password)
    out = tmp_path / "handled"
    h = write_script(tmp_path / "h.sh", r"""
#!/bin/sh
cat >/dev/null
sleep 0.3
echo "$WARREN_MESSAGE_ID" >>"$1"
""")
    d = daemons.start(broker, url_of(broker, user), pool(queue, [h, str(out)], 2),
                      broker_lines=[f'password_file = "{pwfile}"'])
    d.wait_consuming(2, timeout=20)
    before = [f"a-{i}" for i in range(10)]
    broker.publish_many(queue, [(m, None, m, {}) for m in before])
    wait_for(lambda: len(read_lines(out)) >= 2, 20, message="messages flowing")

    new = "Pw2-" + secrets.token_urlsafe(18)
    broker.ctl("change_password", user.name, new)
    write_password(pwfile, new)
    t_hup_ms = time.time() * 1000
    t0 = time.monotonic()
    d.signal(signal.SIGHUP)

    def rolled():
        assert d.alive(), d.log()
        cs = [c for c in connections(broker)
              if c["name"].startswith(f"warrend {queue}/")]
        return len(cs) == 2 and all(c["connected_at"] > t_hup_ms for c in cs)
    wait_for(rolled, 30, interval=0.5,
             message="both workers logged in again after SIGHUP (new connections)")
    print(f"\nworkers logged in again {time.monotonic() - t0:.1f} s after SIGHUP")
    after = [f"b-{i}" for i in range(4)]
    broker.publish_many(queue, [(m, None, m, {}) for m in after])
    want = set(before + after)
    lines = wait_for(lambda: (lambda l: l if want <= set(l) else None)(read_lines(out)),
                     30, message="every message handled after the rotation")
    dups = {m for m in lines if lines.count(m) > 1}
    assert not dups, f"handled twice (interrupted by the rotation): {dups}"
    assert user.password not in d.log() and new not in d.log()


def test_wrong_password_names_user_and_file(broker, user, daemons, tmp_path,
                                            request):
    queue = queue_name_for(request.node.name)
    pwfile = tmp_path / "wrong.password"
    wrong = "Wrong-" + secrets.token_urlsafe(12)
    write_password(pwfile, wrong)
    d = daemons.start(broker, url_of(broker, user), pool(queue, ["/bin/true"]),
                      broker_lines=[f'password_file = "{pwfile}"'])

    def told():
        assert d.alive() or d.proc.returncode is not None
        return [l for l in d.lines() if user.name in l and str(pwfile) in l]
    lines = wait_for(told, 20, message="a login failure naming the user and the file")
    print(f"\n{lines}")
    assert broker.consumer_count(queue) == 0
    assert wrong not in d.log(), "the wrong password is in the log"
