"""proxy-wasm plugins through the lab on DPDK, with curl: the seed's plugins over HTTP/1.1, h2c,
HTTPS and HTTP/2, and a plugin that traps or loops, contained while other requests go on.

The plugins are real wasm modules from wasm-plugins/ (scripts/build-plugins.sh); the appliance
loads them from its config as a user would.
"""
import os
import re
import threading
import time

import pytest

from gwlab import GwLab, plugin, sh, FLOWDOG
from test_intercept import counters, curl, wait_counter
from test_tls import tls_section

USER_ID = "NeverGonnaGiveYouUp:NeverGonnaLetYouDown"

POLICY = "".join(f"""
[[policy.rules]]
name = "inspect-{ports}"
protocol = "tcp"
dst_ports = "{ports}"
action = "intercept"
""" for ports in ("80", "443", "8080-8081")) + """
[plugins]
# Long enough for a debug build on a busy machine; the loop test waits this long.
callback_deadline_ms = 200
"""


@pytest.fixture(scope="module")
def lab():
    with GwLab(f"fp{os.getpid() % 1000}", appliances=1) as lab:
        sh(FLOWDOG, "ca", "init", "--out", str(lab.dir / "ca"))
        lab.root = lab.dir / "ca" / "ca.pem"
        tls = tls_section(lab)
        chain = (plugin("header_case", '{"hosts": ["www.lab.test"]}')
                 + plugin("geneve_headers")
                 + plugin("sts_rickroll")
                 + plugin("misbehave", on_failure="open"))
        lab.start_appliance(1, extra=POLICY + tls + chain)
        lab.start_gwlb([lab.app_ip(1)])
        yield lab
        lab.stop_gwlb()
        out = lab.apps[1]
        lab.stop_appliance(1)
        log = out.output()
        assert "flowdog: plugins: header_case -> geneve_headers -> sts_rickroll -> misbehave" in log, log
        assert re.search(r"flowdog: plugin misbehave \(worker 0\) failed: trap", log), log
        assert re.search(r"flowdog: plugin misbehave \(worker 0\) failed: a callback ran past its 200 ms deadline", log), log
        # The reloads of test_a_plugin_swapped_while_h2load_runs_fails_no_request.
        assert "flowdog: plugins: generation 2: geneve_headers -> sts_rickroll -> misbehave" in log, log
        assert "flowdog: plugins: generation 3: header_case -> geneve_headers" in log, log
        assert re.search(r"flowdog: plugins: reload refused: .*app1.toml.*; generation 3 \(header_case", log), log


def echo(lab, path="/headers", *args):
    port = lab.vars["FDLAB_HTTPECHO_PORT"]
    return curl(lab, "-4", *args, f"http://www.lab.test:{port}{path}").stdout


def test_header_case_and_geneve_headers_reach_the_server(lab):
    head = echo(lab, "/headers", "-H", "X-Gwlb-Flow-Cookie: forged")
    # The server got the request head byte for byte: the name as header_case spelled it, the
    # GWLB metadata as geneve_headers added it, the client's forged header replaced.
    assert "\nuser-agent: curl/" in head and "User-Agent" not in head, head
    assert re.search(r"\nx-gwlb-vpc-endpoint-id: vpce-0c0c0c0c0c0c0c0c0\r?\n", head), head
    assert re.search(r"\nx-gwlb-flow-cookie: [0-9a-f]{8}\r?\n", head) and "forged" not in head, head
    assert "\nx-gwlb-attachment-id: " in head and "\nx-flowdog-worker: 0" in head, head
    assert "\nx-misbehave: no" in head, head


@pytest.mark.parametrize("how", ["http/1.1", "h2c", "https/1.1", "https/2"])
def test_sts_rickroll_rewrites_get_caller_identity(lab, how):
    url, flags = {
        "http/1.1": ("http://sts.lab.test/", []),
        "h2c": ("http://sts.lab.test:8081/", ["--http2-prior-knowledge"]),
        "https/1.1": ("https://sts.lab.test/", ["--http1.1"]),
        "https/2": ("https://sts.lab.test/", ["--http2"]),
    }[how]
    r = curl(lab, "-4", *flags, "--cacert", str(lab.root), "-D", "-", "-X", "POST",
             "--data", "Action=GetCallerIdentity&Version=2011-06-15", url)
    head, body = re.split(r"\r?\n\r?\n", r.stdout, maxsplit=1)
    assert f"<UserId>{USER_ID}</UserId>" in body and "AIDAEXAMPLELABUSER01" not in body, r.stdout
    assert "<Account>123456789012</Account>" in body, body
    m = re.search(r"(?im)^content-length: (\d+)", head)
    if m:  # (curl checks it too: a wrong length fails the transfer)
        assert int(m.group(1)) == len(body.encode()), head


def test_a_trap_and_an_endless_loop_are_contained(lab):
    before = counters(lab)
    stop = threading.Event()
    errors = []

    def steady():
        # Other flows go on while the plugin fails: a request every 50 ms, all must succeed.
        while not stop.is_set():
            r = curl(lab, "-4", "-o", "/dev/null", "-w", "%{http_code}", "http://www.lab.test/", ok=False)
            if r.returncode != 0 or r.stdout != "200":
                errors.append((r.returncode, r.stdout, r.stderr))
            time.sleep(0.05)

    t = threading.Thread(target=steady)
    t.start()
    try:
        for path in ("/headers?trap", "/headers?loop", "/headers?trap"):
            # on_failure = "open": the request goes on as if the plugin were not there.
            head = echo(lab, path)
            assert head.startswith("GET " + path + " "), head
            assert "x-misbehave" not in head, head
        # And the next request finds a fresh instance.
        assert "\nx-misbehave: no" in echo(lab)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    c = wait_counter(lab, "plugin_failures", lambda v: v >= before["plugin_failures"] + 3)
    assert c["plugin_failures"] == before["plugin_failures"] + 3, c


def test_a_plugin_swapped_while_h2load_runs_fails_no_request(lab):
    """The config is rewritten twice while h2load runs (header_case out of the chain, then back
    in): the appliance reloads the chain without a restart, new connections get the new chain,
    and no request fails."""
    path = lab.dir / "app1.toml"
    original = path.read_text()
    runs, stop = [], threading.Event()

    def load():
        # Round after round of new connections, so that some start on each generation.
        while not stop.is_set():
            r = lab.run("client", "h2load", "--h1", "-n", "300", "-c", "10", "http://www.lab.test/",
                        check=False, timeout=120)
            runs.append(r)

    t = threading.Thread(target=load)
    t.start()
    try:
        before = counters(lab)["plugin_reloads"]
        time.sleep(1)
        blocks = original.split("\n[[plugin]]\n")
        without = "\n[[plugin]]\n".join(b for b in blocks if not b.startswith('name = "header_case"'))
        assert 'name = "header_case"' not in without and "geneve_headers" in without
        path.write_text(without)
        c = wait_counter(lab, "plugin_reloads", lambda v: v >= before + 1, timeout=30)
        assert c["plugin_reloads"] == before + 1, c
        head = echo(lab)
        assert "\nUser-Agent: curl/" in head and "\nx-gwlb-flow-cookie: " in head, head
        time.sleep(1)
        path.write_text(original)
        c = wait_counter(lab, "plugin_reloads", lambda v: v >= before + 2, timeout=30)
        assert c["plugin_reloads"] == before + 2, c
        assert "\nuser-agent: curl/" in echo(lab)
        # A broken config is refused: the chain stays as it is.
        path.write_text(original + "\n[[plugin]]\nname = \"broken\"\n")
        time.sleep(3)
        assert counters(lab)["plugin_reloads"] == before + 2
        assert "\nuser-agent: curl/" in echo(lab)
        path.write_text(original)
        time.sleep(1)
    finally:
        stop.set()
        t.join()
    assert len(runs) >= 2, [r.stdout for r in runs]
    for r in runs:
        assert r.returncode == 0 and re.search(r"(\d+) succeeded, 0 failed, 0 errored, 0 timeout", r.stdout), \
            r.stdout + r.stderr
