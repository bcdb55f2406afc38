"""Two appliances behind the simulator: flows spread over both; a killed one is marked
unhealthy by the health checks within interval x threshold and new flows go to the survivor;
with `failover = "rebalance"`, a transfer that was on the dead one carries on through the
survivor (the fast path has no state to lose; the survivor sees the flow mid-stream).
"""
import hashlib
import os
import signal
import subprocess
import time

import pytest

from gwlab import GwLab

CHECK = """
[health_check]
protocol = "http"
port = 80
path = "/healthz"
interval_s = 0.5
timeout_s = 0.4
healthy_threshold = 2
unhealthy_threshold = 2
"""


@pytest.fixture(scope="module")
def lab():
    with GwLab(f"f2{os.getpid() % 1000}", appliances=2) as lab:
        yield lab


def curl_ok(lab, url="http://www.lab.test/"):
    r = lab.run("client", "curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", url,
                check=False, timeout=30)
    return r.stdout == "200"


def wait_for(pred, timeout, step=0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time() - t0
        time.sleep(step)
    return None


def kill(lab, i):
    a = lab.apps.pop(i)
    a.p.send_signal(signal.SIGKILL)
    a.p.wait()


def test_spread_then_failover(lab):
    lab.start_appliance(1)
    lab.start_appliance(2)
    lab.start_gwlb([lab.app_ip(1), lab.app_ip(2)], extra=CHECK)
    assert wait_for(lambda: lab.gwlb_counters()["targets"][1]["checks_passed"] >= 2, 10) is not None
    assert all(curl_ok(lab) for _ in range(30))
    time.sleep(1.2)  # the counters file is rewritten every second
    c = lab.gwlb_counters()
    flows = [t["flows"] for t in c["targets"]]
    assert min(flows) >= 3, flows
    assert all(t["healthy"] for t in c["targets"])

    kill(lab, 2)
    took = wait_for(lambda: not lab.gwlb_counters()["targets"][1]["healthy"], 10)
    assert took is not None, lab.gwlb_counters()
    # interval x unhealthy threshold = 1 s, plus the check in flight and the counters file's 1 s.
    assert took < 3.5, took
    time.sleep(1.2)
    before = [t["flows"] for t in lab.gwlb_counters()["targets"]]
    assert all(curl_ok(lab) for _ in range(20))
    time.sleep(1.2)
    after = [t["flows"] for t in lab.gwlb_counters()["targets"]]
    assert after[1] == before[1], (before, after)
    assert after[0] >= before[0] + 20, (before, after)
    sim = lab.stop_gwlb()
    drops = {k: v for k, v in sim["drops"].items() if v and k != "inner_not_routable"}
    assert not drops, drops
    lab.stop_appliance(1)


def test_rebalance_moves_a_live_transfer_to_the_survivor(lab):
    lab.start_appliance(1)
    lab.start_appliance(2)
    lab.start_gwlb([lab.app_ip(1), lab.app_ip(2)], extra=CHECK + '\n[flows]\nfailover = "rebalance"\n')
    out = lab.dir / "big.bin"
    dl = subprocess.Popen(["ip", "netns", "exec", lab.ns("client"), "curl", "-sS", "--max-time", "60",
                           "--limit-rate", "3M", "--cacert", lab.vars["FDLAB_CA"], "-o", str(out),
                           "https://www.lab.test/big.bin"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    a = [t["tx_packets"] for t in lab.gwlb_counters()["targets"]]
    time.sleep(1.2)
    b = [t["tx_packets"] for t in lab.gwlb_counters()["targets"]]
    busy = 0 if b[0] - a[0] > b[1] - a[1] else 1
    assert b[busy] - a[busy] > 100, (a, b)
    assert dl.poll() is None, "the download finished before the failover"
    kill(lab, busy + 1)
    _, err = dl.communicate(timeout=90)
    assert dl.returncode == 0, err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == lab.vars["FDLAB_BIG_SHA256"]
    sim = lab.stop_gwlb()
    assert sim["flows_rebalanced"] >= 1, sim
    assert not sim["targets"][busy]["healthy"]
    survivor = lab.stop_appliance(2 - busy)
    assert survivor["total"]["flows_midstream"] >= 1, survivor["total"]


@pytest.mark.parametrize("path,healthy", [("/", True), ("/nope", False)])
def test_https_health_checks_against_nginx(lab, path, healthy):
    """HTTPS checks (certificate not verified, as GWLB's) against the lab's nginx as a target."""
    server = lab.vars["FDLAB_SERVER_IP4"]
    check = f"""
[health_check]
protocol = "https"
port = 443
path = "{path}"
interval_s = 0.3
timeout_s = 0.3
healthy_threshold = 2
unhealthy_threshold = 2
"""
    lab.start_gwlb([server], extra=check)
    time.sleep(2.5)
    t = lab.stop_gwlb()["targets"][0]
    assert t["healthy"] == healthy, t
    if healthy:
        assert t["checks_passed"] >= 4 and t["checks_failed"] == 0, t
    else:
        assert "HTTP 404" in t["last_check_error"], t
