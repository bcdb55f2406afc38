"""The flow acceptor (the seed's lambda_acceptor, "security groups 2.0") through the lab on DPDK:
the flow_acceptor plugin (wasm) asks the lab's authorizer in the server namespace, over the
appliance's management link, about the first packet of every new flow, TCP (IPv4 and IPv6),
UDP and ICMP alike, fast-path and intercepted flows alike. Denied flows are dropped (TCP gets a
RST); an authorizer that hangs gets the timeout's default; a held flow never holds up another.

The authorizer (scripts/lab_authorizer.py) reads its rules from FDLAB_AUTHORIZER_RULES at every
request and logs every request it gets, so the tests see what the plugin sent.
"""
import json
import os
import re
import subprocess
import time

import pytest

from gwlab import GwLab, plugin
from test_intercept import counters

TIMEOUT_MS = 1500

CONFIG = f"""
[[policy.rules]]
name = "inspect-httpecho"
protocol = "tcp"
dst_ports = "8080"
action = "intercept"

[plugins]
callback_deadline_ms = 2000

[plugins.upstreams]
authorizer = "{{url}}"

[acceptor]
timeout_ms = {TIMEOUT_MS}
default = "accept"
deny = "reset"
""" + plugin("flow_acceptor", '{"upstream": "authorizer", "path": "/authorize", "authority": '
             '"authorizer.lab.test", "timeout_ms": 10000, "on_error": "deny"}') + 'kind = "acceptor"\n' \
    + plugin("header_case")

UDP_ECHO = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[3])))\n"
    "ok=0\n"
    "for i in range(5):\n"
    "    m=b'flowdog-%d' % i\n"
    "    s.sendto(m,(sys.argv[1],int(sys.argv[2])))\n"
    "    try:\n"
    "        d,_=s.recvfrom(2048); ok+= d==m\n"
    "    except socket.timeout: pass\n"
    "print(ok)\n"
)


@pytest.fixture(scope="module")
def lab():
    with GwLab(f"fa{os.getpid() % 1000}", appliances=1) as lab:
        lab.rules = lab.vars["FDLAB_AUTHORIZER_RULES"]
        lab.log = lab.vars["FDLAB_AUTHORIZER_LOG"]
        rules(lab)
        lab.start_appliance(1, extra=CONFIG.replace("{url}", lab.vars["FDLAB_AUTHORIZER_URL"]))
        lab.start_gwlb([lab.app_ip(1)])
        yield lab
        lab.stop_gwlb()
        out = lab.apps[1]
        lab.stop_appliance(1)
        log = out.output()
        assert "flowdog: plugins: flow_acceptor -> header_case" in log, log
        assert not re.search(r"(?m)^flowdog: plugin \S+ (\(worker \d+\) (error|critical|failed)|disabled)", log), log


def rules(lab, deny=(), hang=()):
    with open(lab.rules + ".tmp", "w") as f:
        json.dump({"deny": list(deny), "hang": list(hang)}, f)
    os.replace(lab.rules + ".tmp", lab.rules)


def asked(lab, **match):
    """The authorizer's requests whose input has these dotted values (Source_Port= for
    Source.Port), with its answers."""
    want = {k.replace("_", "."): v for k, v in match.items()}
    out = []
    if not os.path.exists(lab.log):
        return out
    for line in open(lab.log):
        e = json.loads(line)
        doc = e["input"]

        def get(path):
            d = doc
            for p in path.split("."):
                d = d.get(p) if isinstance(d, dict) else None
            return d
        if all(get(k) == v for k, v in want.items()):
            out.append(e)
    return out


def curl(lab, *args, timeout=30):
    return lab.run("client", "curl", "-sS", "--max-time", "20", *args, check=False, timeout=timeout,
                   stdin=subprocess.DEVNULL)


def test_an_accepted_tcp_flow_passes_and_the_authorizer_got_the_seed_input(lab):
    rules(lab)
    ip = lab.vars["FDLAB_SERVER_IP4"]
    r = curl(lab, "--local-port", "41001", "-o", "/dev/null", "-w", "%{http_code}", f"http://{ip}/index.html")
    assert (r.returncode, r.stdout) == (0, "200"), r.stderr
    got = asked(lab, Source_Port=41001)
    # The decision is kept for the flow's life: one question for all its packets.
    assert len(got) == 1, got
    doc = got[0]["input"]
    assert doc["NetworkProtocol"] == "ipv4" and doc["TransportProtocol"] == "tcp", doc
    assert doc["Source"] == {"Address": lab.vars["FDLAB_CLIENT_IP4"], "Port": 41001}, doc
    assert doc["Destination"] == {"Address": ip, "Port": 80}, doc
    assert re.fullmatch(r"vpce-[0-9a-f]{17}", doc["Geneve"]["VpcEndpointId"]), doc
    assert re.fullmatch(r"[0-9a-f]{8}", doc["Geneve"]["FlowCookie"]), doc
    assert got[0]["answer"] is True


def test_a_denied_tcp_flow_gets_a_reset(lab):
    rules(lab, deny=[{"Destination.Port": 8081}])
    t0 = time.time()
    r = curl(lab, "--http2-prior-knowledge", f"http://{lab.vars['FDLAB_SERVER_IP4']}:8081/")
    assert r.returncode == 7, (r.returncode, r.stderr, asked(lab, Destination_Port=8081))  # refused: the RST
    assert time.time() - t0 < TIMEOUT_MS / 1000, "the answer came, not the timeout"
    assert [e["answer"] for e in asked(lab, Destination_Port=8081)] == [False]


def test_ipv6_flows_are_asked_too(lab):
    rules(lab, deny=[{"NetworkProtocol": "ipv6", "Destination.Port": 8081}])
    ip6 = lab.vars["FDLAB_SERVER_IP6"]
    r = curl(lab, "-g", "-o", "/dev/null", "-w", "%{http_code}", f"http://[{ip6}]/index.html")
    assert (r.returncode, r.stdout) == (0, "200"), r.stderr
    r = curl(lab, "-g", "--http2-prior-knowledge", f"http://[{ip6}]:8081/")
    assert r.returncode == 7, (r.returncode, r.stderr)
    seen = asked(lab, NetworkProtocol="ipv6", Destination_Address=ip6)
    assert sorted((e["input"]["Destination"]["Port"], e["answer"]) for e in seen) == [(80, True), (8081, False)]


def test_udp_flows_are_accepted_or_denied(lab):
    denied = lab.vars["FDLAB_SERVER_IP4_IMG"]
    rules(lab, deny=[{"TransportProtocol": "udp", "Destination.Address": denied}])
    port = lab.vars["FDLAB_ECHO_PORT"]
    r = lab.run("client", "python3", "-c", UDP_ECHO, lab.vars["FDLAB_SERVER_IP4"], port, "41002")
    assert r.stdout.strip() == "5", r.stdout + r.stderr
    r = lab.run("client", "python3", "-c", UDP_ECHO, denied, port, "41003")
    assert r.stdout.strip() == "0", r.stdout + r.stderr
    # Five datagrams, one flow, one question each.
    assert [e["answer"] for e in asked(lab, TransportProtocol="udp", Source_Port=41002)] == [True]
    assert [e["answer"] for e in asked(lab, TransportProtocol="udp", Source_Port=41003)] == [False]


def test_icmp_flows_are_accepted_or_denied(lab):
    denied = lab.vars["FDLAB_SERVER_IP4_STS"]
    rules(lab, deny=[{"TransportProtocol": "icmp", "Destination.Address": denied}])
    r = lab.run("client", "ping", "-c", "3", "-i", "0.2", "-W", "2", lab.vars["FDLAB_SERVER_IP4"], check=False)
    assert " 0% packet loss" in r.stdout, r.stdout
    r = lab.run("client", "ping", "-c", "3", "-i", "0.2", "-W", "1", denied, check=False)
    assert " 100% packet loss" in r.stdout, r.stdout
    assert [e["answer"] for e in asked(lab, TransportProtocol="icmp", Destination_Address=denied)] == [False]
    assert any(e["answer"] for e in asked(lab, TransportProtocol="icmp", Destination_Address=lab.vars["FDLAB_SERVER_IP4"]))


def test_intercepted_flows_are_asked_first_then_the_plugins_run(lab):
    rules(lab)
    port = lab.vars["FDLAB_HTTPECHO_PORT"]
    r = curl(lab, "--local-port", "41004", "-A", "lab-agent", f"http://{lab.vars['FDLAB_SERVER_IP4']}:{port}/headers")
    assert r.returncode == 0, r.stderr
    # header_case rewrote the request the server saw: the acceptor let the flow into interception.
    assert "user-agent: lab-agent" in r.stdout, r.stdout
    assert [e["answer"] for e in asked(lab, Source_Port=41004)] == [True]


def test_a_hanging_authorizer_gets_the_default_and_holds_up_no_other_flow(lab):
    rules(lab, hang=[{"Source.Port": 41005}])
    before = counters(lab)["acceptor_timed_out"]
    ip = lab.vars["FDLAB_SERVER_IP4"]
    slow = subprocess.Popen(["ip", "netns", "exec", lab.ns("client"), "curl", "-sS", "--max-time", "20",
                             "--local-port", "41005", "-o", "/dev/null", "-w", "%{http_code}",
                             f"http://{ip}/index.html"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    time.sleep(0.3)
    # While the first flow waits, others are asked and answered.
    r = curl(lab, "--local-port", "41006", "-o", "/dev/null", "-w", "%{http_code}", f"http://{ip}/index.html")
    assert (r.returncode, r.stdout) == (0, "200"), r.stderr
    assert time.time() - t0 < TIMEOUT_MS / 1000, "the other flow waited for the hanging one"
    out, err = slow.communicate(timeout=30)
    elapsed = time.time() - t0
    assert (slow.returncode, out) == (0, "200"), err  # default = "accept"
    assert elapsed >= TIMEOUT_MS / 1000 - 0.3, elapsed
    assert [e["answer"] for e in asked(lab, Source_Port=41005)] == ["hang"]
    assert counters(lab)["acceptor_timed_out"] >= before + 1


def test_the_counters_add_up(lab):
    c = counters(lab)
    assert c["acceptor_asked"] >= 10, c
    # Every flow asked was decided, one way or the other; nobody was turned away unasked.
    assert c["acceptor_accepted"] + c["acceptor_denied"] == c["acceptor_asked"], c
    assert c["acceptor_defaulted"] == 0 and c["acceptor_queue_full"] == 0, c
    # TCP 8081 over IPv4 and IPv6, UDP and ICMP to their denied addresses.
    assert c["acceptor_denied"] == 4, c
    assert c["acceptor_held"] >= c["acceptor_asked"], c
