"""The documentation stays true to the code: man pages render without
warnings, name every flag and key, and the example configuration runs."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import WARREND
from sd_helpers import with_package_users

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["warrend.8", "warrend.conf.5", "warren-submit.1", "warrenctl.8",
         "warren-handler.7"]

# the schema of src/config.c, section by section
KEYS = {
    "broker": ["url", "heartbeat", "password_file", "tls", "connect_timeout",
               "consumer_timeout"],
    "tls": ["ca_cert", "cert", "key", "verify_peer", "verify_hostname"],
    "root": ["broker", "shutdown_timeout", "control_socket", "metrics", "queue",
             "include"],
    "metrics": ["listen"],
    "queue": ["workers", "command", "prefetch", "timeout", "kill_grace",
              "durable", "type", "retry", "park", "environment", "workdir",
              "mode", "max_messages", "declare", "arguments", "bind",
              "delivery_limit", "max_rss", "max_age", "slow", "max_body"],
    "bind": ["type", "keys"],
    "retry": ["attempts", "delay", "backoff", "max_delay"],
}
FLAGS = {
    "warrend.8": ["c", "t", "d", "V", "h"],
    "warren-submit.1": ["c", "u", "q", "H", "i", "l"],
    "warrenctl.8": ["s", "c"],
}
VARIABLES = ["WARREN_QUEUE", "WARREN_WORKER", "WARREN_ATTEMPT",
             "WARREN_REDELIVERED", "WARREN_MESSAGE_ID", "WARREN_CORRELATION_ID",
             "WARREN_REPLY_TO", "WARREN_CONTENT_TYPE", "WARREN_CONTENT_ENCODING",
             "WARREN_TYPE", "WARREN_APP_ID", "WARREN_TIMESTAMP",
             "WARREN_ROUTING_KEY", "WARREN_EXCHANGE", "WARREN_HEADER_",
             "TRACEPARENT", "TRACESTATE", "BAGGAGE", "TRACE_ID"]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page):
    path = ROOT / "man" / page
    if shutil.which("mandoc"):
        r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(path)],
                           capture_output=True, text=True)
        assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr
    if not shutil.which("groff"):
        pytest.skip("groff is not installed")
    r = subprocess.run(["groff", "-ww", "-z", "-mandoc", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_every_key_is_in_the_reference_and_the_example():
    page = (ROOT / "man" / "warrend.conf.5").read_text()
    example = (ROOT / "etc" / "warrend.conf").read_text()
    for section, keys in KEYS.items():
        for key in keys:
            assert re.search(rf"\.It Ic {key}\b", page), f"warrend.conf(5) lacks {key}"
            assert re.search(rf"\b{key}\b", example), f"etc/warrend.conf lacks {key}"


@pytest.mark.parametrize("page", sorted(FLAGS))
def test_every_flag_is_documented(page):
    text = (ROOT / "man" / page).read_text()
    for flag in FLAGS[page]:
        assert re.search(rf"\.It Fl {flag}\b", text), f"{page} lacks -{flag}"


def test_handler_variables_are_documented():
    text = (ROOT / "man" / "warrend.conf.5").read_text() + \
        (ROOT / "man" / "warrend.8").read_text()
    for v in VARIABLES:
        assert v in text, v


def test_example_configuration_is_valid(tmp_path):
    """As root, where the package's users exist (the example's queue runs
    its handlers as warren-handler): the host's accounts stay as they are."""
    if os.geteuid() != 0:
        pytest.skip("the users are made in a mount namespace, as root")
    argv = [str(WARREND), "-t", "-c", str(ROOT / "etc" / "warrend.conf")]
    r = subprocess.run(with_package_users(argv, tmp_path / "etc"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "configuration OK", r.stderr


def test_readme_quick_start_is_two_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("\n\n", 3)[2]
    commands = [l for l in block.splitlines() if l.startswith("    ")]
    assert [c.split("#")[0].strip() for c in commands] == \
        ["bash scripts/demo", "bash scripts/test"], block
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_c_sources_follow_clang_format():
    """STYLE: one C style, enforced by the repository's .clang-format."""
    tool = shutil.which("clang-format")
    if tool is None:
        pytest.skip("clang-format is not installed")
    files = sorted(str(p) for d in ("src", "tests/unit")
                   for p in (ROOT / d).rglob("*.[ch]"))
    r = subprocess.run([tool, "--style=file", "--dry-run", "-Werror", *files],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
