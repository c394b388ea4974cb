"""Helpers for the tests of warren's systemd side (SPEC: systemd).

- NotifyListener: a NOTIFY_SOCKET of the test's own, which records every
  datagram with its sender's pid (SO_PASSCRED).
- JournalCapture and parse_native(): a stand-in for journald's native
  socket, bind-mounted over /run/systemd/journal in a private mount
  namespace of the daemon's own, and a parser of the native protocol.
- with_package_users(): a command run where the package's system users
  exist, in a mount namespace of its own.
- DelayProxy: a TCP relay to the broker that holds each new connection for
  a while, so that workers are seen to consume late.
- Machine: a real systemd booted as PID 1 of private PID, mount, UTS, IPC
  and cgroup namespaces (STYLE.md, field notes), ended by killing it. Its
  /etc and /var/lib are the host's under overlays: users made in there
  never reach the host.
"""

import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from conftest import pid_alive, wait_for

# ---------------------------------------------------------------------------
# sd_notify


class Datagram:
    """One notification: when it came (CLOCK_MONOTONIC, us), who sent it."""

    def __init__(self, usec, pid, text):
        self.usec = usec
        self.pid = pid
        self.text = text
        self.lines = text.split("\n")

    def has(self, word):
        """True when a line is `word`, or starts with it if it ends in '='."""
        if word.endswith("="):
            return any(l.startswith(word) for l in self.lines)
        return word in self.lines

    def value(self, key):
        for l in self.lines:
            if l.startswith(key + "="):
                return l[len(key) + 1:]
        return None

    def __repr__(self):
        return f"<{self.usec} pid {self.pid}: {self.text!r}>"


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class _Collector:
    """What a listener thread has received, for tests to wait on."""

    def _listen(self, path, rcvbuf=None):
        """Bind an AF_UNIX datagram socket at path (sender credentials on)
        and start self._run reading it."""
        self.errors = []
        self._cond = threading.Condition()
        self._stop = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if rcvbuf:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET,
                                     getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _items(self):
        raise NotImplementedError

    def snapshot(self):
        with self._cond:
            return list(self._items())

    def wait(self, predicate, timeout, message):
        """Wait until predicate(list received so far) is true; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(list(self._items()))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {message}; "
                        f"got {self._items()!r}")
                self._cond.wait(min(left, 0.2))


class NotifyListener(_Collector):
    """An AF_UNIX datagram socket bound at `path`, read by a thread.

    on_datagram(datagram) is called from that thread as each one arrives,
    before it is added to `datagrams`.
    """

    def __init__(self, path, on_datagram=None):
        self.path = str(path)
        self.on_datagram = on_datagram
        self.datagrams = []
        self._listen(self.path)

    def _run(self):
        creds = socket.CMSG_SPACE(struct.calcsize("iII"))
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, creds)
            except socket.timeout:
                continue
            except OSError:
                break
            now = monotonic_usec()
            pid = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
            d = Datagram(now, pid, data.decode("utf-8", "replace"))
            if self.on_datagram is not None:
                try:
                    self.on_datagram(d)
                except Exception as e:  # reported by the test, not lost
                    self.errors.append(repr(e))
            with self._cond:
                self.datagrams.append(d)
                self._cond.notify_all()

    def _items(self):
        return self.datagrams

    def wait_word(self, word, timeout, after=0):
        """The first datagram at index >= after that has word; its index."""
        def found(ds):
            for i in range(after, len(ds)):
                if ds[i].has(word):
                    return (i,)
            return None
        return self.wait(found, timeout, word)[0]

    def close(self):
        self._stop = True
        self._thread.join(5)
        self.sock.close()


# ---------------------------------------------------------------------------
# the native journal protocol

FIELD_NAME = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")


def parse_native(data):
    """Fields of one native journal record, as a list of (name, bytes).

    Each field is "NAME=value\\n", or, for values that may hold a newline,
    "NAME\\n" + 64-bit little-endian length + value + "\\n".
    """
    fields = []
    i, n = 0, len(data)
    while i < n:
        nl = data.find(b"\n", i)
        if nl < 0:
            raise ValueError(f"field not ended by a newline at {i}: {data[i:]!r}")
        line = data[i:nl]
        eq = line.find(b"=")
        if eq >= 0:
            fields.append((line[:eq].decode("ascii", "replace"), line[eq + 1:]))
            i = nl + 1
            continue
        if nl + 9 > n:
            raise ValueError(f"binary field {line!r} without its length")
        size = struct.unpack_from("<Q", data, nl + 1)[0]
        start = nl + 9
        value = data[start:start + size]
        if len(value) != size or data[start + size:start + size + 1] != b"\n":
            raise ValueError(f"binary field {line!r} of bad length {size}")
        fields.append((line.decode("ascii", "replace"), value))
        i = start + size + 1
    return fields


class Record:
    """One journal record as sent by a client."""

    def __init__(self, pid, fields):
        self.pid = pid
        self.fields = fields
        self.names = [k for k, _ in fields]
        self.f = {k: v.decode("utf-8", "replace") for k, v in fields}

    def get(self, name, default=None):
        return self.f.get(name, default)

    def __repr__(self):
        return f"<pid {self.pid}: {self.f!r}>"


def journal_stream_env(path):
    """An environment whose stderr counts as the journal's stream: path
    (made empty) is the file the daemon's stderr must go to; JOURNAL_STREAM
    names its device and inode, as systemd sets it. No NOTIFY_SOCKET."""
    path.touch()
    st = os.stat(path)
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    env.pop("NOTIFY_SOCKET", None)
    return env


class JournalCapture(_Collector):
    """Stands in for journald's native socket.

    It binds DIR/socket; wrap(argv) runs argv in a private mount namespace
    where DIR is mounted on /run/systemd/journal (over a fresh tmpfs on
    /run, so nothing of the host's /run is touched or seen), which is where
    sd_journal_send() sends its datagrams. Records that come as a memfd
    (SCM_RIGHTS, for large ones) are read too.
    """

    SCRIPT = ('d=$1; shift; '
              'mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run && '
              'mkdir -p /run/systemd/journal && '
              'mount --bind "$d" /run/systemd/journal && exec "$@"')

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records = []
        self._listen(self.dir / "socket", rcvbuf=8 << 20)
        os.chmod(self.dir / "socket", 0o666)

    def wrap(self, argv):
        return ["unshare", "--mount", "--propagation", "private",
                "sh", "-c", self.SCRIPT, "sh", str(self.dir), *map(str, argv)]

    def _run(self):
        anc_size = (socket.CMSG_SPACE(struct.calcsize("iII"))
                    + socket.CMSG_SPACE(16 * 4))
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(1 << 20, anc_size)
            except socket.timeout:
                continue
            except OSError:
                break
            pid, fds = None, []
            for level, kind, cdata in anc:
                if level != socket.SOL_SOCKET:
                    continue
                if kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
                elif kind == socket.SCM_RIGHTS:
                    fds += list(struct.unpack(f"{len(cdata) // 4}i",
                                              cdata[:len(cdata) // 4 * 4]))
            try:
                for fd in fds:  # a sealed memfd holding the whole record
                    size = os.fstat(fd).st_size
                    data = os.pread(fd, size, 0)
                    os.close(fd)
                rec = Record(pid, parse_native(data))
            except Exception as e:
                self.errors.append(f"{e!r} in {data[:200]!r}")
                continue
            with self._cond:
                self.records.append(rec)
                self._cond.notify_all()

    def _items(self):
        return self.records

    def close(self):
        self._stop = True
        self._thread.join(5)
        self.sock.close()


# ---------------------------------------------------------------------------
# a slow way to the broker


class DelayProxy:
    """Relays 127.0.0.1:port to the broker, each connection after `delay` s."""

    def __init__(self, target_port, delay):
        self.target = ("127.0.0.1", target_port)
        self.delay = delay
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self._stop = False
        self._socks = []
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
            self._socks.append(c)
            t = threading.Thread(target=self._relay, args=(c,), daemon=True)
            self._threads.append(t)
            t.start()

    def _relay(self, c):
        deadline = time.monotonic() + self.delay
        while not self._stop and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            u = socket.create_connection(self.target, timeout=5)
        except OSError:
            c.close()
            return
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

    def close(self):
        self._stop = True
        self.srv.close()
        for t in self._threads:
            t.join(5)
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# the package's users, without touching the host's accounts

SYSUSERS = Path(__file__).resolve().parents[2] / "systemd" / "sysusers.d" / "warren.conf"

WITH_USERS_SCRIPT = (
    's=$1 u=$2; shift 2; '
    'mkdir -p "$s/upper" "$s/work" && '
    'mount -t overlay -o "lowerdir=/etc,upperdir=$s/upper,workdir=$s/work" overlay /etc && '
    'systemd-sysusers "$u" >/dev/null 2>&1 && exec "$@"')


def with_package_users(argv, scratch):
    """argv, to run in a mount namespace of its own whose /etc is the
    host's under an overlay (in `scratch`, a new directory) holding the
    users of systemd/sysusers.d/warren.conf, as the package makes them."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            WITH_USERS_SCRIPT, "sh", str(scratch), str(SYSUSERS),
            *map(str, argv)]


# ---------------------------------------------------------------------------
# a real systemd in namespaces

# Run by PID 1 of the new namespaces before it becomes systemd. $1 is the
# test's directory, mounted on /run/warren-test; $2, when not empty, a
# directory (the build, when under /tmp: the fresh /tmp, and a service's
# PrivateTmp=, would hide it) mounted on /run/warren-build. Every mount
# is made in the new mount namespace, whose propagation is private: the
# host's mount table never changes.
BOOT_SCRIPT = r"""
set -eu
T=$1 KEEP=$2
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
# A writable /etc and /var/lib that end with the namespace: the host's,
# under overlays whose changes (systemd-sysusers' users, a unit's
# StateDirectory=) live in this /run.
for d in /etc /var/lib; do
    o=/run/.overlay$d
    mkdir -p "$o/upper" "$o/work"
    mount -t overlay -o "lowerdir=$d,upperdir=$o/upper,workdir=$o/work" overlay "$d"
done
mkdir /run/warren-test
mount --bind "$T" /run/warren-test
if [ -n "$KEEP" ]; then
    mkdir /run/warren-build
    mount --bind "$KEEP" /run/warren-build
fi
# A /dev of its own: the few nodes services need, a private devpts.
mkdir /run/.hostdev
mount --bind /dev /run/.hostdev
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
for n in null zero full random urandom tty; do
    : >/dev/$n
    mount --bind /run/.hostdev/$n /dev/$n
done
umount /run/.hostdev
rmdir /run/.hostdev
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
# Fresh /tmp and /var/tmp: systemd-tmpfiles and PrivateTmp= work in there.
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
# The kernel's knobs read-only; cgroup2 rooted at the cgroup namespace.
mount --bind /sys /sys
mount -o remount,bind,ro,nosuid,nodev,noexec /sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
    mount -o remount,bind,ro /proc/sysrq-trigger
fi
# journald keeps its journal in /run, forwards nothing.
mkdir -p /run/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\nForwardToSyslog=no\nForwardToWall=no\nForwardToKMsg=no\nForwardToConsole=no\nReadKMsg=no\n' \
    >/run/systemd/journald.conf.d/warren-test.conf
# The rest of the host's file system read-only.
mount -o remount,bind,ro /
exec env -i container=warren-test SYSTEMD_UNIT_PATH=/run/warren-test/units \
    /lib/systemd/systemd --system --unit=warren-test.target \
    --show-status=no --log-target=journal --log-level=info
"""

# The only units this systemd knows (SYSTEMD_UNIT_PATH): no host unit, so
# nothing of sysinit.target (tmpfiles, udev, ...) ever runs.
STUB_TARGETS = ["sysinit", "basic", "shutdown", "network", "network-online",
                "sockets", "paths", "timers", "slices", "local-fs",
                "multi-user"]

UNITS = {
    "warren-test.target": """
[Unit]
Description=warren test boot
DefaultDependencies=no
Wants=systemd-journald.socket systemd-journald.service
""",
    "systemd-journald.socket": """
[Unit]
Description=Journal Socket
DefaultDependencies=no
[Socket]
ListenDatagram=/run/systemd/journal/socket
ListenStream=/run/systemd/journal/stdout
PassCredentials=yes
PassSecurity=yes
ReceiveBuffer=8M
Service=systemd-journald.service
SocketMode=0666
""",
    "systemd-journald.service": """
[Unit]
Description=Journal Service
DefaultDependencies=no
Requires=systemd-journald.socket
After=systemd-journald.socket
[Service]
Type=notify
ExecStart=/lib/systemd/systemd-journald
Sockets=systemd-journald.socket
Restart=always
RestartSec=0
RuntimeDirectory=systemd/journal
RuntimeDirectoryPreserve=yes
StandardOutput=null
FileDescriptorStoreMax=4224
""",
}

SYSTEMD = "/lib/systemd/systemd"
ENTER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0", "TERM": "dumb"}


def _cgroup2_base():
    """(directory of our own cgroup in the cgroup2 tree, or None, why not)."""
    mount = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if parts[sep + 1] == "cgroup2":
                if parts[3] != "/":
                    return None, f"cgroup2 is mounted from {parts[3]}, not its root"
                mount = parts[4]
                break
    if mount is None:
        return None, "no cgroup2 file system is mounted (systemd needs one)"
    own = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                own = line[3:].strip()
    if own is None:
        return None, "this process is in no cgroup2 cgroup"
    base = Path(mount + own.rstrip("/"))
    if not base.is_dir() or not os.access(base, os.W_OK):
        return None, f"cannot create cgroups under {base}"
    return base, None


def namespace_problem():
    """Why a systemd cannot be booted here, or None."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root"
    for tool in ("unshare", "nsenter", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is not installed"
    if not os.access(SYSTEMD, os.X_OK):
        return f"{SYSTEMD} is not installed (package systemd)"
    _, why = _cgroup2_base()
    if why is not None:
        return why
    # What boot() does first, in namespaces that die at once.
    probe = ("mount -t tmpfs tmpfs /run && mount --bind /sys /sys && "
             "mount -t cgroup2 cgroup2 /sys/fs/cgroup")
    try:
        r = subprocess.run(["unshare", "--pid", "--fork", "--kill-child",
                            "--mount", "--propagation", "private",
                            "--mount-proc", "--uts", "--ipc", "--cgroup",
                            "sh", "-c", probe],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    if r.returncode != 0:
        return f"private namespaces are not allowed here: {r.stderr.strip()}"
    return None


def _mount_points():
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)


class Machine:
    """systemd as PID 1 of private namespaces, with the units we give it.

    `directory` (made world-readable) is mounted at /run/warren-test
    inside; its `units` subdirectory is the only unit path. `keep`, a
    directory, is mounted at /run/warren-build.
    """

    INSIDE = "/run/warren-test"
    serial = 0

    def __init__(self, directory, keep=None):
        self.dir = Path(directory)
        self.dir.chmod(0o755)
        self.keep = keep or ""
        self.units = self.dir / "units"
        self.units.mkdir(exist_ok=True)
        for t in STUB_TARGETS:
            (self.units / f"{t}.target").write_text(
                f"[Unit]\nDescription=stub {t}\nDefaultDependencies=no\n")
        for name, text in UNITS.items():
            (self.units / name).write_text(text.lstrip())
        (self.dir / "boot.sh").write_text(BOOT_SCRIPT.lstrip())
        self.proc = None
        self.pid1 = None
        self.pidns = None
        self.cgroup = None
        self.mounts_before = _mount_points()

    def inside(self, host_path):
        """The path inside of a file under `directory`."""
        return f"{self.INSIDE}/{Path(host_path).relative_to(self.dir)}"

    def boot(self, timeout=30):
        base, why = _cgroup2_base()
        if base is None:
            raise RuntimeError(why)
        for stale in base.glob("warren-test-*-*"):
            # left by a run that was killed (its processes are gone with it)
            m = re.fullmatch(r"warren-test-(\d+)-\d+", stale.name)
            if m and not pid_alive(int(m.group(1))):
                _rmdir_tree(stale)
        Machine.serial += 1
        self.cgroup = base / f"warren-test-{os.getpid()}-{Machine.serial}"
        self.cgroup.mkdir()
        self.log = open(self.dir / "boot.log", "wb")
        # setpriv: if pytest dies, unshare gets SIGKILL, and --kill-child
        # passes that on to PID 1, which takes the namespace with it.
        argv = ["setpriv", "--pdeathsig", "KILL",
                "sh", "-c", 'echo $$ >"$0/cgroup.procs" && exec "$@"',
                str(self.cgroup),
                "unshare", "--pid", "--fork", "--kill-child", "--mount",
                "--propagation", "private", "--mount-proc", "--uts", "--ipc",
                "--cgroup",
                "sh", str(self.dir / "boot.sh"), str(self.dir), self.keep]
        env = dict(ENTER_ENV)
        if "WARREN_TEST_RUN" in os.environ:  # scripts/test finds it by this
            env["WARREN_TEST_RUN"] = os.environ["WARREN_TEST_RUN"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, env=env)

        def pid1():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the namespace ended at once ({self.proc.returncode}): "
                    f"{(self.dir / 'boot.log').read_text()}")
            for kid in _children(self.proc.pid):
                try:
                    if Path(f"/proc/{kid}/comm").read_text().strip() == "systemd":
                        return kid
                except OSError:
                    pass
            return None

        self.pid1 = wait_for(pid1, timeout, message="systemd to start")
        self.pidns = os.readlink(f"/proc/{self.pid1}/ns/pid")

        def booted():
            r = self.run("systemctl", "is-system-running", check=False)
            return r.stdout.strip() in ("running", "degraded")

        wait_for(booted, timeout, interval=0.1, message="systemd to boot")
        return self

    def run(self, *argv, check=True, timeout=60, input=None):
        """Run argv inside every namespace of the machine."""
        cmd = ["nsenter", "-t", str(self.pid1), "-p", "-m", "-u", "-i", "-C",
               "--", *argv]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True,
                           timeout=timeout, env=dict(ENTER_ENV))
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n"
                                 f"{r.stdout}{r.stderr}")
        return r

    def systemctl(self, *args, check=True, timeout=60):
        return self.run("systemctl", "--no-pager", *args, check=check,
                        timeout=timeout)

    def show(self, unit, *props):
        out = self.systemctl("show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(l.split("=", 1) for l in out.splitlines() if "=" in l)

    def journal(self, *args):
        """journalctl -o json ARGS, as dicts."""
        out = self.run("journalctl", "--no-pager", "-o", "json", *args).stdout
        return [json.loads(l) for l in out.splitlines() if l.strip()]

    def kill(self, sig, pid_inside):
        self.run("kill", f"-{sig}", str(pid_inside))

    def shutdown(self):
        """Kill PID 1, and check that nothing of the machine is left."""
        problems = []
        if self.pid1 is not None and pid_alive(self.pid1):
            os.kill(self.pid1, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()   # --kill-child: its PID 1 goes too
                self.proc.wait(10)
                problems.append("unshare did not end with its namespace")
            self.log.close()
        if self.pidns is not None:
            def none_left():
                return not _in_pidns(self.pidns)
            try:
                wait_for(none_left, 10, message="the namespace's processes to go")
            except AssertionError:
                left = _in_pidns(self.pidns)
                for p in left:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                problems.append(f"processes left in the namespace: {left}")
        if self.cgroup is not None and self.cgroup.exists():
            try:
                wait_for(lambda: _rmdir_tree(self.cgroup), 10,
                         message=f"removing {self.cgroup}")
            except AssertionError:
                problems.append(f"cgroup {self.cgroup} could not be removed")
        after = _mount_points()
        ours = [m for m in set(after) - set(self.mounts_before)
                if m.startswith(("/run", "/tmp", "/var/tmp", "/dev", "/sys",
                                 "/proc", str(self.dir)))]
        if ours:
            problems.append(f"mounts left in the host's namespace: {ours}")
        return problems


def _children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def _in_pidns(ns):
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns and pid_alive(int(entry)):
                    left.append(int(entry))
            except OSError:
                pass
    return left


def _rmdir_tree(top):
    """rmdir top and every cgroup under it; True when it is gone."""
    for d in sorted((p for p in top.rglob("*") if p.is_dir()),
                    key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        top.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
