#!/usr/bin/env bash
# The whole test suite: lints, unit and property tests, the scapy cross-check, the
# no-allocation test, the end-to-end tests on real DPDK in network namespaces, and a short fuzz
# run of each fuzz target. Installs what it needs first. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== plugins (wasm32-wasip1)"
scripts/build-plugins.sh

echo "== lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
(cd wasm-plugins && cargo fmt --all -- --check && cargo clippy --target wasm32-wasip1 -q -- -D warnings)
echo "== plugins' own unit tests (on the host)"
(cd wasm-plugins && cargo test -q 2>&1 | grep -E "^(test result|error|failures|---- )" ; test "${PIPESTATUS[0]}" -eq 0)

echo "== unit, property, cross-check and no-allocation tests"
cargo build --workspace -q
cargo test --workspace -q 2>&1 | tee /tmp/flowdog-cargo-test.log | grep -E "^(test result|running|error|failures|---- )" || true
test "${PIPESTATUS[0]}" -eq 0

echo "== end to end on DPDK (net_af_packet in namespaces)"
python3 -m pytest -q tests/e2e

# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
for target in frame fastpath websocket clienthello; do
  echo "== fuzz: $target, ${FUZZ_SECONDS:-10} s"
  (cd crates/wire/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
     -max_total_time="${FUZZ_SECONDS:-10}" -max_len=9216 2>&1 | grep -E "^Done|ERROR|panicked" )
done

echo "== all tests passed"
