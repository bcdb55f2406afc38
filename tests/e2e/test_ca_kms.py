"""`flowdog ca init --kms-key-id` against a real AWS API emulator: moto's server mode gives KMS
CreateKey, GetPublicKey and Sign over HTTP, and the binary reaches it by endpoint URL.

openssl checking the root's self-signature proves that KMS signed with the key whose public half
is in the certificate. No network lab and no root needed.

moto 5.2 signs ECC_NIST_P256 and RSA keys, but only RAW messages: MessageType DIGEST is not
implemented (it hashes the digest again), so flowdog sends RAW up to KMS's 4096 bytes.
"""
import os
import pathlib
import socket
import subprocess
import tempfile
import time

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
FLOWDOG = os.environ.get("FLOWDOG_BIN", str(TARGET / "debug" / "flowdog"))
REGION = "us-east-1"

# Fake credentials, and nothing from the user's own AWS configuration.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto():
    port = free_port()
    log = tempfile.TemporaryFile()
    env = {k: v for k, v in os.environ.items() if k != "AWS_PROFILE"} | AWS_ENV
    p = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                         stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert p.poll() is None, f"moto_server exited: {p.returncode}"
                assert time.time() < deadline, "moto_server did not listen"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


@pytest.fixture(scope="module")
def kms(moto):
    return boto3.client("kms", endpoint_url=moto, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def ca_init(moto, key_id, out):
    env = {k: v for k, v in os.environ.items() if k != "AWS_PROFILE"} | AWS_ENV
    return subprocess.run([FLOWDOG, "ca", "init", "--kms-key-id", key_id, "--kms-endpoint-url", moto,
                           "--kms-region", REGION, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)


def openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("spec, key_text", [
    ("ECC_NIST_P256", ["prime256v1", "ecdsa-with-SHA256"]),
    ("RSA_2048", ["Public-Key: (2048 bit)", "sha256WithRSAEncryption"]),
])
def test_kms_root_signed_by_the_kms_key(moto, kms, tmp_path, spec, key_text):
    arn = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec=spec)["KeyMetadata"]["Arn"]
    out = tmp_path / "ca"
    r = ca_init(moto, arn, out)
    assert r.returncode == 0, r.stderr
    # Only the certificate: the key never left KMS.
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem"]
    assert "root key in KMS" in r.stdout and spec in r.stdout, r.stdout
    assert "kms:Sign" in r.stdout and "update-ca-certificates" in r.stdout, r.stdout

    cert = str(out / "ca.pem")
    text = openssl("x509", "-in", cert, "-noout", "-text")
    assert "CA:TRUE, pathlen:1" in text, text
    assert "Certificate Sign, CRL Sign" in text, text
    assert "CN = flowdog root CA" in text, text
    for t in key_text:
        assert t in text, text
    # A valid self-signature: KMS signed with the key that is in the certificate.
    assert openssl("verify", "-CAfile", cert, cert).strip() == f"{cert}: OK"
    # And that key is the KMS key's.
    spki = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert spki == kms.get_public_key(KeyId=arn)["PublicKey"]

    # Never overwritten without --force.
    r = ca_init(moto, arn, out)
    assert r.returncode != 0 and "never overwrites" in r.stderr, r.stderr


def test_an_encryption_key_is_refused(moto, kms, tmp_path):
    arn = kms.create_key(KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["Arn"]
    r = ca_init(moto, arn, tmp_path / "ca")
    assert r.returncode != 0
    key_id = arn.rsplit("/", 1)[1]
    assert key_id in r.stderr and "ENCRYPT_DECRYPT, not SIGN_VERIFY" in r.stderr, r.stderr
    assert not (tmp_path / "ca").exists()


def test_an_unsupported_spec_and_a_missing_key_are_refused(moto, kms, tmp_path):
    arn = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P384")["KeyMetadata"]["Arn"]
    r = ca_init(moto, arn, tmp_path / "ca")
    assert r.returncode != 0 and "key spec ECC_NIST_P384 is not supported" in r.stderr, r.stderr

    missing = f"arn:aws:kms:{REGION}:123456789012:key/00000000-0000-0000-0000-000000000000"
    r = ca_init(moto, missing, tmp_path / "ca")
    assert r.returncode != 0, r.stdout
    assert f"KMS key {missing}: GetPublicKey failed: NotFoundException" in r.stderr, r.stderr
    assert not (tmp_path / "ca").exists()
