"""Interception through the lab: the client's HTTP flows are terminated by the appliance (a
userspace TCP pair per flow, hyper on both legs, the built-in rewrite between them) inside the
GWLB tunnel, with real curl, h2load, a WebSocket client and nginx / the lab's echo servers as
peers. The simulator checks every packet the appliance sends into a flow (options, target)."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from gwlab import GwLab, Proc, plugin

HERE = os.path.dirname(os.path.abspath(__file__))

INTERCEPT = """
[[policy.rules]]
name = "web"
protocol = "tcp"
dst_ports = "80"
action = "intercept"

[[policy.rules]]
name = "lab-services"
protocol = "tcp"
dst_ports = "8080-8081"
action = "intercept"

[[policy.rules]]
name = "websocket"
protocol = "tcp"
dst_ports = "8765"
action = "intercept"

[[policy.rules]]
name = "closed-port"
protocol = "tcp"
dst_ports = "9"
action = "intercept"

[intercept]
# The unreachable test's upstream SYNs stop after this (the client gave up long before).
connect_timeout_secs = 10
""" + plugin("header_case", '{"hosts": ["www.lab.test"]}')


@pytest.fixture(scope="module")
def lab():
    with GwLab(f"fi{os.getpid() % 1000}", appliances=1) as lab:
        lab.start_appliance(1, extra=INTERCEPT)
        lab.start_gwlb([lab.app_ip(1)])
        yield lab
        gw = lab.stop_gwlb()
        drops = {k: v for k, v in gw["drops"].items() if v and k != "inner_not_routable"}
        assert not drops, f"the simulator refused packets the appliance sent: {drops}"


def curl(lab, *args, timeout=120, ok=True):
    r = lab.run("client", "curl", "-sS", "--max-time", "100", *args, check=False, timeout=timeout)
    if ok:
        assert r.returncode == 0, f"curl {' '.join(args)}: {r.stderr}"
    return r


def counters(lab):
    """The appliance's live counters, from a rewrite of the file (every second) that started
    after this call, so they include everything done before it."""
    path = lab.apps[1].counters_path
    t0 = time.time()
    deadline = t0 + 10
    while (not path.exists() or path.stat().st_mtime < t0 + 0.05) and time.time() < deadline:
        time.sleep(0.1)
    return json.loads(path.read_text())["total"]


def wait_counter(lab, name, pred, timeout=20):
    deadline = time.time() + timeout
    while True:
        c = counters(lab)
        if pred(c[name]) or time.time() > deadline:
            return c
        time.sleep(0.5)


@pytest.mark.parametrize("family", ["-4", "-6"])
def test_http1_rewrite_seen_by_server_and_client(lab, family):
    port = lab.vars["FDLAB_HTTPECHO_PORT"]
    # The configured host: the request reaches the server with a lowercase user-agent name.
    r = curl(lab, family, "-D", "-", "-H", "X-Mixed-Case: yes", f"http://www.lab.test:{port}/headers")
    # (text mode: the CRLFs read as newlines)
    head, body = r.stdout.split("\n\n", 1)
    assert "\nx-flowdog: 1" in head.lower()
    assert "\nuser-agent: curl/" in body and "User-Agent" not in body, body
    # Another host (the server's address) keeps the header case the client sent.
    ip = lab.vars["FDLAB_SERVER_IP4"] if family == "-4" else f"[{lab.vars['FDLAB_SERVER_IP6']}]"
    r = curl(lab, family, "-H", "X-Mixed-Case: yes", f"http://{ip}:{port}/headers")
    assert "\nUser-Agent: curl/" in r.stdout and "\nX-Mixed-Case: yes" in r.stdout, r.stdout


def test_nginx_page_and_image_through_the_proxy(lab):
    r = curl(lab, "-4", "-D", "-", "-o", "/dev/null", "http://www.lab.test/")
    assert r.stdout.startswith("HTTP/1.1 200") and "x-flowdog: 1" in r.stdout.lower()
    png = lab.dir / "cat.png"
    curl(lab, "-4", "-o", str(png), "http://img.lab.test/cat.png")
    assert hashlib.sha256(png.read_bytes()).hexdigest() == lab.vars["FDLAB_PNG_SHA256"]


def test_h2c_prior_knowledge(lab):
    port = lab.vars["FDLAB_H2C_PORT"]
    png = lab.dir / "cat2.png"
    r = curl(lab, "--http2-prior-knowledge", "-D", "-", "-o", str(png), f"http://img.lab.test:{port}/cat.png")
    assert r.stdout.startswith("HTTP/2 200"), r.stdout
    assert "x-flowdog: 1" in r.stdout
    assert hashlib.sha256(png.read_bytes()).hexdigest() == lab.vars["FDLAB_PNG_SHA256"]


def test_keep_alive_many_requests_on_one_connection(lab):
    before = counters(lab)
    urls = [a for i in range(50) for a in ("-o", "/dev/null", f"http://www.lab.test/?n={i}")]
    r = curl(lab, "-4", "-w", "%{http_code} %{num_connects}\n", *urls)
    lines = r.stdout.split()
    assert lines[0::2] == ["200"] * 50
    assert sum(int(n) for n in lines[1::2]) == 1, "curl reused one connection"
    after = wait_counter(lab, "http_requests", lambda v: v >= before["http_requests"] + 50)
    assert after["http_requests"] - before["http_requests"] == 50
    assert after["tcp_pairs_created"] - before["tcp_pairs_created"] == 1


def test_100mb_download_and_upload(lab):
    out = lab.dir / "big100.bin"
    curl(lab, "-4", "-o", str(out), "http://www.lab.test/big100.bin", timeout=300)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == lab.vars["FDLAB_BIG100_SHA256"]
    port = lab.vars["FDLAB_HTTPECHO_PORT"]
    for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
        r = curl(lab, "-4", "-T", str(out), *extra, f"http://www.lab.test:{port}/upload", timeout=300)
        assert json.loads(r.stdout) == {"sha256": digest, "bytes": 100 * 1024 * 1024}
    out.unlink()


def test_refused_port_gives_connection_refused_at_once(lab):
    t = time.time()
    r = curl(lab, "-4", "--connect-timeout", "10", f"http://www.lab.test:{lab.vars['FDLAB_CLOSED_PORT']}/", ok=False)
    assert r.returncode == 7, (r.returncode, r.stderr)
    assert time.time() - t < 3
    assert counters(lab)["tcp_upstream_refused"] >= 1 or wait_counter(
        lab, "tcp_upstream_refused", lambda v: v >= 1)["tcp_upstream_refused"] >= 1


def test_unreachable_server_times_out_like_without_the_appliance(lab):
    t = time.time()
    r = curl(lab, "--connect-timeout", "3", f"http://{lab.vars['FDLAB_BLACKHOLE_IP']}/", ok=False)
    assert r.returncode == 28, (r.returncode, r.stderr)
    assert time.time() - t >= 2.9


def websocket_python():
    for py in ("/usr/bin/python3", sys.executable):
        if shutil.which(py) and subprocess.run([py, "-c", "import websockets"], capture_output=True).returncode == 0:
            return py
    pytest.fail("no python3 with the websockets package (scripts/setup.sh installs python3-websockets)")


def test_websocket_echo(lab):
    before = counters(lab)
    url = f"ws://www.lab.test:{lab.vars['FDLAB_WS_PORT']}/"
    r = lab.run("client", websocket_python(), os.path.join(HERE, "ws_client.py"), url, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    after = wait_counter(lab, "ws_messages", lambda v: v >= before["ws_messages"] + 8)
    assert after["ws_connections"] == before["ws_connections"] + 1
    # Four messages each way, one of them in three fragments.
    assert after["ws_messages"] - before["ws_messages"] == 8
    assert after["ws_errors"] == before["ws_errors"]


def test_malformed_request_gets_400_and_other_flows_go_on(lab):
    out = lab.dir / "big-during-400.bin"
    dl = Proc(lab.ns("client"), ["curl", "-4", "-sS", "--limit-rate", "20M", "-o", str(out),
                                  "http://www.lab.test/big.bin"])
    time.sleep(0.3)
    script = (
        "import socket; s = socket.create_connection(('198.18.2.10', 80), timeout=10); "
        "s.sendall(b'GARBAGE \\x01 nonsense\\r\\n\\r\\n'); d = b''\n"
        "while True:\n"
        "    b = s.recv(4096)\n"
        "    if not b: break\n"
        "    d += b\n"
        "print(d.decode(errors='replace'))"
    )
    r = lab.run("client", sys.executable, "-c", script, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("HTTP/1.1 400"), r.stdout
    assert dl.p.wait(timeout=120) == 0, dl.output()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == lab.vars["FDLAB_BIG_SHA256"]
    assert counters(lab)["http_bad_requests"] >= 1


def test_h2load_many_connections_no_errors_no_leak(lab):
    port = lab.vars["FDLAB_H2C_PORT"]
    r = lab.run("client", "h2load", "-n", "4000", "-c", "200", "-m", "4", f"http://198.18.2.10:{port}/",
                check=False, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4000 succeeded, 0 failed, 0 errored, 0 timeout" in r.stdout, r.stdout
    r = lab.run("client", "h2load", "--h1", "-n", "2000", "-c", "100", f"http://198.18.2.10/",
                check=False, timeout=180)
    assert "2000 succeeded, 0 failed, 0 errored, 0 timeout" in r.stdout, r.stdout
    c = wait_counter(lab, "tcp_pairs_active", lambda v: v == 0, timeout=30)
    assert c["tcp_pairs_active"] == 0, "every TCP pair was freed"
    assert c["tcp_pairs_created"] == c["tcp_pairs_closed"] + c["tcp_pairs_timed_out"] + c["tcp_upstream_refused"] \
        + c["tcp_upstream_unreachable"], c


def test_when_full_pass_and_refuse(lab):
    """With one TCP pair allowed, a second connection while the first is open goes on the fast
    path ("pass": nginx answers without x-flowdog) or gets a RST ("refuse")."""
    for mode in ("pass", "refuse"):
        lab.stop_appliance(1)
        lab.start_appliance(1, extra=INTERCEPT.replace(
            "[intercept]", f"[intercept]\nmax_flows_per_worker = 1\nwhen_full = \"{mode}\""))
        time.sleep(1)
        hold = Proc(lab.ns("client"), [websocket_python(), "-c",
                    "import asyncio, websockets\n"
                    "async def m():\n"
                    f"    async with websockets.connect('ws://www.lab.test:{lab.vars['FDLAB_WS_PORT']}/') as w:\n"
                    "        print('open', flush=True); await asyncio.sleep(8)\n"
                    "asyncio.run(m())"], ready="open", timeout=20)
        r = curl(lab, "-4", "-D", "-", "-o", "/dev/null", "http://www.lab.test/", ok=False)
        if mode == "pass":
            assert r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200"), r.stdout + r.stderr
            assert "x-flowdog" not in r.stdout.lower()
        else:
            assert r.returncode in (7, 56), (r.returncode, r.stderr)
        hold.kill()
        c = wait_counter(lab, "intercept_over_limit", lambda v: v >= 1)
        assert c["intercept_over_limit"] >= 1
    lab.stop_appliance(1)
    lab.start_appliance(1, extra=INTERCEPT)
