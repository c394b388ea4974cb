"""Fuzzing (tests/fuzz): each libFuzzer harness runs for 20 s under ASan
and UBSan, from a copy of its seed corpus, and must find nothing. The
figures (executions, coverage) are printed; longer runs by hand:
tests/fuzz/run 600."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import BUILDDIR, REPO

SECONDS = 20


def run_fuzzer(name, tmp_path, capsys):
    if shutil.which("clang") is None:
        pytest.fail("clang is not installed (scripts/deps installs it)")
    if not (BUILDDIR / "config.h").exists():
        pytest.fail(f"no config.h in {BUILDDIR}: configure first")
    env = dict(os.environ, WARREN_BUILDDIR=str(BUILDDIR),
               FUZZ_BUILDDIR=str(tmp_path))
    r = subprocess.run([str(REPO / "tests" / "fuzz" / "run"), str(SECONDS),
                        name], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, errors="replace",
                       timeout=SECONDS + 300)
    out = r.stdout + r.stderr
    runs = re.search(r"^stat::number_of_executed_units: *(\d+)", out, re.M)
    done = re.search(r"^#\d+\s+DONE\s+(cov: \d+ ft: \d+ corp: \S+)", out,
                     re.M)
    with capsys.disabled():
        print(f"\nfuzz_{name}: {runs.group(1) if runs else '?'} executions"
              f" in {SECONDS} s, {done.group(1) if done else 'no DONE line'}")
    assert r.returncode == 0, out
    assert runs and int(runs.group(1)) > 0, out


def test_fuzz_config(tmp_path, capsys):
    """config_load() on any bytes: no crash or leak, and every error is
    "FILE:LINE: what" with LINE a line of the file."""
    run_fuzzer("config", tmp_path, capsys)


def test_fuzz_headers(tmp_path, capsys):
    """field_text() and handler_env() on any tree of header values: no
    crash or leak, JSON that parses strictly, a clean environment."""
    run_fuzzer("headers", tmp_path, capsys)


def test_fuzz_record(tmp_path, capsys):
    """record_decode() on any bytes, as a report and as a command: no
    crash, no read past the input; what decodes encodes to the same bytes
    and decodes to the same record."""
    run_fuzzer("record", tmp_path, capsys)
