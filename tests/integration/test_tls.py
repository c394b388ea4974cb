"""amqps:// against TLS brokers of the test's own (SPEC: broker.url,
broker.tls { ca_cert, cert, key, verify_peer, verify_hostname }) -- issue 9.

Certificates are made here with openssl: a CA, a server certificate for
"localhost" only (subjectAltName DNS:localhost: amqps://127.0.0.1 is a
name it does not carry), an unrelated second CA, an expired server
certificate (openssl ca -startdate/-enddate in 2020) and a client
certificate. Three nodes, started together for the module:

- "mutual": the good certificate, ssl_options.verify = verify_peer and
  fail_if_no_peer_cert = true (client certificates by the CA required);
  a plain listener too;
- "expired": the expired certificate;
- "old": TLS 1.0/1.1 only.

Each warrend reaches its node through a Relay that counts connections,
so a test sees the worker retry. A failure must be told in words that
name the cause, once per cause however often the worker retries, with
backoff between attempts, and no worker consumes.
"""

import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port, queue_name_for, read_lines, wait_for, write_script
from cluster_helpers import Daemons, Node, Relay, start_nodes, stop_nodes

OPENSSL_CA_CONF = """
[ca]
default_ca = test_ca
[test_ca]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
"""


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr}{r.stdout}")
    return r.stdout


def make_certs(d):
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "30", "-subj", f"/CN=warren test {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)

    def leaf(name, cn, ext, days="30"):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}", cwd=d)
        (d / f"{name}.ext").write_text(ext)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-set_serial", str(abs(hash(name)) % 10**9),
                "-days", days, "-extfile", f"{name}.ext", "-out", f"{name}.pem",
                cwd=d)

    leaf("server", "localhost",
         "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    leaf("client", "warren-client", "extendedKeyUsage=clientAuth\n")
    # expired: openssl ca can date a certificate in the past
    (d / "newcerts").mkdir(exist_ok=True)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(OPENSSL_CA_CONF.format(dir=d))
    openssl("req", *ec, "-keyout", "expired.key", "-out", "expired.csr",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            cwd=d)
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem",
            "-keyfile", "ca.key", "-in", "expired.csr", "-out", "expired.pem",
            "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
            "-notext", cwd=d)
    text = openssl("x509", "-in", "expired.pem", "-noout", "-enddate", cwd=d)
    assert "2020" in text, text
    return d


def tls_lines(port, certs, cert, verify=False, versions=None):
    lines = [f"listeners.ssl.1 = 127.0.0.1:{port}",
             f"ssl_options.cacertfile = {certs}/ca.pem",
             f"ssl_options.certfile = {certs}/{cert}.pem",
             f"ssl_options.keyfile = {certs}/{cert}.key"]
    if verify:
        lines += ["ssl_options.verify = verify_peer",
                  "ssl_options.fail_if_no_peer_cert = true"]
    else:
        lines += ["ssl_options.verify = verify_none",
                  "ssl_options.fail_if_no_peer_cert = false"]
    for i, v in enumerate(versions or [], 1):
        lines.append(f"ssl_options.versions.{i} = {v}")
    if versions:
        # Erlang 25 offers no suite of these versions unless told to
        lines += [f"ssl_options.ciphers.{i} = {c}" for i, c in enumerate([
            "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA",
            "ECDHE-RSA-AES256-SHA", "ECDHE-RSA-AES128-SHA"], 1)]
    return lines


class TLSNodes:
    pass


def _handshake(port, *opts):
    """openssl s_client against 127.0.0.1:port: True when it completes."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                        *opts], input="", capture_output=True, text=True,
                       timeout=20)
    return "Cipher is (NONE)" not in r.stdout and r.returncode == 0, \
        r.stdout[-800:] + r.stderr[-800:]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    top = tmp_path_factory.mktemp("tls")
    t0 = time.monotonic()
    certs = make_certs(top / "certs")
    t = TLSNodes()
    t.certs = certs
    t.ports = {k: free_port() for k in ("mutual", "expired", "old")}
    t.nodes = {
        "mutual": Node(top / "mutual", conf_lines=tls_lines(
            t.ports["mutual"], certs, "server", verify=True)),
        "expired": Node(top / "expired", conf_lines=tls_lines(
            t.ports["expired"], certs, "expired")),
        "old": Node(top / "old", conf_lines=tls_lines(
            t.ports["old"], certs, "server", versions=["tlsv1.1", "tlsv1"])),
    }
    nodes = list(t.nodes.values())
    start_nodes(nodes)
    try:
        t.old_problem = None
        for name, port in t.ports.items():
            try:
                wait_for(lambda: _port_open(port), 20,
                         message=f"the {name} node's TLS listener")
            except AssertionError as e:
                if name != "old":
                    raise
                t.old_problem = f"the TLS 1.0/1.1 listener did not open: {e}"
        if t.old_problem is None:
            ok, out = _handshake(t.ports["old"], "-tls1_1",
                                 "-cipher", "DEFAULT@SECLEVEL=0")
            if not ok:
                t.old_problem = ("the TLS 1.0/1.1-only listener completes no "
                                 f"TLS 1.1 handshake (Erlang refuses?): {out}")
        print(f"\nTLS certificates and nodes ready in {time.monotonic() - t0:.1f} s"
              f"{'; old-TLS: ' + t.old_problem if t.old_problem else ''}")
        yield t
    finally:
        stop_nodes(nodes)


def _port_open(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def daemons(tmp_path, request):
    d = Daemons(tmp_path, request)
    yield d
    d.finish()


def tls_block(**keys):
    if not keys:
        return []
    return ["tls {", *[f"    {k} = \"{v}\"" for k, v in keys.items()], "}"]


def run_case(tls, daemons, tmp_path, request, target_port, url_fmt, tls_keys,
             cause, node="mutual"):
    """warrend with one worker on url_fmt.format(port=relay) through a
    counting relay to target_port: it must never consume, retry with
    backoff, and say `cause` (a regex) in exactly one line."""
    queue = queue_name_for(request.node.name)
    relay = Relay(target_port)
    try:
        plain = tls.nodes[node]
        t0 = time.monotonic()
        d = daemons.start(plain, [url_fmt.format(port=relay.port)],
                          [{"name": queue, "workers": 1,
                            "command": ["/bin/true"]}],
                          broker_lines=["connect_timeout = 3",
                                        *tls_block(**tls_keys)])
        wait_for(lambda: relay.count() >= 3 or not d.alive(), 30, interval=0.05,
                 message="3 connection attempts")
        assert d.alive(), d.log()
        time.sleep(1)
        attempts = list(relay.accepted)
        gaps = [round(b - a, 2) for a, b in zip(attempts, attempts[1:])]
        lines = d.lines()
        # the queue's name and the test's directory may hold the words
        said = [l for l in lines if re.search(
            cause, l.replace(queue, "QUEUE").replace(str(tmp_path), "TMP"))]
        consumers = plain.consumer_count(queue)
        print(f"\n{len(attempts)} attempts in {time.monotonic() - t0:.1f} s, "
              f"gaps {gaps}; lines naming the cause: {len(said)}")
        for l in said:
            print("  " + l)
        assert consumers == 0, f"{consumers} consumers on {queue}"
        assert said, f"no log line matches {cause!r}:\n" + "\n".join(lines[-30:])
        assert len(said) == 1, (
            f"the cause is told {len(said)} times, not once:\n" + "\n".join(said))
        assert len(attempts) <= 6, f"no backoff: {len(attempts)} attempts, gaps {gaps}"
        assert gaps[-1] >= 0.3, f"no backoff between attempts: gaps {gaps}"
        return d
    finally:
        relay.close()


def test_verified_connection_handles_a_message(tls, daemons, tmp_path, request):
    """amqps://localhost with ca_cert = the CA (and the client certificate
    the node demands): a message is handled."""
    queue = queue_name_for(request.node.name)
    out = tmp_path / "handled"
    h = write_script(tmp_path / "h.sh", '#!/bin/sh\ncat >/dev/null\necho "$WARREN_MESSAGE_ID" >>"$1"\n')
    node = tls.nodes["mutual"]
    c = tls.certs
    d = daemons.start(node, [f"amqps://guest:guest@localhost:{tls.ports['mutual']}/"],
                      [{"name": queue, "workers": 1, "command": [h, str(out)]}],
                      broker_lines=["connect_timeout = 3", *tls_block(
                          ca_cert=f"{c}/ca.pem", cert=f"{c}/client.pem",
                          key=f"{c}/client.key")])
    t0 = time.monotonic()
    d.wait_consuming(1, timeout=20)
    node.publish(queue, "over TLS", message_id="tls-1")
    wait_for(lambda: read_lines(out) == ["tls-1"], 20,
             message="the message handled over TLS")
    print(f"\nconsuming over mutual TLS and handled in {time.monotonic() - t0:.2f} s")


def test_mutual_tls_without_client_certificate(tls, daemons, tmp_path, request):
    c = tls.certs
    run_case(tls, daemons, tmp_path, request, tls.ports["mutual"],
             "amqps://guest:guest@localhost:{port}/", {"ca_cert": f"{c}/ca.pem"},
             r"client certificate")


def test_wrong_ca(tls, daemons, tmp_path, request):
    c = tls.certs
    run_case(tls, daemons, tmp_path, request, tls.ports["mutual"],
             "amqps://guest:guest@localhost:{port}/",
             {"ca_cert": f"{c}/other-ca.pem", "cert": f"{c}/client.pem",
              "key": f"{c}/client.key"},
             r"unknown CA")


def test_wrong_host_name(tls, daemons, tmp_path, request):
    """The certificate names localhost only; the URL says 127.0.0.1."""
    c = tls.certs
    run_case(tls, daemons, tmp_path, request, tls.ports["mutual"],
             "amqps://guest:guest@127.0.0.1:{port}/",
             {"ca_cert": f"{c}/ca.pem", "cert": f"{c}/client.pem",
              "key": f"{c}/client.key"},
             r"does not name")


def test_expired_certificate(tls, daemons, tmp_path, request):
    c = tls.certs
    run_case(tls, daemons, tmp_path, request, tls.ports["expired"],
             "amqps://guest:guest@localhost:{port}/", {"ca_cert": f"{c}/ca.pem"},
             r"expired", node="expired")


def test_old_tls_only_broker(tls, daemons, tmp_path, request):
    if tls.old_problem:
        pytest.skip(tls.old_problem)
    c = tls.certs
    run_case(tls, daemons, tmp_path, request, tls.ports["old"],
             "amqps://guest:guest@localhost:{port}/", {"ca_cert": f"{c}/ca.pem"},
             r"refused the (TLS )?handshake|TLS version", node="old")


def test_plain_amqp_to_the_tls_port(tls, daemons, tmp_path, request):
    """amqp:// to a TLS listener: the advice is amqps://."""
    run_case(tls, daemons, tmp_path, request, tls.ports["mutual"],
             "amqp://guest:guest@localhost:{port}/", {}, r"amqps://")


def test_amqps_to_the_plain_port(tls, daemons, tmp_path, request):
    """amqps:// to a plain listener: the advice is amqp://."""
    c = tls.certs
    run_case(tls, daemons, tmp_path, request, tls.nodes["mutual"].port,
             "amqps://guest:guest@localhost:{port}/", {"ca_cert": f"{c}/ca.pem"},
             r"amqp://")
