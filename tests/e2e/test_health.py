"""The appliance's control interface (smoltcp on the control plane) answers GWLB's health
checks on its own address, and turns them to 503 while it drains on SIGTERM.

The checks come from the lab's gw namespace (where the simulator, and so GWLB's health checker,
lives) to the appliance's address over the appliances' bridge: real TCP and HTTP from the kernel.
"""
import os
import signal
import socket
import time

import pytest

from gwlab import GwLab


@pytest.fixture(scope="module")
def lab():
    with GwLab(f"fh{os.getpid() % 1000}", appliances=1) as lab:
        yield lab


def http(lab, path, method="GET", check=True):
    r = lab.run("gw", "curl", "-sS", "--max-time", "5", "-X", method, "-o", "-", "-w", "\n%{http_code}",
                f"http://{lab.app_ip(1)}{path}", check=False, timeout=30)
    if check:
        assert r.returncode == 0, r.stderr
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def tcp_connect(lab, port=80):
    script = ("import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3)\n"
              "s.close()\nprint('connected')\n")
    r = lab.run("gw", "python3", "-c", script, lab.app_ip(1), str(port), check=False, timeout=30)
    return r.returncode == 0 and "connected" in r.stdout


def test_health_checks_answered_then_503_while_draining(lab):
    app = lab.start_appliance(1, drain=4)
    assert tcp_connect(lab)
    assert http(lab, "/healthz") == (200, "ok\n")
    assert http(lab, "/")[0] == 200
    assert http(lab, "/nope")[0] == 404
    assert http(lab, "/healthz", method="HEAD")[0] == 200
    # Several checks at once, as GWLB's nodes send them.
    codes = [http(lab, "/healthz")[0] for _ in range(10)]
    assert codes == [200] * 10

    # Drain: 503 at once, traffic still served, then a clean exit of its own.
    lab.start_gwlb([lab.app_ip(1)])
    app.p.send_signal(signal.SIGTERM)
    t0 = time.time()
    deadline = t0 + 2
    code = 200
    while time.time() < deadline and code != 503:
        code = http(lab, "/healthz", check=False)[0]
    assert code == 503
    r = lab.run("client", "curl", "-sS", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}",
                "http://www.lab.test/", check=False)
    assert r.stdout == "200", r.stderr
    rc = app.p.wait(timeout=20)
    assert rc == 0, app.output()
    assert time.time() - t0 >= 3.5
    lab.apps.pop(1)
    out = app.output() + (app.p.stdout.read() or "")
    assert "draining for 4 s" in out
    sim = lab.stop_gwlb()
    assert sim["targets"][0]["rx_packets"] > 0


def test_second_signal_stops_at_once(lab):
    app = lab.start_appliance(1, drain=60)
    assert http(lab, "/healthz")[0] == 200
    app.p.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert app.p.poll() is None
    t0 = time.time()
    app.p.send_signal(signal.SIGTERM)
    rc = app.p.wait(timeout=15)
    assert rc == 0
    assert time.time() - t0 < 10
    lab.apps.pop(1)
