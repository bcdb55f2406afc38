#!/usr/bin/env bash
# The demo: build flowdog, make a lab of two network namespaces joined by a veth pair, run the
# appliance on DPDK's net_af_packet in one, and from the other (the GWLB side) ping it and
# replay generated GWLB traffic into it; print what came back and the appliance's counters.
#
# Addresses are from 198.18.0.0/15 and nothing routes out of the lab. Everything is removed on
# exit. Run as root. (The GWLB simulator of a later stage turns this into real clients and
# servers talking through a simulated Gateway Load Balancer.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

scripts/setup.sh
echo "== build (release)"
cargo build --release -q
BIN=$ROOT/target/release/flowdog

TAG=$$
NS_GW=fd-demo-gw-$TAG NS_APP=fd-demo-app-$TAG IF_GW=fddg$TAG IF_APP=fdda$TAG
WORK=$(mktemp -d /tmp/flowdog-demo.XXXXXX)
APP_PID=
cleanup() {
  [ -n "$APP_PID" ] && kill "$APP_PID" 2>/dev/null && wait "$APP_PID" 2>/dev/null || true
  ip netns del "$NS_GW" 2>/dev/null || true
  ip netns del "$NS_APP" 2>/dev/null || true
  rm -rf "$WORK" "/var/run/dpdk/fd-demo-$TAG"
}
trap cleanup EXIT

echo "== lab: namespaces $NS_GW (GWLB side) and $NS_APP (appliance), veth $IF_GW <-> $IF_APP"
for ns in "$NS_GW" "$NS_APP"; do
  ip netns add "$ns"
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link set lo up
done
ip link add "$IF_GW" netns "$NS_GW" type veth peer name "$IF_APP" netns "$NS_APP"
ip -n "$NS_GW" addr add 198.18.0.3/24 dev "$IF_GW"
ip -n "$NS_GW" link set "$IF_GW" up
ip -n "$NS_APP" link set "$IF_APP" up
GW_MAC=$(ip -n "$NS_GW" -j link show "$IF_GW" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
APP_MAC=$(ip -n "$NS_APP" -j link show "$IF_APP" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')

cat > "$WORK/flowdog.toml" <<TOML
# The appliance on DPDK: one worker on CPU 1, control plane on CPU 0.
[eal]
args = ["--no-pci", "--log-level=lib.eal:warning", "--log-level=pmd.*:warning"]
vdevs = ["net_af_packet0,iface=$IF_APP"]
file_prefix = "fd-demo-$TAG"

[port]
name = "net_af_packet0"

[appliance]
ip = "198.18.0.2"

[workers]
cpus = [1]
control_cpu = 0

[control]
drain_seconds = 0

[[policy.rules]]
name = "no-telnet"
protocol = "tcp"
dst_ports = "23"
action = "reset"
TOML

echo "== appliance: flowdog run (DPDK net_af_packet on $IF_APP)"
ip netns exec "$NS_APP" "$BIN" run --config "$WORK/flowdog.toml" --stats 2 \
  --counters-out "$WORK/counters.json" > "$WORK/flowdog.log" 2>&1 &
APP_PID=$!
for _ in $(seq 1 60); do grep -q "flowdog: ready" "$WORK/flowdog.log" && break; sleep 0.5; done
grep "flowdog: ready" "$WORK/flowdog.log" || { cat "$WORK/flowdog.log"; exit 1; }

echo "== the GWLB side pings the appliance (ARP and ICMP answered by the DPDK worker)"
ip netns exec "$NS_GW" ping -c 3 -i 0.2 198.18.0.2 | tail -n 2

echo "== generate GWLB traffic: 200 flows, TCP and UDP, 25% IPv6, plus telnet flows the policy resets"
"$BIN" gen pcap --flows 200 --size 200 --ipv6-share 0.25 --packets-per-flow 4 \
  --gwlb-mac "$GW_MAC" --appliance-mac "$APP_MAC" --out "$WORK/gwlb.pcap"
python3 - "$WORK/gwlb.pcap" "$GW_MAC" "$APP_MAC" <<'PY'
import sys
from scapy.all import Ether, IP, UDP, TCP, rdpcap, wrpcap
from scapy.contrib.geneve import GENEVE, GeneveOptions
frames = list(rdpcap(sys.argv[1]))
for i in range(5):
    opts = [GeneveOptions(classid=0x0108, type=1, data=bytes.fromhex("0123456789abcdef")),
            GeneveOptions(classid=0x0108, type=2, data=bytes(8)),
            GeneveOptions(classid=0x0108, type=3, data=(7000 + i).to_bytes(4, "big"))]
    frames.append(Ether(src=sys.argv[2], dst=sys.argv[3]) / IP(src="198.18.0.1", dst="198.18.0.2")
                  / UDP(sport=40000 + i, dport=6081) / GENEVE(proto=0x0800, options=opts)
                  / IP(src="198.18.10.9", dst="198.19.0.23") / TCP(sport=50000 + i, dport=23, flags="S"))
wrpcap(sys.argv[1], frames)
PY

echo "== replay it from the GWLB side and capture what comes back"
ip netns exec "$NS_GW" python3 "$ROOT/tests/e2e/peer.py" --iface "$IF_GW" \
  --send "$WORK/gwlb.pcap" --recv "$WORK/back.pcap" --gap 0.0005 --settle 1.5
python3 "$ROOT/scripts/demo_report.py" "$WORK/gwlb.pcap" "$WORK/back.pcap"

kill -INT "$APP_PID"; wait "$APP_PID" || true; APP_PID=
echo "== the appliance's log and final counters"
sed -n '/flowdog: ready/,$p' "$WORK/flowdog.log"
