"""TLS interception through the lab: the appliance on DPDK behind the GWLB simulator connects
upstream first (nginx's HTTPS hosts, verified against the lab's CA), mints a leaf from a root made
by `flowdog ca init`, and proxies HTTP/1.1 and HTTP/2 over TLS through the same hook as
cleartext. Real curl, openssl s_client, h2load and tshark are the peers."""
import os
import re
import subprocess
import time

import pytest

from gwlab import FLOWDOG, GwLab, sh
from test_intercept import counters, curl

TLS_POLICY = """
[[policy.rules]]
name = "https"
protocol = "tcp"
dst_ports = "443"
action = "intercept"

[[policy.rules]]
name = "echo-as-a-bad-tls-server"
protocol = "tcp"
dst_ports = "7"
action = "intercept"

"""


def tls_section(lab, on_untrusted="alert"):
    ca = lab.dir / "ca"
    return f"""
[tls]
root_cert = "{ca}/ca.pem"
root_key = "{ca}/ca.key"
upstream_system_roots = false
upstream_ca_file = "{lab.vars['FDLAB_UPSTREAM_CA']}"
exclude_sni = ["{lab.vars['FDLAB_HOST_BANK']}"]
keylog_file = "{lab.dir}/keys.log"
on_untrusted_upstream = "{on_untrusted}"
leaf_cache_size = 4
"""


@pytest.fixture(scope="module")
def lab():
    with GwLab(f"ft{os.getpid() % 1000}", appliances=1) as lab:
        sh(FLOWDOG, "ca", "init", "--out", str(lab.dir / "ca"))
        lab.root = lab.dir / "ca" / "ca.pem"
        lab.start_appliance(1, extra=TLS_POLICY + tls_section(lab))
        lab.start_gwlb([lab.app_ip(1)])
        yield lab
        gw = lab.stop_gwlb()
        drops = {k: v for k, v in gw["drops"].items() if v and k != "inner_not_routable"}
        assert not drops, f"the simulator refused packets the appliance sent: {drops}"


def s_client(lab, host, *extra, port=443, cafile=None, servername=True):
    """openssl s_client from the client namespace: its output (chain, verification)."""
    args = ["openssl", "s_client", "-connect", f"{lab.vars['FDLAB_SERVER_IP4']}:{port}", "-showcerts",
            "-CAfile", str(cafile or lab.root), *extra]
    if servername:
        args += ["-servername", host]
    r = lab.run("client", "timeout", "30", *args, input="Q\n", check=False, timeout=60)
    return r


def certs_in(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", text, re.S)


def x509(pem, *args):
    return subprocess.run(["openssl", "x509", "-noout", *args], input=pem, capture_output=True, text=True,
                          check=True).stdout


def test_https_http1_and_http2_through_the_hook(lab):
    for proto, flag in (("HTTP/1.1", "--http1.1"), ("HTTP/2", "--http2")):
        r = curl(lab, "-4", flag, "--cacert", str(lab.root), "-D", "-", "https://www.lab.test/echo")
        head, body = r.stdout.split("\n\n", 1) if "\n\n" in r.stdout else r.stdout.split("\r\n\r\n", 1)
        assert head.startswith(proto + " 200"), head
        assert "x-flowdog: 1" in head.lower(), head
        assert "host=www.lab.test" in body and "https=on" in body, body
        # The server saw the client's own address (the upstream leg stands in for it).
        assert f"remote={lab.vars['FDLAB_CLIENT_IP4']}:" in body, body
    c = counters(lab)
    assert c["tls_intercepted"] >= 2 and c["tls_h2"] >= 1, c


def test_chain_root_intermediate_leaf_mirrors_nginx(lab):
    r = s_client(lab, "www.lab.test", "-verify_return_error")
    assert "Verify return code: 0 (ok)" in r.stdout, r.stdout + r.stderr
    chain = certs_in(r.stdout)
    assert len(chain) == 2, r.stdout  # leaf and intermediate; the client has the root
    leaf, inter = chain
    assert "CN = flowdog intermediate" in x509(inter, "-subject")
    assert "CN = flowdog root CA" in x509(inter, "-issuer")
    assert "CA:TRUE, pathlen:0" in x509(inter, "-text")
    # The leaf carries the names of nginx's own certificate for that host.
    r_nginx = subprocess.run(["ip", "netns", "exec", lab.ns("server"), "openssl", "s_client", "-connect",
                              f"{lab.vars['FDLAB_SERVER_IP4']}:443", "-servername", "www.lab.test", "-showcerts"],
                             input="Q\n", capture_output=True, text=True, timeout=30)
    nginx_leaf = certs_in(r_nginx.stdout)[0]
    want = x509(nginx_leaf, "-ext", "subjectAltName").splitlines()[1].strip()
    got = x509(leaf, "-ext", "subjectAltName").splitlines()[1].strip()
    assert sorted(want.split(", ")) == sorted(got.split(", ")), (want, got)
    assert "flowdog" in x509(leaf, "-issuer")


def test_no_sni_uses_the_upstream_certificate_names(lab):
    ip = lab.vars["FDLAB_SERVER_IP4"]
    r = curl(lab, "-4", "--cacert", str(lab.root), f"https://{ip}/echo")
    assert f"host={ip}" in r.stdout, r.stdout


def test_untrusted_and_expired_upstreams_get_an_alert(lab):
    for host, alert in ((lab.vars["FDLAB_HOST_EXPIRED"], "alert certificate expired"),
                        (lab.vars["FDLAB_HOST_UNTRUSTED"], "alert unknown ca")):
        # (curl says "SSL certificate verification failed" for the first: openssl names the alert.)
        r = curl(lab, "-4", "--cacert", str(lab.root), f"https://{host}/echo", ok=False)
        assert r.returncode in (35, 60), (host, r.stderr)
        r = s_client(lab, host)
        assert alert in r.stderr and "BEGIN CERTIFICATE" not in r.stdout, (host, r.stdout, r.stderr)
    c = counters(lab)
    assert c["tls_upstream_rejected"] >= 2, c
    # (The log lines are checked when the appliance stops, in test_zz_502_page_when_configured.)


def test_excluded_sni_is_relayed_untouched(lab):
    host = lab.vars["FDLAB_HOST_BANK"]
    # The client sees nginx's own certificate, which only the lab's CA verifies.
    r = curl(lab, "-4", "--cacert", lab.vars["FDLAB_UPSTREAM_CA"], f"https://{host}/echo")
    assert f"host={host}" in r.stdout
    r = s_client(lab, host, cafile=lab.vars["FDLAB_UPSTREAM_CA"])
    assert "O = lab bank" in r.stdout and "Verify return code: 0 (ok)" in r.stdout, r.stdout
    assert counters(lab)["tls_excluded"] >= 2


def test_tshark_decrypts_the_client_side_with_the_key_log(lab):
    pcap = lab.dir / "client.pcap"
    cap = subprocess.Popen(["ip", "netns", "exec", lab.ns("client"), "tcpdump", "-i", "eth0", "-U", "-w", str(pcap),
                            "tcp port 443"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        curl(lab, "-4", "--http1.1", "--cacert", str(lab.root), "https://www.lab.test/echo?seen=by-tshark")
        curl(lab, "-4", "--http2", "--cacert", str(lab.root), "https://www.lab.test/echo?seen=by-tshark-h2")
        time.sleep(1.0)
    finally:
        cap.terminate()
        cap.wait(timeout=10)
    # The secrets are written by the control plane shortly after the handshakes.
    keylog = lab.dir / "keys.log"
    deadline = time.time() + 10
    while time.time() < deadline and "CLIENT_TRAFFIC_SECRET_0" not in keylog.read_text():
        time.sleep(0.2)
    assert oct(keylog.stat().st_mode & 0o777) == "0o600"
    r = subprocess.run(["tshark", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}", "-Y", "http or http2",
                        "-T", "fields", "-e", "http.request.uri", "-e", "http2.header.value"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "/echo?seen=by-tshark" in r.stdout, r.stdout
    assert "/echo?seen=by-tshark-h2" in r.stdout, r.stdout


def test_bad_client_hellos_end_only_their_flow(lab):
    ip = lab.vars["FDLAB_SERVER_IP4"]
    script = f"""
import socket, time
def send(data, wait=True):
    s = socket.create_connection(("{ip}", 443), timeout=10)
    s.sendall(data)
    if not wait:
        s.close(); return b""
    try:
        got = s.recv(100)
    except OSError:
        got = b"reset"
    s.close()
    return got
# A handshake record that is not a ClientHello (type 2, ServerHello).
print(send(bytes([22, 3, 1, 0, 4, 2, 0, 0, 0])).hex())
# A ClientHello too short for its own random (malformed).
print(send(bytes([22, 3, 1, 0, 9, 1, 0, 0, 5, 3, 3, 0, 0, 0])).hex())
# A client that hangs up halfway through its ClientHello.
send(bytes([22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3]) + bytes(20), wait=False)
"""
    r = lab.run("client", "python3", "-c", script, timeout=60)
    lines = r.stdout.split()
    # Fatal alerts: unexpected_message (10), decode_error (50).
    assert lines[0].startswith("15030300020" + "20a"), lines
    assert lines[1].startswith("1503030002" + "0232"), lines
    time.sleep(1)
    c = counters(lab)
    assert c["tls_bad_client_hello"] >= 2 and c["tls_client_gone"] >= 1, c
    # Others are served as before.
    curl(lab, "-4", "--cacert", str(lab.root), "https://www.lab.test/echo")


def test_an_upstream_that_answers_garbage(lab):
    # The lab's echo server on port 7 sends the ClientHello back: not a ServerHello.
    r = s_client(lab, "www.lab.test", port=7)
    assert "alert handshake failure" in r.stderr or "handshake failure" in r.stdout + r.stderr, r.stderr
    assert counters(lab)["tls_upstream_failed"] >= 1


def test_closed_connections_leave_nothing_behind(lab):
    """Each side's last FIN is acknowledged before the pair goes: no socket is left in LAST-ACK
    retransmitting into a pair that no longer exists."""
    before = counters(lab)["tcp_no_pair"]
    for _ in range(10):
        curl(lab, "-4", "--http1.1", "--cacert", str(lab.root), "-H", "Connection: close", "-o", "/dev/null",
             "https://www.lab.test/echo")
    time.sleep(1)
    for role in ("client", "server"):
        r = lab.run(role, "ss", "-Htan", "state", "last-ack")
        assert r.stdout.strip() == "", (role, r.stdout)
    assert counters(lab)["tcp_no_pair"] == before


def test_h2load_hundreds_of_connections_to_several_hosts(lab):
    hosts = lab.vars["FDLAB_HOSTS_MANY"].split()
    procs = [subprocess.Popen(["ip", "netns", "exec", lab.ns("client"), "h2load", "-c", "40", "-n", "400", "-m", "4",
                               f"https://{h}/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for h in hosts[:6]]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                      out)
        assert m and m.group(4) == "400" and m.group(5) == "0" and m.group(6) == "0", out
        assert "status codes: 400 2xx" in out, out
    c = json_control(lab)
    # 240 connections, one upstream certificate for all the h* names: one leaf, cached.
    assert c["tls_leaf_cache_entries"] <= 4, c
    assert c["tls_leaf_cache_hits"] >= 200, c


def json_control(lab):
    import json
    counters(lab)  # waits for a fresh file
    return json.loads(lab.apps[1].counters_path.read_text())["control"]


def restart(lab, extra):
    """Stops the appliance (returning what it logged) and starts it again with `extra`."""
    old = lab.apps[1]
    lab.stop_appliance(1)
    lab.start_appliance(1, extra=extra)
    time.sleep(1)
    return old.output()


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
           "AWS_EC2_METADATA_DISABLED": "true"}


def test_zy_a_root_whose_key_stays_in_kms(lab, monkeypatch):
    """The root made through the KMS emulator (moto's server, in the appliance's namespace, where
    the appliance reaches it): the appliance has KMS sign its intermediate at start, and curl
    verifies leaf -> intermediate -> the KMS root."""
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    ns = lab.app_ns(1)
    moto = subprocess.Popen(["ip", "netns", "exec", ns, "moto_server", "-H", "127.0.0.1", "-p", "4566"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = "http://127.0.0.1:4566"
        make_key = f"""
import boto3, time
for _ in range(100):
    try:
        kms = boto3.client("kms", endpoint_url="{endpoint}", region_name="us-east-1")
        print(kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"])
        break
    except Exception:
        time.sleep(0.2)
"""
        arn = sh("ip", "netns", "exec", ns, "python3", "-c", make_key).stdout.strip()
        assert arn.startswith("arn:aws:kms:"), arn
        kdir = lab.dir / "kmsca"
        sh("ip", "netns", "exec", ns, FLOWDOG, "ca", "init", "--kms-key-id", arn, "--kms-endpoint-url", endpoint,
           "--kms-region", "us-east-1", "--out", str(kdir))
        assert not (kdir / "ca.key").exists()
        section = tls_section(lab).replace(f'root_key = "{lab.dir}/ca/ca.key"',
                                           f'root_kms_key_id = "{arn}"\nkms_endpoint_url = "{endpoint}"\n'
                                           'kms_region = "us-east-1"')
        section = section.replace(f'root_cert = "{lab.dir}/ca/ca.pem"', f'root_cert = "{kdir}/ca.pem"')
        lab.log_before_kms = restart(lab, TLS_POLICY + section)
        r = curl(lab, "-4", "--http2", "--cacert", str(kdir / "ca.pem"), "-D", "-", "https://www.lab.test/echo")
        assert r.stdout.startswith("HTTP/2 200") and "x-flowdog: 1" in r.stdout, r.stdout
        r = s_client(lab, "www.lab.test", "-verify_return_error", cafile=kdir / "ca.pem")
        assert "Verify return code: 0 (ok)" in r.stdout, r.stdout + r.stderr
        # The local root no longer verifies: the chain really ends at the KMS root.
        r = curl(lab, "-4", "--cacert", str(lab.root), "https://www.lab.test/echo", ok=False)
        assert r.returncode == 60, r.stderr
    finally:
        moto.terminate()
        moto.wait(timeout=10)


def test_zz_502_page_when_configured(lab):
    log = lab.log_before_kms
    # The control plane logged each failure with the host and the reason.
    assert re.search(r"flowdog: tls: upstream certificate rejected: host=expired\.lab\.test client=198\.18\.1\.10:\d+ "
                     r"server=198\.18\.2\.10:443: invalid peer certificate: certificate expired", log), log[-3000:]
    assert "flowdog: tls: upstream handshake failed: host=www.lab.test" in log, log[-3000:]
    assert "flowdog: tls: bad ClientHello" in log, log[-3000:]
    restart(lab, TLS_POLICY + tls_section(lab, on_untrusted="502"))
    host = lab.vars["FDLAB_HOST_EXPIRED"]
    r = curl(lab, "-4", "--cacert", str(lab.root), "-D", "-", f"https://{host}/echo")
    assert r.stdout.startswith("HTTP/1.1 502"), r.stdout
    assert "failed verification" in r.stdout and "expired" in r.stdout.lower(), r.stdout
