"""Configuration checking (SPEC: warrend -t, configuration): every error names
the file and the line, and exits 78. None of these needs a broker."""

import subprocess

import pytest

from conftest import WARREND, free_port

EX_CONFIG = 78


def run_warrend(*args, timeout=15):
    if not WARREND.exists():
        pytest.fail(f"{WARREND} is not built")
    return subprocess.run([str(WARREND), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def good_lines(port):
    return [
        "",                                                 # 1
        "broker {",                                         # 2
        f'    url = "amqp://guest:guest@127.0.0.1:{port}/"',  # 3
        "}",                                                # 4
        'queue "a" {',                                      # 5
        "    workers = 2",                                  # 6
        '    command = {"/bin/true"}',                      # 7
        "}",                                                # 8
    ]


def write(tmp_path, lines, name="warrend.conf"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_file_is_ok(tmp_path):
    # -t only checks: nothing listens on this port, and it must not matter.
    path = write(tmp_path, good_lines(free_port()))
    r = run_warrend("-t", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout + r.stderr


def edit(lines, line_no, new=None, insert=None):
    """Replace line number line_no (1-based) with new, or insert lines
    before it."""
    out = list(lines)
    if insert is not None:
        out[line_no - 1:line_no - 1] = insert
    else:
        out[line_no - 1] = new
    return out


# (name, how to spoil the good file, the lines an error may name)
BAD = [
    ("unknown key in queue", lambda l: edit(l, 7, insert=['    colour = "blue"']), {7}),
    ("unknown top-level key", lambda l: edit(l, 5, insert=["frobnicate = 1"]), {5}),
    ("missing command", lambda l: edit(l, 7, new=""), {5, 8}),
    ("wrong type", lambda l: edit(l, 6, new='    workers = "many"'), {6}),
    ("out of range", lambda l: edit(l, 6, new="    workers = -1"), {6}),
    ("out of range timeout", lambda l: edit(l, 7, insert=["    timeout = -5"]), {7}),
    ("duplicate queue",
     lambda l: l + ['queue "a" {', '    command = {"/bin/false"}', "}"], {9}),
    ("not an amqp url",
     lambda l: edit(l, 3, new='    url = "http://127.0.0.1:5672/"'), {3}),
    ("syntax error", lambda l: edit(l, 6, new="    workers = = 2"), {6}),
    ("max_body zero", lambda l: edit(l, 7, insert=["    max_body = 0"]), {7}),
    ("max_body not a number",
     lambda l: edit(l, 7, insert=['    max_body = "1G"']), {7}),
]


@pytest.mark.parametrize("spoil,lines", [(b[1], b[2]) for b in BAD],
                         ids=[b[0].replace(" ", "-") for b in BAD])
def test_bad_file_names_file_and_line(tmp_path, spoil, lines):
    path = write(tmp_path, spoil(good_lines(free_port())))
    r = run_warrend("-t", "-c", str(path))
    assert r.returncode == EX_CONFIG, (r.returncode, r.stderr)
    named = [f"{path}:{n}:" for n in sorted(lines)]
    assert any(n in r.stderr for n in named), \
        f"expected one of {named} in stderr:\n{r.stderr}\nfile:\n{path.read_text()}"
    assert "configuration OK" not in r.stdout + r.stderr


COMMENTED = [
    "# warrend.conf",                                       # 1
    "// another comment",                                   # 2
    "/* a comment",                                         # 3
    "   over two lines */",                                 # 4
    "broker {",                                             # 5
    '    url = "amqp://guest:guest@127.0.0.1:5672/" # trailing',  # 6
    "}",                                                    # 7
    'queue "a" {  # the queue',                             # 8
    "    # how many",                                       # 9
    "    workers = -1",                                     # 10
    '    command = {"/bin/true"}',                          # 11
    "}",                                                    # 12
]


def test_line_numbers_count_comment_lines_once(tmp_path):
    """Users' files are full of comments; the line named must still be the
    line of the error."""
    path = write(tmp_path, COMMENTED)
    r = run_warrend("-t", "-c", str(path))
    assert r.returncode == EX_CONFIG, r.stderr
    assert f"{path}:10:" in r.stderr, r.stderr


def test_no_queue_is_an_error(tmp_path):
    path = write(tmp_path, good_lines(free_port())[:4])
    r = run_warrend("-t", "-c", str(path))
    assert r.returncode == EX_CONFIG, r.stderr
    assert str(path) in r.stderr


def test_missing_file_is_a_config_error(tmp_path):
    r = run_warrend("-t", "-c", str(tmp_path / "nonexistent.conf"))
    assert r.returncode == EX_CONFIG, r.stderr
    assert "nonexistent.conf" in r.stderr


def test_starting_with_bad_file_exits_78(tmp_path):
    path = write(tmp_path, edit(good_lines(free_port()), 6, new="    workers = -1"))
    r = run_warrend("-c", str(path))
    assert r.returncode == EX_CONFIG, r.stderr
    assert f"{path}:6:" in r.stderr


def test_version_and_usage():
    r = run_warrend("-V")
    assert r.returncode == 0
    assert any(c.isdigit() for c in r.stdout + r.stderr)
    r = run_warrend("-h")
    assert r.returncode == 0
    assert "-c" in r.stdout + r.stderr
