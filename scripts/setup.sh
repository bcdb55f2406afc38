#!/usr/bin/env bash
# Installs what building, the demo and the tests need on Debian 12. Idempotent: a second run
# only checks. Needs root (apt-get, namespaces later).
set -euo pipefail

APT_PKGS=(dpdk dpdk-dev libdpdk-dev libclang-dev pkg-config build-essential iproute2 iputils-ping
          tshark tcpdump python3-pip procps
          nginx iperf3 nghttp2-client curl openssl ethtool
          python3-websockets  # the lab's WebSocket echo server (scripts/lab_httpecho.py)
          python3-pil)  # PIL for /usr/bin/python3; pytest's python3 may be another one (pip, below)
PIP_PKGS=("scapy==2.6.1" "pytest==8.3.4"
          "moto[server]==5.2.5"  # the KMS emulator of tests/e2e/test_ca_kms.py and src/tls/root.rs
          "pillow==11.3.0")  # tests/e2e/test_seed_plugins.py: makes and compares upsidedown's images

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (apt-get, network namespaces, DPDK)" >&2
  exit 1
fi

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: apt-get install ${missing[*]}"
  # Debian starts a freshly installed nginx (port 80 in the root namespace). scripts/lab.sh runs
  # its own nginx inside a namespace and never the system service, so keep that from starting:
  # a policy-rc.d that forbids it (unless one is already there, as in Docker images) ...
  policy=/usr/sbin/policy-rc.d own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# setup.sh: no service starts during apt-get install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f "$policy"; trap - EXIT; fi
  # ... and should it have started anyway, stop it and keep it from starting at boot.
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    if [ -d /run/systemd/system ]; then
      systemctl disable --now nginx.service >/dev/null 2>&1 || true
    else
      update-rc.d nginx disable >/dev/null 2>&1 || true
      if [ -x /etc/init.d/nginx ]; then /etc/init.d/nginx stop >/dev/null 2>&1 || true; fi
    fi
  fi
fi

if ! python3 -c 'import scapy, pytest, moto.server, PIL' 2>/dev/null; then  # moto.server: the [server] extra
  echo "setup.sh: pip install ${PIP_PKGS[*]}"
  python3 -m pip install -q --root-user-action=ignore "${PIP_PKGS[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${PIP_PKGS[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup.sh: cargo is missing; install Rust with rustup (stable)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup.sh: cargo install cargo-fuzz"
  cargo install -q --locked cargo-fuzz
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "setup.sh: rustup target add wasm32-wasip1 (the plugins)"
  rustup target add wasm32-wasip1 >/dev/null
fi
