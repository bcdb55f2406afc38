#!/usr/bin/env bash
# Builds flowdog's proxy-wasm plugins (wasm-plugins/, its own Cargo workspace) for
# wasm32-wasip1, into wasm-plugins/target/wasm32-wasip1/release/<name>.wasm. Adds the Rust
# target first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../wasm-plugins"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "build-plugins.sh: rustup target add wasm32-wasip1"
  rustup target add wasm32-wasip1 >/dev/null
fi
cargo build --release --target wasm32-wasip1 -q
ls target/wasm32-wasip1/release/*.wasm | sed 's|^|  |'
