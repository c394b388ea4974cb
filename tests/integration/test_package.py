"""The Debian package (debian/, scripts/package): build, lintian, install,
upgrade, remove and purge on this machine.

The package is built twice, each time by scripts/package in a copy of the
tree (never in the tree): as it is, and with one more changelog entry and
a changed example configuration, the upgrade. The tests below run in file
order and share the machine's state: install, upgrade keeping an edited
conffile, remove, purge. A module finalizer purges the package whatever
happened, and the last test checks that nothing but what policy keeps was
left at each step, and nothing at all after the purge.

There is no systemd as PID 1 here, so the maintainer scripts skip their
systemctl calls on the real install; what they would do under systemd is
checked by running them with stand-ins for systemctl, deb-systemd-invoke,
deb-systemd-helper and systemd-sysusers, in a mount namespace where
/run/systemd/system exists. Once installed, the unit runs under a real
systemd booted in namespaces (sd_helpers.Machine, whose /etc and /var/lib
are overlays): warrend as warren, handlers as warren-handler, and the
upgrade from the dynamic user of 0.1.0 through the package's own postinst.

The package creates the system users warren and warren-handler, and purge
leaves them (README.Debian); the module's finalizer deletes them again
when they were not there before, so that the machine ends as it began.
"""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, children_of, conf_list, conf_string, queue_name_for, wait_for
from sd_helpers import Machine, namespace_problem

PKG = "warren"
CONF = Path("/etc/warren/warrend.conf")
APT = ["apt-get", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300"]
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
# A line only the upgrade's package has in its example configuration.
USERS = ("warren", "warren-handler")
SYSUSERS = Path("/usr/lib/sysusers.d/warren.conf")
UPGRADE_MARK = "# shipped by the upgrade test's package"
OPERATOR_MARK = "# edited by the operator"
CONFD = Path("/etc/warren/conf.d")
COMPLETIONS = Path("/usr/share/bash-completion/completions")
DOC = Path("/usr/share/doc/warren")

# Whatever the package could leave behind, anywhere.
TRACES = [
    "/etc/warren", "/etc/warren/*", "/etc/warren/conf.d/*",
    "/etc/systemd/system/warrend.service",
    "/etc/systemd/system/*/warrend.service",
    "/lib/systemd/system/warrend.service",
    "/usr/lib/systemd/system/warrend.service",
    "/var/lib/systemd/deb-systemd-helper-enabled/**/warrend.service*",
    "/var/lib/systemd/deb-systemd-helper-masked/warrend.service",
    "/usr/sbin/warrend", "/usr/bin/warren-submit", "/usr/bin/warrenctl",
    str(SYSUSERS),
    "/usr/share/doc/warren", "/usr/share/man/man*/warren*",
    "/usr/share/bash-completion/completions/warren*",
    "/var/lib/dpkg/info/warren.*",
]


def run(argv, timeout=600, check=True, env=None, **kw):
    r = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout,
                       env=env, **kw)
    if check:
        assert r.returncode == 0, \
            f"{' '.join(map(str, argv))} exited {r.returncode}:\n{r.stdout[-6000:]}{r.stderr[-6000:]}"
    return r


def traces():
    found = set()
    for pattern in TRACES:
        found.update(glob.glob(pattern, recursive=True))
    return found


def status():
    """dpkg's status of the package ("installed", "config-files", ...),
    "" when dpkg does not know it."""
    r = run(["dpkg-query", "-W", "-f=${db:Status-Status}", PKG], check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


def installed_version():
    return run(["dpkg-query", "-W", "-f=${Version}", PKG]).stdout.strip()


def user_exists(name):
    return run(["getent", "passwd", name], check=False).returncode == 0


def group_exists(name):
    return run(["getent", "group", name], check=False).returncode == 0


def passwd_entry(name):
    """getent passwd NAME, split: [name, x, uid, gid, gecos, home, shell]."""
    return run(["getent", "passwd", name]).stdout.strip().split(":")


def copy_tree(dst):
    """The tree's files as scripts/package copies them: those git knows
    (tracked, or new and not ignored), or all of it outside git."""
    dst = Path(dst)
    git = run(["git", "-C", REPO, "ls-files", "-co", "--exclude-standard", "-z"],
              check=False)
    if git.returncode == 0 and (REPO / ".git").exists():
        for name in git.stdout.split("\0"):
            src = REPO / name
            if name and (src.exists() or src.is_symlink()):
                (dst / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst / name, follow_symlinks=False)
    else:
        shutil.copytree(REPO, dst, symlinks=True,
                        ignore=shutil.ignore_patterns("*.deb", "__pycache__"))
    return dst


class Debs:
    def __init__(self, version, v1, upgrade_version, v2):
        self.version, self.v1 = version, v1
        self.upgrade_version, self.v2 = upgrade_version, v2


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    for tool in ("dpkg-buildpackage", "dh", "lintian"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/deps installs it)")
    top = tmp_path_factory.mktemp("package")
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    version = run(["dpkg-parsechangelog", "-l", REPO / "debian/changelog",
                   "-S", "Version"]).stdout.strip()

    out = run(["bash", REPO / "scripts/package", "-o", top / "v1", "--no-lintian"],
              timeout=900).stdout
    v1 = top / "v1" / f"{PKG}_{version}_{arch}.deb"
    assert v1.exists() and str(v1) in out, (out, sorted(os.listdir(top / "v1")))

    # The upgrade: one more changelog entry and a changed example, so that
    # dpkg has a conffile changed on both sides to ask about.
    src = copy_tree(top / "src2")
    upgrade_version = f"{version}+upgradetest1"
    changelog = src / "debian/changelog"
    changelog.write_text(
        f"{PKG} ({upgrade_version}) unstable; urgency=medium\n\n"
        "  * Upgrade test build.\n\n"
        " -- warren tests <tests@localhost.invalid>  "
        f"{time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\n\n"
        + changelog.read_text())
    example = src / "etc/warrend.conf"
    example.write_text(example.read_text() + UPGRADE_MARK + "\n")
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck")
    run(["bash", src / "scripts/package", "-o", top / "v2", "--no-lintian"],
        timeout=900, env=env)
    v2 = top / "v2" / f"{PKG}_{upgrade_version}_{arch}.deb"
    assert v2.exists(), sorted(os.listdir(top / "v2"))
    return Debs(version, v1, upgrade_version, v2)


class System:
    """What the machine held before the package came, and the last step."""

    def __init__(self):
        self.traces_before = traces()
        self.users_before = {u: user_exists(u) for u in USERS}
        self.step = "none"


@pytest.fixture(scope="module")
def system(debs):
    if status() not in ("", "not-installed"):
        pytest.skip(f"{PKG} is already installed here ({status()}); "
                    "the test would replace it")
    s = System()
    s.deb = debs.v1
    try:
        yield s
    finally:
        if status() not in ("", "not-installed"):
            subprocess.run([*APT, "purge", PKG], env=APT_ENV,
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=600)
        # purge leaves the package's users (policy); the test does not
        for u in USERS:
            if not s.users_before[u] and user_exists(u):
                subprocess.run(["userdel", u], capture_output=True, timeout=60)
            if not s.users_before[u] and group_exists(u):
                subprocess.run(["groupdel", u], capture_output=True, timeout=60)


def deb_field(deb, field):
    return run(["dpkg-deb", "-f", deb, field]).stdout.strip()


# ---------------------------------------------------------------------------
# the .deb itself


def test_package_metadata_and_contents(debs):
    deb = debs.v1
    assert deb_field(deb, "Package") == PKG
    assert deb_field(deb, "Version") == debs.version
    # the upstream version (configure.ac) and the package's agree
    ac = (REPO / "configure.ac").read_text()
    upstream = re.search(r"AC_INIT\(\[warren\], \[([^]]+)\]", ac).group(1)
    assert debs.version.split("-")[0] == upstream

    depends = deb_field(deb, "Depends")
    for lib in ("librabbitmq4", "libconfuse2", "libsystemd0", "libc6"):
        assert lib in depends, depends
    assert "rabbitmq-server" not in depends
    # dh_installsysusers: what runs the postinst's systemd-sysusers
    assert "systemd | systemd-standalone-sysusers | systemd-sysusers" in depends, depends
    assert "rabbitmq-server" in deb_field(deb, "Suggests")

    info = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    assert info == [str(CONF)]

    listing = run(["dpkg-deb", "-c", deb]).stdout
    files = {}
    for line in listing.splitlines():
        mode, _, _, _, _, name = line.split(None, 5)
        files[name.split(" -> ")[0].lstrip(".")] = mode
    unitdir = run(["pkg-config", "--variable=systemdsystemunitdir",
                   "systemd"]).stdout.strip() or "/lib/systemd/system"
    want = {
        "/usr/sbin/warrend": "-rwxr-xr-x",
        "/usr/bin/warren-submit": "-rwxr-xr-x",
        "/usr/bin/warrenctl": "-rwxr-xr-x",
        str(CONF): "-rw-r--r--",
        f"{unitdir}/warrend.service": "-rw-r--r--",
        str(SYSUSERS): "-rw-r--r--",
        "/usr/share/man/man8/warrend.8.gz": "-rw-r--r--",
        "/usr/share/man/man5/warrend.conf.5.gz": "-rw-r--r--",
        "/usr/share/man/man1/warren-submit.1.gz": "-rw-r--r--",
        "/usr/share/man/man8/warrenctl.8.gz": "-rw-r--r--",
        "/usr/share/doc/warren/copyright": "-rw-r--r--",
        "/usr/share/doc/warren/changelog.gz": "-rw-r--r--",
        # the operator's kit: drop-in directory, completion, rules, dashboard
        "/etc/warren/conf.d/": "drwxr-xr-x",
        "/usr/share/bash-completion/completions/warrenctl": "-rw-r--r--",
        "/usr/share/bash-completion/completions/warrend": "lrwxrwxrwx",
        "/usr/share/bash-completion/completions/warren-submit": "lrwxrwxrwx",
        "/usr/share/doc/warren/warren.rules.yml": "-rw-r--r--",
        "/usr/share/doc/warren/warren-dashboard.json": "-rw-r--r--",
    }
    for name, mode in want.items():
        assert files.get(name) == mode, (name, files.get(name), sorted(files))
    # every man page compressed, and one for each program
    pages = [f for f in files if f.startswith("/usr/share/man/") and files[f][0] == "-"]
    assert pages and all(p.endswith(".gz") for p in pages), pages
    for prog in ("warrend", "warren-submit", "warrenctl"):
        assert any(re.search(rf"/{re.escape(prog)}\.[18]\.gz$", p) for p in pages), prog



def test_lintian_prints_nothing(debs):
    # lintian warns when run as root; as nobody it needs a readable copy.
    with tempfile.TemporaryDirectory(prefix="warren-lintian.") as d:
        os.chmod(d, 0o755)
        deb = Path(d) / debs.v1.name
        shutil.copy(debs.v1, deb)
        deb.chmod(0o644)
        argv = ["lintian", str(deb)]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "nobody", "--", "env", f"HOME={d}", *argv]
        r = run(argv, check=False, timeout=600)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", \
        f"lintian said:\n{r.stdout}{r.stderr}"


# ---------------------------------------------------------------------------
# the maintainer scripts, as they would run under systemd

FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >>"$FAKE_LOG"
case "$(basename "$0") $*" in
"$FAKE_FAIL") exit 1 ;;
"systemctl show -p MainPID --value warrend.service") echo "${FAKE_MAINPID:-0}" ;;
"systemd-sysusers "*) echo "  with SYSTEMD_BYPASS_USERDB=$SYSTEMD_BYPASS_USERDB" >>"$FAKE_LOG" ;;
esac
exit 0
"""


@pytest.fixture(scope="module")
def scripts(debs, tmp_path_factory):
    """run(script, *args, fail=None) -> (CompletedProcess, calls): the
    package's maintainer script run with stand-ins for the systemd tools,
    in a mount namespace where /run/systemd/system exists."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    d = tmp_path_factory.mktemp("scripts")
    run(["dpkg-deb", "-e", debs.v1, d / "control"])
    fake = d / "bin"
    fake.mkdir()
    for tool in ("systemctl", "deb-systemd-invoke", "deb-systemd-helper",
                 "systemd-sysusers"):
        (fake / tool).write_text(FAKE_TOOL)
        (fake / tool).chmod(0o755)
    probe = run(["unshare", "-m", "--propagation", "private", "true"], check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace: {probe.stderr}")

    def run_script(script, *args, fail="", mainpid=0):
        path = d / "control" / script
        if not path.exists():
            return None, []
        log = d / "calls.log"
        log.write_text("")
        env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}",
                   FAKE_LOG=str(log), FAKE_FAIL=fail, FAKE_MAINPID=str(mainpid))
        env.pop("DPKG_ROOT", None)
        r = run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                 "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system"
                 ' && exec "$@"', "sh", path, *args], check=False, env=env)
        return r, log.read_text().splitlines()

    return run_script


def test_first_install_enables_and_starts(scripts):
    r, calls = scripts("postinst", "configure")
    assert r.returncode == 0, r.stderr
    # the users first, past a dynamic user of the same name; then
    # dh_installsysusers' own call (which finds them)
    sysusers = [i for i, c in enumerate(calls) if c.startswith("systemd-sysusers")]
    assert [calls[i] for i in sysusers] == ["systemd-sysusers warren.conf"] * 2, calls
    assert calls[sysusers[0] + 1] == \
        "  with SYSTEMD_BYPASS_USERDB=io.systemd.DynamicUser", calls
    assert sysusers[0] == 0 and sysusers[1] < calls.index(
        "deb-systemd-invoke start warrend.service"), calls
    assert "deb-systemd-helper enable warrend.service" in calls, calls
    assert "systemctl --system daemon-reload" in calls, calls
    assert "deb-systemd-invoke start warrend.service" in calls, calls
    assert not [c for c in calls if re.search(r"\b(stop|restart|reload)\b", c)
                and "daemon-reload" not in c], calls


def test_upgrade_reloads_and_never_stops_or_restarts(scripts):
    # nothing stops the service before the new files are unpacked ...
    for script, args in (("preinst", ("upgrade", "0.0.9")),
                         ("prerm", ("upgrade", "0.1.1"))):
        r, calls = scripts(script, *args)
        if r is not None:
            assert r.returncode == 0, r.stderr
            assert not [c for c in calls if "stop" in c], (script, calls)
    # ... and the postinst reloads it (a no-op start first: running units
    # stay as they are, an enabled unit that is down comes up)
    r, calls = scripts("postinst", "configure", "0.0.9")
    assert r.returncode == 0, r.stderr
    invoked = [c for c in calls if c.startswith("deb-systemd-invoke")]
    assert invoked == ["deb-systemd-invoke start warrend.service",
                       "deb-systemd-invoke try-reload-or-restart warrend.service"], calls
    # (the unit has ExecReload=, so try-reload-or-restart is a reload)
    # a failed reload (the new warrend -t rejects the file) is reported and
    # does not fail the upgrade
    r, calls = scripts("postinst", "configure", "0.0.9",
                       fail="deb-systemd-invoke try-reload-or-restart warrend.service")
    assert r.returncode == 0, r.stderr
    assert "reloading warrend.service failed" in r.stderr, r.stderr


def daemon_stand_in(user):
    """A process running as user, to stand for a running warrend (once
    setpriv has switched and exec'd sleep)."""
    uid = run(["id", "-u", user]).stdout.strip()
    gid = run(["id", "-g", user]).stdout.strip()
    proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={gid}",
                             "--clear-groups", "sleep", "120"],
                            stdin=subprocess.DEVNULL)

    def switched():
        with open(f"/proc/{proc.pid}/status") as f:
            return re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1) == uid and \
                os.readlink(f"/proc/{proc.pid}/exe").endswith("/sleep")
    wait_for(switched, 10, interval=0.05, message=f"a process as {user}")
    return proc


def test_upgrade_from_the_dynamic_user_restarts(scripts):
    """A warrend running as another uid than warren's (0.1.0's dynamic
    user) cannot be reloaded by the new unit: the postinst restarts it,
    says so, and never reloads."""
    proc = daemon_stand_in("nobody")
    try:
        r, calls = scripts("postinst", "configure", "0.1.0", mainpid=proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 0, r.stderr
    invoked = [c for c in calls if c.startswith("deb-systemd-invoke")]
    assert invoked == ["deb-systemd-invoke start warrend.service",
                       "deb-systemd-invoke try-restart warrend.service"], calls
    uid = int(run(["id", "-u", "nobody"]).stdout)
    assert f'warrend runs as uid {uid}, not as the system user "warren": ' \
        "restarting it" in " ".join(r.stderr.split()), r.stderr
    # a failed restart is said, and does not fail the upgrade
    proc = daemon_stand_in("nobody")
    try:
        r, calls = scripts("postinst", "configure", "0.1.0", mainpid=proc.pid,
                           fail="deb-systemd-invoke try-restart warrend.service")
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 0 and "restarting warrend.service failed" in r.stderr, r.stderr


def test_remove_stops_the_service(scripts):
    r, calls = scripts("prerm", "remove")
    assert r.returncode == 0, r.stderr
    assert "deb-systemd-invoke stop warrend.service" in calls, calls


# ---------------------------------------------------------------------------
# this machine: install, upgrade, remove, purge


def apt(*args, check=True):
    return run([*APT, *args], env=APT_ENV, timeout=600, check=check)


def unit_path():
    units = [f for f in run(["dpkg", "-L", PKG]).stdout.splitlines()
             if f.endswith("/system/warrend.service")]
    assert len(units) == 1, units
    return Path(units[0])


def test_install(debs, system):
    out = apt("install", debs.v1).stdout
    system.step = "installed"
    assert status() == "installed", out
    assert installed_version() == debs.version
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", PKG]).stdout
    assert re.search(rf"^ {re.escape(str(CONF))} [0-9a-f]{{32}}$", conffiles, re.M), conffiles

    for f in ("/usr/sbin/warrend", "/usr/bin/warren-submit", "/usr/bin/warrenctl"):
        assert os.access(f, os.X_OK), f
    assert CONF.read_bytes() == (REPO / "etc/warrend.conf").read_bytes()
    r = run(["/usr/sbin/warrend", "-V"])
    assert r.stdout.startswith("warrend "), r.stdout
    r = run(["man", "-w", "warrend"], check=False)
    if shutil.which("man"):
        assert r.stdout.strip() == "/usr/share/man/man8/warrend.8.gz", r.stdout + r.stderr

    # the unit: installed, valid, names the installed files, and enabled
    unit = unit_path()
    text = unit.read_text()
    assert "ExecStart=/usr/sbin/warrend -c /etc/warren/warrend.conf" in text.splitlines()
    r = run(["systemd-analyze", "verify", unit], check=False)
    mine = [l for l in (r.stdout + r.stderr).splitlines() if "warrend" in l]
    assert r.returncode == 0 and not mine, r.stdout + r.stderr
    wants = Path("/etc/systemd/system/multi-user.target.wants/warrend.service")
    assert wants.is_symlink() and os.readlink(wants) == str(unit), \
        "dh_installsystemd should have enabled the unit"
    copyright_text = Path("/usr/share/doc/warren/copyright").read_text()
    assert copyright_text.startswith(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    # the service runs as the system user warren, which the package made
    # with warren-handler: system uids, no login, no home, each in a
    # group of its own only (warren-handler not in group warren)
    lines = text.splitlines()
    assert "User=warren" in lines and "DynamicUser=yes" not in lines
    assert SYSUSERS.read_bytes() == \
        (REPO / "systemd" / "sysusers.d" / "warren.conf").read_bytes()
    for u in USERS:
        if system.users_before[u]:
            print(f"note: user {u} existed before the install")
        name, _, uid, gid, _, home, shell = passwd_entry(u)
        assert 0 < int(uid) < 1000 and home == "/nonexistent", (u, uid, home)
        assert shell in ("/usr/sbin/nologin", "/sbin/nologin"), (u, shell)
        group = run(["getent", "group", u]).stdout.strip().split(":")
        assert group[2] == gid and group[3] == "", (u, group)
    assert run(["id", "-Gn", "warren-handler"]).stdout.split() == ["warren-handler"]
    # the configuration: warrend's group may read it, nobody else
    st = CONF.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == \
        (0, int(passwd_entry("warren")[3]), 0o640), (st.st_uid, st.st_gid, oct(st.st_mode))
    r = run(["setpriv", "--reuid=warren-handler", "--regid=warren-handler",
             "--init-groups", "cat", CONF], check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    run(["setpriv", "--reuid=warren", "--regid=warren", "--init-groups", "cat", CONF])
    check_operator_kit(copyright_text)


def check_operator_kit(copyright_text):
    """The license, the drop-in directory, the completions, the rules and
    the dashboard, as an operator finds them after the install."""
    # MIT (Expat) for every file, the full text as in LICENSE
    assert "License: Expat" in copyright_text and "MIT" in copyright_text
    assert re.search(r"^Files: \*\nCopyright: .+\nLicense: Expat$", copyright_text, re.M)
    license_text = (REPO / "LICENSE").read_text()
    body = license_text.split("Permission is hereby granted", 1)[1]
    flat = lambda t: " ".join(t.replace("\n .\n", "\n").split())
    assert flat(body) in flat(copyright_text.split("Permission is hereby granted", 1)[1])
    assert "no-license-declared" not in copyright_text
    assert CONFD.is_dir() and not CONFD.is_symlink()
    # the completion, found under each program's name, without bash-completion
    for prog in ("warrenctl", "warrend", "warren-submit"):
        r = run(["bash", "--norc", "-c",
                 f"source {COMPLETIONS / prog} && complete -p {prog}"])
        assert r.stdout.startswith("complete -F _warren") and prog in r.stdout, r.stdout
    # the rules load (promtool comes with prometheus) and the dashboard parses
    rules = DOC / "warren.rules.yml"
    assert rules.read_bytes() == (REPO / "monitoring/warren.rules.yml").read_bytes()
    if shutil.which("promtool"):
        run(["promtool", "check", "rules", rules])
    import json
    dash = json.loads((DOC / "warren-dashboard.json").read_text())
    assert dash["panels"] and dash["title"] == "warren"


def test_installed_example_is_valid_and_starts_no_workers(system):
    assert system.step == "installed"
    r = run(["/usr/sbin/warrend", "-t", "-c", CONF])
    assert r.stdout.strip() == "configuration OK", r.stdout + r.stderr

    # As systemd would start it (Type=notify, the unit's WatchdogSec=):
    # ready at once, no worker, no connection attempt, a clean stop.
    unit = unit_path().read_text()
    watchdog = int(re.search(r"^WatchdogSec=(\d+)s?$", unit, re.M).group(1))
    with tempfile.TemporaryDirectory(prefix="warren-notify.") as d:
        path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0.2)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": path,
               "WATCHDOG_USEC": str(watchdog * 1000000)}
        proc = subprocess.Popen(["/usr/sbin/warrend", "-c", str(CONF)], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        got = []
        try:
            def ready():
                assert proc.poll() is None, f"warrend exited {proc.returncode}"
                try:
                    got.append(sock.recv(4096).decode())
                except socket.timeout:
                    pass
                return any("READY=1" in g.split("\n") for g in got)

            wait_for(ready, 20, interval=0, message="READY=1 from the example")
            assert any(re.search(r"^STATUS=task_queue 0/0 consuming", g, re.M)
                       for g in got), got
            assert children_of(proc.pid) == [], "the example started workers"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            sock.close()
            log = proc.stdout.read().decode(errors="replace")
    assert "error" not in log, log


def test_installed_unit_exposure(system):
    """systemd-analyze security rates the installed unit 2.0 or better."""
    assert system.step == "installed"
    r = run(["systemd-analyze", "security", "--no-pager", "--offline=yes", unit_path()])
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert m and float(m.group(1)) <= 2.0, r.stdout[-3000:]
    print(f"\ninstalled warrend.service exposure: {m.group(1)}")


# ---------------------------------------------------------------------------
# the installed unit under a real systemd (in namespaces: the host's /etc
# and /var/lib are overlays in there, its accounts and files stay as they are)

MACHINE_HANDLER = """#!/bin/sh
echo "handling $WARREN_MESSAGE_ID as uid $(id -u) pid $$"
sleep "$(cat)"
"""


@pytest.fixture(scope="module")
def machine(system, broker, tmp_path_factory):
    why = namespace_problem()
    if why is not None:
        pytest.skip(f"cannot boot systemd in namespaces: {why}")
    assert system.step == "installed"
    m = Machine(tmp_path_factory.mktemp("systemd"))
    (m.units / "warrend.service").write_text(unit_path().read_text())
    (m.units / "warrend.service.d").mkdir()
    handler = m.dir / "handler.sh"
    handler.write_text(MACHINE_HANDLER)
    handler.chmod(0o755)
    run(["dpkg-deb", "-e", system.deb, m.dir / "control"])
    try:
        m.boot()
        # a policy-rc.d that forbids every action (as in containers, this
        # machine's) would make deb-systemd-invoke do nothing in there:
        # the machine allows them, in its own mount namespace
        m.run("sh", "-c", "[ ! -e /usr/sbin/policy-rc.d ] || "
                          "mount --bind /bin/true /usr/sbin/policy-rc.d")
        yield m
    finally:
        problems = m.shutdown()
        assert problems == [], problems


def machine_conf(m, broker, queue, user=None, workers=1, mode="0640", group="warren"):
    """/etc/warren/warrend.conf in the machine (its overlay)."""
    text = "\n".join([
        "broker {", f"    url = {conf_string(broker.url)}", "}",
        "shutdown_timeout = 5",
        f"queue {conf_string(queue)} {{", f"    workers = {workers}",
        f"    command = {conf_list([m.inside(m.dir / 'handler.sh')])}",
        "    timeout = 60",
        f"    user = {conf_string(user)}" if user else "", "}", ""])
    m.run("sh", "-c", 'cat >"$1" && chown "root:$2" "$1" && chmod "$3" "$1"',
          "sh", str(CONF), group, mode, input=text)


def machine_uid(m, user, *source):
    return int(m.run("getent", *source, "passwd", user).stdout.split(":")[2])


def proc_uids(m, pid):
    out = m.run("cat", f"/proc/{pid}/status").stdout
    return [int(x) for x in re.search(r"^Uid:\s+(.*)$", out, re.M).group(1).split()]


def running_handler(m, mid, timeout=20):
    """The machine's pid of the handler of message mid (its first line)."""
    def find():
        for line in m.run("journalctl", "--no-pager", "-o", "cat", "-u",
                          "warrend.service").stdout.splitlines():
            r = re.search(rf"{re.escape(mid)}: stdout: handling {re.escape(mid)} "
                          r"as uid \d+ pid (\d+)$", line)
            if r:
                return int(r.group(1))
        return None
    return wait_for(find, timeout, interval=0.2, message=f"the handler of {mid}")


def test_installed_unit_runs_warrend_as_warren_and_handlers_as_warren_handler(
        machine, broker, request):
    m = machine
    queue = queue_name_for(request.node.name)
    machine_conf(m, broker, queue, user="warren-handler")
    try:
        m.systemctl("start", "warrend.service")
        p = m.show("warrend.service", "MainPID", "OOMPolicy", "User")
        assert p["OOMPolicy"] == "continue" and p["User"] == "warren", p
        warren = machine_uid(m, "warren")
        assert warren == int(passwd_entry("warren")[2]), "not the host's user"
        assert proc_uids(m, p["MainPID"]) == [warren] * 4
        broker.publish(queue, "20", message_id="held")
        pid = running_handler(m, "held")
        assert proc_uids(m, pid) == [machine_uid(m, "warren-handler")] * 4
    finally:
        m.systemctl("stop", "warrend.service", check=False, timeout=120)
        broker.delete_queue(queue, queue + ".failed")


def test_upgrade_from_the_dynamic_user_under_systemd(machine, broker, request):
    """The 0.1.0 unit (DynamicUser=yes, no capabilities, PrivateUsers=yes)
    runs warrend, with a StateDirectory= of the operator's; the unit file
    becomes this package's and its postinst runs, as dpkg would: it makes
    the static users although NSS knows "warren" as the dynamic user,
    restarts warrend (a reload would fail: warren may not signal the
    dynamic uid), systemd moves the state directory back from
    /var/lib/private and gives it and the control socket to warren. A
    second upgrade then reloads."""
    m = machine
    queue = queue_name_for(request.node.name)
    dropins = m.units / "warrend.service.d"
    (dropins / "state.conf").write_text("[Service]\nStateDirectory=warren\n")
    (dropins / "old.conf").write_text(
        "[Service]\nDynamicUser=yes\nAmbientCapabilities=\n"
        "CapabilityBoundingSet=\nPrivateUsers=yes\n")
    # as before the package's users: none in /etc/passwd
    for u in USERS:
        m.run("userdel", u)
        m.run("groupdel", u, check=False)
    machine_conf(m, broker, queue, workers=0, mode="0644", group="root")
    postinst = ["sh", m.inside(m.dir / "control" / "postinst"), "configure"]
    try:
        m.systemctl("daemon-reload")
        m.systemctl("start", "warrend.service")
        old = m.show("warrend.service", "MainPID")["MainPID"]
        dynamic = proc_uids(m, old)[0]
        assert m.run("getent", "passwd", "warren").stdout.startswith(
            f"warren:x:{dynamic}:"), "NSS does not show the dynamic user"
        m.run("sh", "-c", f"echo data >/var/lib/warren/kept && "
                          f"chown {dynamic}:{dynamic} /var/lib/warren/kept")

        # dpkg unpacks the new unit; its postinst runs
        (dropins / "old.conf").unlink()
        r = m.run(*postinst, "0.1.0", check=False, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "restarting it" in r.stderr, r.stderr
        warren = machine_uid(m, "warren", "-s", "files")
        machine_uid(m, "warren-handler", "-s", "files")
        p = m.show("warrend.service", "MainPID", "ActiveState", "NRestarts")
        assert p["ActiveState"] == "active" and p["MainPID"] != old, p
        assert proc_uids(m, p["MainPID"]) == [warren] * 4
        st = m.run("stat", "-c", "%F %u %a", "/var/lib/warren", "/var/lib/warren/kept",
                   "/run/warren", "/run/warren/warrend.sock").stdout.splitlines()
        assert st == [f"directory {warren} 755", f"regular file {warren} 644",
                      f"directory {warren} 755", f"socket {warren} 660"], st
        assert m.run("cat", "/var/lib/warren/kept").stdout == "data\n"
        conf = m.run("stat", "-c", "%U:%G %a", CONF).stdout.strip()
        assert conf == "root:warren 640", conf

        # the next upgrade: same user, a reload, the same process
        r = m.run(*postinst, "0.1.0+1", check=False, timeout=180)
        assert r.returncode == 0 and "restarting" not in r.stderr, r.stderr
        q = m.show("warrend.service", "MainPID", "ActiveState")
        assert q == {"MainPID": p["MainPID"], "ActiveState": "active"}, q
        said = m.run("journalctl", "--no-pager", "-o", "cat", "-u",
                     "warrend.service").stdout
        assert "Reloaded warrend.service" in said, said[-3000:]
    finally:
        m.systemctl("stop", "warrend.service", check=False, timeout=120)
        for f in ("old.conf", "state.conf"):
            (dropins / f).unlink(missing_ok=True)
        m.systemctl("daemon-reload", check=False)


def test_postinst_reloads_a_daemon_running_as_warren(scripts, system):
    """The usual upgrade: warrend already runs as warren, so it is
    reloaded, not restarted."""
    assert system.step == "installed"
    proc = daemon_stand_in("warren")
    try:
        r, calls = scripts("postinst", "configure", "0.1.0+1", mainpid=proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 0, r.stderr
    invoked = [c for c in calls if c.startswith("deb-systemd-invoke")]
    assert invoked == ["deb-systemd-invoke start warrend.service",
                       "deb-systemd-invoke try-reload-or-restart warrend.service"], calls


def test_upgrade_keeps_the_edited_conffile(debs, system):
    assert system.step == "installed"
    # an operator's drop-in, read through the example's include
    dropin = CONFD / "50-operator.conf"
    dropin_text = 'queue "operator_queue" {\n\tworkers = 0\n\tcommand = {"/bin/cat"}\n}\n'
    dropin.write_text(dropin_text)
    r = run(["/usr/sbin/warrend", "-t", "-c", CONF])
    assert r.stdout.strip() == "configuration OK", r.stdout + r.stderr
    edited = CONF.read_text().replace("\tworkers = 0\n", "\tworkers = 2\n") + \
        OPERATOR_MARK + "\n"
    CONF.write_text(edited)
    # both sides changed it: dpkg would ask; keep the operator's
    out = apt("-o", "Dpkg::Options::=--force-confdef",
              "-o", "Dpkg::Options::=--force-confold", "install", debs.v2).stdout
    system.step = "upgraded"
    assert status() == "installed"
    assert installed_version() == debs.upgrade_version
    assert "Package distributor has shipped an updated version" in out, out
    assert CONF.read_text() == edited
    dist = Path(str(CONF) + ".dpkg-dist")
    assert dist.exists() and UPGRADE_MARK in dist.read_text()
    assert "Modified" in out
    # still enabled, still valid, the new binary in place
    assert Path("/etc/systemd/system/multi-user.target.wants/warrend.service").is_symlink()
    r = run(["/usr/sbin/warrend", "-t", "-c", CONF])
    assert r.stdout.strip() == "configuration OK"
    # conf.d and the operator's drop-in kept, and still read
    assert CONFD.is_dir() and dropin.read_text() == dropin_text
    dropin.write_text(dropin_text.replace('"/bin/cat"', '"cat"'))
    r = run(["/usr/sbin/warrend", "-t", "-c", CONF], check=False)
    assert r.returncode == 78 and r.stderr.startswith(f"{dropin}:3: "), r.stderr
    dropin.unlink()  # the operator's own file: not the package's to purge


def test_remove_keeps_the_conffile_and_purge_leaves_nothing(system):
    assert system.step == "upgraded"
    apt("remove", PKG)
    system.step = "removed"
    assert status() == "config-files"
    assert OPERATOR_MARK in CONF.read_text(), "remove must keep the conffile"
    left = traces() - system.traces_before
    # policy keeps the configuration and the admin's enablement until purge
    kept = {"/etc/warren", str(CONF), str(CONF) + ".dpkg-dist", str(CONFD),
            "/etc/systemd/system/multi-user.target.wants/warrend.service"}
    kept |= {f for f in left if f.startswith("/var/lib/systemd/deb-systemd-helper-enabled/")}
    kept |= {f for f in left if re.match(r"/var/lib/dpkg/info/warren\.(postrm|list|conffiles|md5sums)$", f)}
    assert left <= kept, sorted(left - kept)
    assert not os.path.exists("/usr/sbin/warrend")

    apt("purge", PKG)
    system.step = "purged"
    assert status() in ("", "not-installed")
    assert traces() == system.traces_before, sorted(traces() ^ system.traces_before)
    # policy: system users stay (README.Debian); the finalizer removes them
    assert all(user_exists(u) for u in USERS)
