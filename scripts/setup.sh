#!/usr/bin/env bash
# Installs what building, the demo and the tests need on Debian 12. Idempotent: a second run
# only checks. Needs root (apt-get, namespaces later).
set -euo pipefail

APT_PKGS=(dpdk dpdk-dev libdpdk-dev libclang-dev pkg-config build-essential iproute2 iputils-ping
          tshark tcpdump python3-pip procps)
PIP_PKGS=("scapy==2.6.1" "pytest==8.3.4")

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
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! python3 -c 'import scapy, pytest' 2>/dev/null; then
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
