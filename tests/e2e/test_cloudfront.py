"""cloudfront_functions through the lab on DPDK: the seed's rick.js, unchanged, in the plugin's
JavaScript engine. curl to www.youtube.com (the lab's nginx, by the client's hosts file) over
HTTP and HTTPS gets the 302 to the only video; the video itself reaches the server.
"""
import os
import pathlib
import re

import pytest

from gwlab import GwLab, plugin, sh, FLOWDOG
from test_intercept import curl
from test_tls import tls_section

VIDEO = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"

# The seed article's cloudfront_functions/rick.js, verbatim.
RICK_JS = (pathlib.Path(__file__).resolve().parents[2] / "wasm-plugins" / "cloudfront_functions"
           / "rick.js").read_text()

POLICY = "".join(f"""
[[policy.rules]]
name = "inspect-{port}"
protocol = "tcp"
dst_ports = "{port}"
action = "intercept"
""" for port in ("80", "443"))


@pytest.fixture(scope="module")
def lab():
    with GwLab(f"fcf{os.getpid() % 1000}", appliances=1) as lab:
        sh(FLOWDOG, "ca", "init", "--out", str(lab.dir / "ca"))
        lab.root = lab.dir / "ca" / "ca.pem"
        # The script as a TOML multi-line literal string: rick.js has quotes and newlines.
        assert "'''" not in RICK_JS
        chain = plugin("cloudfront_functions") + f"configuration = '''\n{RICK_JS}'''\n"
        # The module is large (a JavaScript engine): compiled once, then from wasmtime's cache.
        cache = os.path.join(os.path.dirname(FLOWDOG), "e2e-wasm-cache")
        settings = f'\n[plugins]\ncache_dir = "{cache}"\n'
        lab.start_appliance(1, extra=POLICY + settings + tls_section(lab) + chain)
        lab.start_gwlb([lab.app_ip(1)])
        yield lab
        lab.stop_gwlb()
        out = lab.apps[1]
        lab.stop_appliance(1)
        log = out.output()
        assert "flowdog: plugins: cloudfront_functions" in log, log
        assert not re.search(r"plugin cloudfront_functions .*(failed|goes on unchanged)", log), log


def get(lab, url, *args):
    """curl's status line of `url`: 'CODE REDIRECT-URL', then the body."""
    r = curl(lab, "-4", "--cacert", str(lab.root), "-w", "\n%{http_code} %{redirect_url}", *args, url)
    body, _, status = r.stdout.rpartition("\n")
    return status.strip(), body


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_youtube_gets_the_only_video(lab, scheme):
    status, _ = get(lab, f"{scheme}://www.youtube.com/")
    assert status == f"302 {VIDEO}", status
    status, _ = get(lab, f"{scheme}://www.youtube.com/watch?v=9bZkp7q19f0")
    assert status == f"302 {VIDEO}", status


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_only_video_reaches_the_server(lab, scheme):
    status, body = get(lab, f"{scheme}://www.youtube.com/watch?v=dQw4w9WgXcQ")
    assert (status, body) == ("200", "watch v=dQw4w9WgXcQ\n"), (status, body)
    # What the video's page loads (its Referer) goes on too; other hosts are untouched.
    status, body = get(lab, f"{scheme}://www.youtube.com/echo", "-e", VIDEO)
    assert status == "200" and "host=www.youtube.com" in body, (status, body)
    status, body = get(lab, f"{scheme}://www.lab.test/echo")
    assert status == "200" and "host=www.lab.test" in body, (status, body)
