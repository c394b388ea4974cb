"""GET /health on the metrics listener (SPEC: metrics { listen }): 200 and
"ok" while every queue that is not paused has a worker consuming; 503 and
one line per problem otherwise: a queue whose handler cannot start, every
worker unable to reach the broker. A load balancer polls it; so does this.
"""
import os
import urllib.error
import urllib.request

from chaos_helpers import PrivateBroker
from conftest import Warrend, free_port, queue_name_for, wait_for, write_script


def health(port):
    """(status, body) of GET /health; None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def listen(port):
    return f'control_socket = ""\nmetrics {{ listen = "127.0.0.1:{port}" }}'


def write_conf(path, url, port, queue, handler, broker_extra="", more=""):
    """A warrend.conf: the broker at url, /health on port, queue with two
    workers running handler, and more (other queues)."""
    path.write_text(f"""
broker {{
    url = "{url}"
    connect_timeout = 2
{broker_extra}}}
{listen(port)}
queue "{queue}" {{
    workers = 2
    command = {{"{handler}"}}
}}
{more}""")
    return path


def wait_broker_line(port, queue, timeout):
    """Wait for /health's 503 naming the broker: its line, then the one
    queue's (nothing else: a paused queue is no problem)."""
    def down():
        got = health(port)
        # the queue's line names the broker too ("cannot reach the
        # broker: URL") before all workers have failed: wait for the
        # broker's own line
        return got if got and got[0] == 503 and got[1].startswith("broker: ") else None
    got = wait_for(down, timeout=timeout, message="the broker line in /health")
    lines = got[1].splitlines()
    assert lines[0] == "broker: none of the 2 workers can reach it", lines
    assert lines[1].startswith(f"queue {queue}: no worker consuming"), lines
    assert len(lines) == 2, lines
    return lines


def test_health_follows_a_broken_and_mended_handler(broker, warrend, tmp_path):
    port = free_port()
    handler = tmp_path / "handler.sh"
    write_script(handler, "#!/bin/sh\ncat >/dev/null\n")
    w = warrend([str(handler)], workers=2, extra=listen(port))
    w.wait_consuming(2)
    assert wait_for(lambda: health(port) == (200, "ok\n"), timeout=10)
    # the handler's path is broken (a bad deploy): the next message finds
    # it gone, workers end and cannot start again
    broken = tmp_path / "handler.moved"
    os.rename(handler, broken)
    broker.publish(w.queue, "x", message_id="m1")
    got = wait_for(lambda: (h := health(port)) and h[0] == 503 and h, timeout=30,
                   message="503 from /health")
    lines = got[1].splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"queue {w.queue}: no worker consuming"), lines
    assert "handler" in lines[0], lines  # the reason, as the log says it
    # mended: the respawned workers consume again, /health is ok again
    os.rename(broken, handler)
    wait_for(lambda: health(port) == (200, "ok\n"), timeout=60,
             message="200 again after the fix")
    wait_for(lambda: broker.queue_counts(w.queue) == (0, 0), timeout=30)


def test_health_says_the_broker_is_unreachable(broker, warrend, tmp_path):
    """No broker at the configured address: one line for the broker, one
    for each queue; a paused queue (workers = 0) is no problem."""
    port = free_port()
    nobody = free_port()  # nothing listens there
    h = write_script(tmp_path / "h.sh", "#!/bin/sh\ncat >/dev/null\n")
    q = queue_name_for("health_unreachable")
    spare = f'queue "{q}.spare" {{\n    workers = 0\n    command = {{"{h}"}}\n}}\n'
    conf = write_conf(tmp_path / "warrend.conf",
                      f"amqp://guest:guest@127.0.0.1:{nobody}/", port, q, h,
                      more=spare)
    w = Warrend(conf, tmp_path / "warrend.log", [q], broker, dict(os.environ))
    try:
        lines = wait_broker_line(port, q, timeout=40)  # not the spare
        assert "cannot reach the broker" in lines[1], lines
    finally:
        w.kill_everything()


def test_health_follows_the_broker_down_and_back(tmp_path):
    """The broker stopped: 503 with the broker's line; started again (same
    port, same data): the respawned workers consume and /health is 200
    again, with no other change."""
    b = PrivateBroker(tmp_path / "broker")
    b.start()
    port = free_port()
    h = write_script(tmp_path / "h.sh", "#!/bin/sh\ncat >/dev/null\n")
    q = queue_name_for("health_broker_back")
    conf = write_conf(tmp_path / "warrend.conf",
                      f"amqp://guest:guest@127.0.0.1:{b.port}/", port, q, h,
                      broker_extra="    heartbeat = 2\n")
    w = Warrend(conf, tmp_path / "warrend.log", [q], b, dict(os.environ))
    try:
        w.wait_consuming(2)
        wait_for(lambda: health(port) == (200, "ok\n"), timeout=10,
                 message="200 while both consume")
        b.stop()
        wait_broker_line(port, q, timeout=60)
        b.start()
        wait_for(lambda: health(port) == (200, "ok\n"), timeout=90,
                 message="200 again once the broker is back")
        w.wait_consuming(2, timeout=30)
        # and it works: a message published now is handled
        b.publish(q, "after", message_id="m-after")
        wait_for(lambda: b.queue_counts(q) == (0, 0), timeout=30,
                 message="the message after the restart handled")
    finally:
        w.kill_everything()
        b.stop()
