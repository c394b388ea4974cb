"""`make install` and `make uninstall` with DESTDIR (SPEC: files).

Runs in the configured build tree (BUILDDIR), into a DESTDIR of the
test's own, with prefix and sysconfdir given on make's command line as a
packager would: `make install DESTDIR=D prefix=/usr sysconfdir=/etc`.
"""

import os
import re
import shlex
import shutil
import subprocess

import pytest

from conftest import BUILDDIR, REPO

VARS = ["prefix=/usr", "sysconfdir=/etc"]


def make(target, destdir, *extra):
    r = subprocess.run(["make", "-s", "-C", str(BUILDDIR), target,
                        f"DESTDIR={destdir}", *VARS, *extra],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"make {target} failed:\n{r.stdout}{r.stderr}"
    return r


def configured(name):
    """A variable of BUILDDIR's Makefile, as configure set it."""
    text = (BUILDDIR / "Makefile").read_text()
    m = re.search(rf"^{name} = (.*)$", text, re.M)
    assert m, f"{name} not in the Makefile"
    return m.group(1).strip()


@pytest.fixture(scope="module")
def build():
    if not (BUILDDIR / "Makefile").exists():
        pytest.skip(f"{BUILDDIR} is not a configured build tree")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return BUILDDIR


def unit_dir():
    """Where the unit goes: configure's choice, which is pkg-config's
    systemdsystemunitdir unless --with-systemdsystemunitdir said otherwise."""
    d = configured("systemdsystemunitdir")
    given = subprocess.run([str(BUILDDIR / "config.status"), "--config"],
                           capture_output=True, text=True).stdout
    if "--with-systemdsystemunitdir" not in given:
        pc = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir",
                             "systemd"], capture_output=True, text=True)
        if pc.returncode == 0 and pc.stdout.strip():
            assert d == pc.stdout.strip(), (d, pc.stdout)
    return d.replace("${prefix}", "/usr").replace("$(prefix)", "/usr")


def completion_dir():
    """Where bash completions go: configure's bashcompletiondir."""
    d = configured("bashcompletiondir")
    for var in ("datadir", "datarootdir"):
        d = d.replace("${%s}" % var, "${prefix}/share")
    return d.replace("${prefix}", "/usr")


def sysusers_dir():
    """Where the sysusers.d file goes: pkg-config's sysusersdir unless
    --with-sysusersdir said otherwise."""
    d = configured("sysusersdir")
    given = subprocess.run([str(BUILDDIR / "config.status"), "--config"],
                           capture_output=True, text=True).stdout
    if "--with-sysusersdir" not in given:
        pc = subprocess.run(["pkg-config", "--variable=sysusersdir", "systemd"],
                            capture_output=True, text=True)
        if pc.returncode == 0 and pc.stdout.strip():
            assert d == pc.stdout.strip(), (d, pc.stdout)
    return d.replace("${prefix}", "/usr").replace("$(prefix)", "/usr")


def sysusers_entries(text):
    """{name: (type, id, gecos, home)} of a sysusers.d file's lines."""
    got = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            parts = shlex.split(line)
            got[parts[1]] = (parts[0], *parts[2:5])
    return got


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() or p.is_symlink())


def test_install_layout_and_uninstall(build, tmp_path):
    dest = tmp_path / "dest"
    make("install", dest)
    unit = unit_dir().lstrip("/") + "/warrend.service"
    sysusers = sysusers_dir().lstrip("/") + "/warren.conf"
    completions = completion_dir().lstrip("/")
    expected = sorted([
        "usr/sbin/warrend", "usr/bin/warren-submit", "usr/bin/warrenctl",
        "etc/warren/warrend.conf", unit, sysusers, "usr/share/man/man8/warrend.8",
        "usr/share/man/man5/warrend.conf.5", "usr/share/man/man1/warren-submit.1",
        "usr/share/man/man8/warrenctl.8", "usr/share/man/man7/warren-handler.7",
        "usr/share/doc/warren/warren.rules.yml",
        "usr/share/doc/warren/warren-dashboard.json"] +
        [f"{completions}/{p}" for p in ("warrend", "warren-submit", "warrenctl")])
    assert files_under(dest) == expected
    assert (dest / "etc/warren/conf.d").is_dir(), "no drop-in directory"
    for p in ("warrend", "warren-submit"):
        assert os.readlink(dest / completions / p) == "warrenctl", p

    for f in expected:
        mode = (dest / f).stat().st_mode & 0o7777
        program = f in ("usr/sbin/warrend", "usr/bin/warren-submit",
                        "usr/bin/warrenctl")
        assert mode == (0o755 if program else 0o644), (f, oct(mode))
    assert (dest / "etc/warren/warrend.conf").read_bytes() == \
        (REPO / "etc" / "warrend.conf").read_bytes()
    r = subprocess.run([str(dest / "usr/sbin/warrend"), "-V"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("warrend ")

    text = (dest / unit).read_text()
    assert not re.search(r"@[a-z_]+@", text), "an unsubstituted @var@"
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID",
                 "NotifyAccess=main", "User=warren", "ProtectSystem=strict",
                 "OOMPolicy=continue", "AmbientCapabilities=CAP_SETUID CAP_SETGID",
                 "CapabilityBoundingSet=CAP_SETUID CAP_SETGID"):
        assert line in text.splitlines(), line
    assert "DynamicUser=yes" not in text.splitlines()
    # the users the unit and the example name, as system users (no uid
    # given: systemd-sysusers picks one from the system range)
    users = sysusers_entries((dest / sysusers).read_text())
    assert users == {"warren": ("u", "-", "warren daemon", "/nonexistent"),
                     "warren-handler": ("u", "-", "warren handlers", "/nonexistent")}, users

    # A second install keeps the administrator's configuration.
    conf = dest / "etc/warren/warrend.conf"
    edited = conf.read_text() + "# edited by the administrator\n"
    conf.write_text(edited)
    make("install", dest)
    assert conf.read_text() == edited

    # Uninstall removes the programs, pages and unit, not an edited file.
    make("uninstall", dest)
    assert files_under(dest) == ["etc/warren/warrend.conf"]
    assert conf.read_text() == edited
    # ... and an unedited example goes too.
    conf.unlink()
    make("install", dest)
    make("uninstall", dest)
    assert files_under(dest) == []


def test_installed_unit_names_the_installed_files(build, tmp_path):
    dest = tmp_path / "dest"
    make("install", dest)
    want = "ExecStart=/usr/sbin/warrend -c /etc/warren/warrend.conf"
    text = (dest / unit_dir().lstrip("/") / "warrend.service").read_text()
    assert want in text.splitlines(), \
        [l for l in text.splitlines() if l.startswith("Exec")]


def needed(binary):
    """The shared libraries a program names itself (DT_NEEDED)."""
    out = subprocess.run(["readelf", "-d", str(binary)], capture_output=True,
                         text=True, check=True).stdout
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))


def test_each_program_links_only_what_it_uses(build):
    """warrenctl and warren-submit need neither the journal (libsystemd),
    nor the HTTP listener (libmicrohttpd), nor capabilities (libcap-ng):
    those are warrend's alone, and warrend loads libmicrohttpd only when
    a metrics listener is configured (test_metrics checks it)."""
    daemon = needed(build / "src" / "warrend")
    for lib in ("libsystemd", "libcap-ng"):
        assert any(n.startswith(lib) for n in daemon), (lib, daemon)
    assert not any(n.startswith("libmicrohttpd") for n in daemon), daemon
    for tool in ("warrenctl", "warren-submit"):
        libs = needed(build / "src" / tool)
        print(f"{tool}: {sorted(libs)}")
        assert any(n.startswith("librabbitmq") for n in libs), libs
        for lib in ("libsystemd", "libmicrohttpd", "libcap-ng"):
            assert not any(n.startswith(lib) for n in libs), (tool, lib)
