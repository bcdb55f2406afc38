"""The seed's account_id_emf and upsidedown plugins through the lab on DPDK, with curl over
HTTP and HTTPS: SigV4-signed requests leave a CloudWatch EMF record with the signer's account in
the appliance's log; the images img.lab.test serves come back rotated 180° and blurred.

The plugins are the real wasm modules of wasm-plugins/ (scripts/build-plugins.sh), one chain.
"""
import io
import json
import os
import re

import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat

from gwlab import GwLab, plugin, sh, FLOWDOG
from test_intercept import curl
from test_tls import tls_section

POLICY = "".join(f"""
[[policy.rules]]
name = "inspect-{port}"
protocol = "tcp"
dst_ports = "{port}"
action = "intercept"
""" for port in ("80", "443")) + """
[plugins]
# A debug build on a busy two-core machine; the lab's images are small.
callback_deadline_ms = 2000
"""

# Access key ids whose accounts are known (widely cited decodings).
KEYS = {"ASIAQNZGKIQY56JQ7WML": "029608264753", "ASIAY34FZKBOKMUTVV7A": "609629065308"}
W, H = 64, 48
RED = (230, 30, 30)


def fixture_image():
    """A black and white checkerboard of 4-pixel squares, the bottom-right quarter solid red:
    a 180° turn puts red top-left, a blur turns the squares grey."""
    img = Image.new("RGB", (W, H))
    px = img.load()
    for y in range(H):
        for x in range(W):
            px[x, y] = RED if x >= W // 2 and y >= H // 2 else ((255,) * 3 if (x // 4 + y // 4) % 2 else (0,) * 3)
    return img


@pytest.fixture(scope="module")
def lab():
    with GwLab(f"fs{os.getpid() % 1000}", appliances=1) as lab:
        sh(FLOWDOG, "ca", "init", "--out", str(lab.dir / "ca"))
        lab.root = lab.dir / "ca" / "ca.pem"
        # The images, where nginx serves img.lab.test from.
        img_dir = os.path.join(lab.vars["FDLAB_STATE"], "img")
        for ext, fmt in (("png", "PNG"), ("jpg", "JPEG"), ("gif", "GIF")):
            path = os.path.join(img_dir, f"seed.{ext}")
            fixture_image().save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
            os.chmod(path, 0o644)
        chain = plugin("account_id_emf", '{"namespace": "flowdog-lab"}') + plugin("upsidedown", '{"sigma": 2}')
        lab.start_appliance(1, extra=POLICY + tls_section(lab) + chain)
        lab.start_gwlb([lab.app_ip(1)])
        lab.signed = []  # (account, host, service, region) of every signed request sent
        yield lab
        lab.stop_gwlb()
        out = lab.apps[1]
        lab.stop_appliance(1)
        log = out.output()
        assert "flowdog: plugins: account_id_emf -> upsidedown" in log, log
        assert not re.search(r"(?m)^flowdog: plugin \S+ (\(worker \d+\) (warn|error|critical|failed)|disabled)", log), log
        records = [json.loads(m) for m in
                   re.findall(r"(?m)^flowdog: plugin account_id_emf \(worker \d+\) info: (\{.*\})$", log)]
        got = sorted((r["AccountId"], r["Host"], r["Service"], r["Region"]) for r in records)
        assert got == sorted(lab.signed), f"one EMF record per signed request:\n{log}"
        for r in records:
            assert r["_aws"]["CloudWatchMetrics"] == [{
                "Namespace": "flowdog-lab", "Dimensions": [["AccountId"]],
                "Metrics": [{"Name": "Requests", "Unit": "Count"}]}], r
            assert isinstance(r["_aws"]["Timestamp"], int) and r["Requests"] == 1, r
            assert r["AccessKeyType"] == "ASIA" and r["VpcEndpointId"] == "vpce-0c0c0c0c0c0c0c0c0", r


def sigv4(key, region, service):
    return (f"Authorization: AWS4-HMAC-SHA256 Credential={key}/20261203/{region}/{service}/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date, "
            "Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_signed_requests_leave_an_emf_record_with_the_account(lab, scheme):
    key = "ASIAQNZGKIQY56JQ7WML" if scheme == "http" else "ASIAY34FZKBOKMUTVV7A"
    r = curl(lab, "-4", "--http1.1", "--cacert", str(lab.root), "-X", "POST",
             "-H", sigv4(key, "us-east-1", "sts"), "-H", "X-Amz-Date: 20261203T000000Z",
             "--data", "Action=GetCallerIdentity&Version=2011-06-15", f"{scheme}://sts.lab.test/")
    assert "<Account>123456789012</Account>" in r.stdout, r.stdout
    lab.signed.append((KEYS[key], "sts.lab.test", "sts", "us-east-1"))
    # A presigned URL (the credential in the query), over HTTP/2 where TLS offers it.
    q = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={key}%2F20261203%2Feu-west-1%2Fs3%2Faws4_request"
    flags = ["--http2"] if scheme == "https" else []
    r = curl(lab, "-4", *flags, "--cacert", str(lab.root), "-o", "/dev/null", "-w", "%{http_code}",
             f"{scheme}://www.lab.test/index.html?{q}&X-Amz-Signature=00")
    assert r.stdout == "200", r.stdout
    lab.signed.append((KEYS[key], "www.lab.test", "s3", "eu-west-1"))
    # Malformed credentials are ignored: the request goes on, and no record.
    r = curl(lab, "-4", "--cacert", str(lab.root), "-o", "/dev/null", "-w", "%{http_code}",
             "-H", "Authorization: AWS4-HMAC-SHA256 Credential=AKIA!!/nonsense, Signature=0",
             f"{scheme}://sts.lab.test/")
    assert r.stdout == "200", r.stdout


def diff(a, b):
    """Mean absolute difference of two RGB images, 0..255."""
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("jpg", "JPEG"), ("gif", "GIF")])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_images_come_back_upside_down_and_blurred(lab, scheme, ext, fmt):
    served = os.path.join(lab.vars["FDLAB_STATE"], "img", f"seed.{ext}")
    body, head = lab.dir / f"got-{scheme}.{ext}", lab.dir / f"head-{scheme}-{ext}.txt"
    flags = ["--http2"] if scheme == "https" else []
    curl(lab, "-4", *flags, "--cacert", str(lab.root), "-D", str(head), "-o", str(body),
         f"{scheme}://img.lab.test/seed.{ext}")
    data = body.read_bytes()
    with open(served, "rb") as f:
        original_bytes = f.read()
    assert data != original_bytes, "the image changed"
    m = re.search(r"(?im)^content-length: (\d+)", head.read_text())
    if m:  # (curl checks it too: a wrong length fails the transfer)
        assert int(m.group(1)) == len(data), head.read_text()
    got = Image.open(io.BytesIO(data))
    assert got.format == fmt and got.size == (W, H), (got.format, got.size)
    got = got.convert("RGB")
    original = Image.open(io.BytesIO(original_bytes)).convert("RGB")
    # Turned: red (the bottom-right quarter) is now top-left, and nowhere near bottom-right.
    r, g, b = got.getpixel((2, 2))
    assert r > 170 and g < 90 and b < 90, got.getpixel((2, 2))
    assert got.getpixel((W - 3, H - 3))[0] - got.getpixel((W - 3, H - 3))[1] < 40, got.getpixel((W - 3, H - 3))
    # Blurred: far closer to PIL's rotate-and-blur than to a plain rotation.
    turned = original.rotate(180)
    blurred = turned.filter(ImageFilter.GaussianBlur(2))
    d_blur, d_sharp = diff(got, blurred), diff(got, turned)
    assert d_blur < 8 and d_blur * 5 < d_sharp, (d_blur, d_sharp)


def test_other_responses_pass_unchanged(lab):
    r = curl(lab, "-4", "--cacert", str(lab.root), "https://www.lab.test/index.html")
    assert "<h1>flowdog lab" in r.stdout, r.stdout
