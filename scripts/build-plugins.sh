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

# The proxy-wasm Rust SDK's own examples, built from the published crate source without changes
# (0.2.0 is the last release whose crate ships examples/), for tests/plugins.rs. Cargo fetches
# the crate into its registry; it is copied under target/ (excluded from this workspace) and its
# examples are built there with the crate's own lock file.
SDK_VERSION=0.2.0
sdk=../target/sdk-examples
out=target/wasm32-wasip1/release
if [ ! -f "$out/sdk_http_headers.wasm" ]; then
  mkdir -p "$sdk/fetch"
  printf '[package]\nname = "sdk-fetch"\nversion = "0.0.0"\nedition = "2021"\n[lib]\npath = "lib.rs"\n[dependencies]\nproxy-wasm = "=%s"\n[workspace]\n' \
    "$SDK_VERSION" >"$sdk/fetch/Cargo.toml"
  : >"$sdk/fetch/lib.rs"
  manifest=$(cargo metadata -q --format-version 1 --manifest-path "$sdk/fetch/Cargo.toml" |
    python3 -c 'import json, sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "proxy-wasm"))')
  rm -rf "$sdk/proxy-wasm-$SDK_VERSION"
  cp -r "$(dirname "$manifest")" "$sdk/proxy-wasm-$SDK_VERSION"
  # (its 2020 code draws warnings from today's compiler: kept in a log, shown if it fails)
  (cd "$sdk/proxy-wasm-$SDK_VERSION" && cargo build --release --target wasm32-wasip1 --examples -q 2>../build.log) ||
    { cat "$sdk/build.log" >&2; exit 1; }
  for f in "$sdk/proxy-wasm-$SDK_VERSION"/target/wasm32-wasip1/release/examples/*.wasm; do
    name=$(basename "$f")
    case $name in *-*) continue ;; esac   # cargo's hashed copies
    cp "$f" "$out/sdk_$name"
  done
fi
ls "$out"/sdk_*.wasm | sed 's|^|  |'
