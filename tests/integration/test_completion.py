"""bash completion (completion/warrenctl, installed for warrend,
warren-submit and warrenctl): COMP_WORDS/COMP_CWORD driven, no terminal,
without the bash-completion package. Queue names come from the -c FILE on
the line and the files its include patterns match, and nothing in the
configuration is ever run."""

import subprocess

from conftest import REPO

SCRIPT = REPO / "completion" / "warrenctl"


def bash(code, timeout=15):
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c",
                        f"source {SCRIPT}\n{code}"],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r
    assert r.stderr == "", r.stderr
    return r.stdout


def complete(*words):
    """The completions bash offers for words (the last one being typed)."""
    command = {"warrend": "_warrend", "warren-submit": "_warren_submit",
               "warrenctl": "_warrenctl"}[words[0]]
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    out = bash(f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
               f"{command}\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"")
    return [l for l in out.splitlines() if l]


def config(tmp_path):
    """A main file with queue "main" and two drop-ins, one of them with a
    queue whose name would run a command if it were ever evaluated."""
    d = tmp_path / "conf.d"
    d.mkdir()
    marker = tmp_path / "ran"
    (d / "10-a.conf").write_text('queue "alpha" {\n command = {"/bin/true"}\n}\n')
    (d / "20-b.conf").write_text(
        '# queue "commented" {\n'
        f'queue "$(touch {marker})" {{\n command = {{"/bin/true"}}\n}}\n')
    (d / "30-c.conf.dpkg-old").write_text('queue "old" {\n command = {"/bin/true"}\n}\n')
    main = tmp_path / "warrend.conf"
    main.write_text('broker {\n url = "amqp://localhost/"\n}\n'
                    'include = {\n  "conf.d/*.conf", # drop-ins\n}\n'
                    'queue "main" {\n command = {"/bin/true"}\n}\n')
    return main, marker


def test_registered_for_the_three_programs():
    out = bash("complete -p warrenctl warrend warren-submit")
    assert out.splitlines() == ["complete -F _warrenctl warrenctl",
                                "complete -F _warrend warrend",
                                "complete -F _warren_submit warren-submit"], out


def test_warrenctl_commands():
    assert complete("warrenctl", "pa") == ["pause"]
    assert complete("warrenctl", "re") == ["resume", "restart", "replay"]
    assert complete("warrenctl", "sc") == ["scale"]
    assert complete("warrenctl", "") == ["status", "pause", "resume", "metrics",
                                         "scale", "restart", "failed", "replay"]
    assert complete("warrenctl", "-") == ["-s", "-c", "-h"]
    assert complete("warrenctl", "status", "--") == ["--json"]
    assert complete("warrenctl", "replay", "q", "--") == ["--limit", "--reason"]


def test_warrenctl_queue_names_from_config_and_dropins(tmp_path):
    main, marker = config(tmp_path)
    got = complete("warrenctl", "-c", str(main), "pause", "")
    assert sorted(got) == sorted(["main", "alpha", f"\\$\\(touch\\ {marker}\\)"]), got
    assert complete("warrenctl", "-c", str(main), "resume", "al") == ["alpha"]
    assert complete("warrenctl", f"-c{main}", "failed", "m") == ["main"]
    assert complete("warrenctl", "-c", str(main), "scale", "al") == ["alpha"]
    assert complete("warrenctl", "-c", str(main), "restart", "m") == ["main"]
    # scale's N comes after the queue: no names offered for it
    assert complete("warrenctl", "-c", str(main), "scale", "main", "") == []
    # the queue is given: nothing more to complete but options
    assert complete("warrenctl", "-c", str(main), "pause", "main", "") == []
    assert not marker.exists(), "a queue name was run"


def test_warren_submit_and_warrend(tmp_path):
    main, marker = config(tmp_path)
    assert complete("warren-submit", "-c", str(main), "-q", "a") == ["alpha"]
    assert "-q" in complete("warren-submit", "-")
    assert complete("warren-submit", "--w") == ["--wait"]
    assert complete("warren-submit", "--wait", "--timeout", "") == []
    assert complete("warrend", "-") == ["-c", "-t", "-d", "-V", "-h"]
    got = complete("warrend", "-c", str(tmp_path / "warr"))
    assert got == [str(main)], got
    assert not marker.exists()


def test_missing_configuration_gives_no_names(tmp_path):
    assert complete("warrenctl", "-c", str(tmp_path / "none.conf"), "pause", "") == []
