"""Bad input from the simulator's side (fault injection) is counted by both sides and harms no
other flow: besides every Nth packet, the simulator sends a damaged copy (Geneve version 1,
another flow cookie, an inner packet past 8500 bytes); the clients' transfers still complete.

The oversize copy reaches the appliance cut to net_af_packet's 2 KiB frame, so the appliance drops
it as ipv4_truncated (its total length runs past the frame). With jumbo frames it would come back
and the simulator would drop the return as return_too_long (unit-tested in src/gwlb/sim.rs).
"""
import hashlib
import os

import pytest

from gwlab import GwLab

FAULTS = """
[faults]
malformed_geneve_every = 50
changed_options_every = 70
oversize_every = 90
"""


@pytest.fixture(scope="module")
def lab():
    with GwLab(f"ff{os.getpid() % 1000}", appliances=1) as lab:
        yield lab


def test_faults_are_counted_by_both_sides_and_flows_survive(lab):
    lab.start_appliance(1)
    lab.start_gwlb([lab.app_ip(1)], extra=FAULTS)
    for _ in range(5):
        r = lab.run("client", "curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
                    "--cacert", lab.vars["FDLAB_CA"], "https://www.lab.test/", check=False)
        assert r.stdout == "200", r.stderr
    out = lab.dir / "big.bin"
    lab.run("client", "curl", "-sS", "--max-time", "60", "--cacert", lab.vars["FDLAB_CA"], "-o", str(out),
            "https://www.lab.test/big.bin", timeout=90)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == lab.vars["FDLAB_BIG_SHA256"]
    sim = lab.stop_gwlb()
    app = lab.stop_appliance(1)["total"]
    f = sim["faults_injected"]
    assert min(f.values()) > 10, f
    # The appliance dropped every malformed copy, by cause; it passed the others back, and the
    # simulator dropped those returns, by cause.
    assert app["drop_geneve_bad_version"] == f["malformed_geneve"], (app, f)
    assert sim["drops"]["return_options_changed"] == f["changed_options"], sim
    assert app["drop_ipv4_truncated"] == f["oversize"], (app, f)
    assert app["cookie_changes"] >= 1
    others = {k: v for k, v in sim["drops"].items()
              if v and k not in ("return_options_changed", "inner_not_routable")}
    assert not others, others
