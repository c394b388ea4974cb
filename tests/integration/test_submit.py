"""warren-submit (SPEC: warren-submit): durable queue, persistent messages,
confirms, and a non-zero exit when the broker is not there."""

import subprocess

import pytest

from conftest import SUBMIT, conf_string, free_port, queue_name_for


@pytest.fixture
def queue(broker, request):
    name = queue_name_for(request.node.name)
    broker.delete_queue(name)
    yield name
    broker.delete_queue(name)


def submit(*args, input=b"", timeout=30):
    if not SUBMIT.exists():
        pytest.fail(f"{SUBMIT} is not built")
    return subprocess.run([str(SUBMIT), *args], input=input,
                          capture_output=True, timeout=timeout)


def drain(broker, queue):
    got = []
    while True:
        method, props, body = broker.get(queue)
        if method is None:
            return got
        got.append((props, body))


def test_lines_become_persistent_messages(broker, queue):
    r = submit("-u", broker.url, "-q", queue, "-l", input=b"one\ntwo words\nthree\n")
    assert r.returncode == 0, r.stderr
    info = broker.queue_info(queue, "durable", "messages")
    assert info == {"durable": "true", "messages": "3"}
    got = drain(broker, queue)
    assert [b for _, b in got] == [b"one", b"two words", b"three"]
    assert all(p.delivery_mode == 2 for p, _ in got)


def test_message_id_header_and_joined_arguments(broker, queue):
    r = submit("-u", broker.url, "-q", queue, "-i", "job-42",
               "-H", "X-Foo: bar", "-H", "X-Other: two words",
               "hello", "world")
    assert r.returncode == 0, r.stderr
    [(props, body)] = drain(broker, queue)
    assert body == b"hello world"
    assert props.message_id == "job-42"
    assert props.delivery_mode == 2
    headers = {k: (v.decode() if isinstance(v, bytes) else v)
               for k, v in (props.headers or {}).items()}
    assert headers.get("X-Foo") == "bar", props.headers
    assert headers.get("X-Other") == "two words", props.headers


def test_stdin_is_the_body_byte_for_byte(broker, queue):
    body = b"first line\nsecond\0line\n\n"
    r = submit("-u", broker.url, "-q", queue, input=body)
    assert r.returncode == 0, r.stderr
    [(props, got)] = drain(broker, queue)
    assert got == body
    assert props.delivery_mode == 2


def test_broker_from_config_file(broker, queue, tmp_path):
    conf = tmp_path / "warrend.conf"
    conf.write_text(
        f"broker {{\n    url = {conf_string(broker.url)}\n}}\n"
        f"queue {conf_string(queue)} {{\n    command = {{\"/bin/true\"}}\n}}\n"
    )
    r = submit("-c", str(conf), "-q", queue, "from", "config")
    assert r.returncode == 0, r.stderr
    assert broker.queue_info(queue, "durable") == {"durable": "true"}
    [(_, body)] = drain(broker, queue)
    assert body == b"from config"


def test_no_broker_fails(queue):
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    r = submit("-u", url, "-q", queue, "lost")
    assert r.returncode != 0
    assert r.stderr.strip(), "failed without saying why"


def test_password_of_u_is_hidden_from_ps(broker, queue):
    """-u puts a password in argv; warren-submit overwrites it there, so ps
    and /proc/PID/cmdline do not show it while it runs."""
    from conftest import wait_for
    assert "guest:guest@" in broker.url
    p = subprocess.Popen([str(SUBMIT), "-u", broker.url, "-q", queue],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        # it is reading its body from stdin now; its argv is final
        def cmdline():
            text = open(f"/proc/{p.pid}/cmdline", "rb").read()
            return text if b"guest:" in text and b"@127.0.0.1" in text else None
        text = wait_for(cmdline, timeout=10, message="warren-submit's argv")
        wait_for(lambda: b"guest:guest@" not in open(f"/proc/{p.pid}/cmdline", "rb").read(),
                 timeout=10, message="the password overwritten")
        assert b"guest:xxxxx@127.0.0.1" in open(f"/proc/{p.pid}/cmdline", "rb").read(), text
        out, err = p.communicate(b"the body", timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    got = drain(broker, queue)
    assert [body for _, body in got] == [b"the body"]
