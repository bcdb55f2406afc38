#!/usr/bin/env bash
# bench-gwlb.sh: what the appliance costs on the lab's path, as a ratio measured in one run.
#
#   scripts/bench-gwlb.sh [--repeat N] [--seconds S] [--requests N] [--out FILE] [--no-build]
#
# Two set-ups over the same lab (scripts/lab.sh, FDLAB=fdbench), alternated --repeat times:
#   (a) baseline: flowdog gwlb with `loopback = true`: every inner packet goes straight from one
#       TUN to the other (what the simulator and the kernel path cost by themselves);
#   (b) appliance: flowdog gwlb sending Geneve to flowdog run (DPDK net_af_packet on the veth dp0,
#       its worker on CPU 1) and back.
# Each measures iperf3 TCP throughput (client namespace -> server namespace, --seconds) and the
# request rate of a small-object HTTPS load (h2load, HTTP/2, --requests over 8 connections x 4
# streams, to nginx's 193-byte page). Reported: the best of the repeats per set-up, and the ratio
# appliance / baseline. Nothing is asserted: speed goes into BENCHMARKS.md.
#
# This machine has 2 CPUs: the appliance's busy-polling worker owns CPU 1; the simulator, iperf3,
# nginx and h2load share CPU 0 with it in (b) and both CPUs in (a). So the ratio includes the
# loss of a CPU, and af_packet on a veth is kernel-bound (about 0.2 Mpps here): read it as the
# cost of this lab path, not of the fast path (scripts/bench-fastpath.sh measures that).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
repeat=2 seconds=8 requests=20000 out="" build=1
while (($#)); do
  case $1 in
    --repeat) repeat=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench-gwlb.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench-gwlb.sh: run as root" >&2; exit 1; }
if ((build)); then cargo build --release -q; fi
BIN=$ROOT/target/release/flowdog
export FDLAB=fdbench
WORK=$(mktemp -d /tmp/flowdog-bench-gwlb.XXXXXX)
APP_PID='' SIM_PID=''
stop_all() {
  for p in $SIM_PID $APP_PID; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $SIM_PID $APP_PID; do wait "$p" 2>/dev/null || true; done
  SIM_PID='' APP_PID=''
}
cleanup() {
  stop_all
  scripts/lab.sh down >/dev/null 2>&1 || true
  rm -rf "$WORK" "/var/run/dpdk/$FDLAB-a1"
}
trap cleanup EXIT

scripts/lab.sh up --appliances 1 >"$WORK/lab.log" 2>&1 || { cat "$WORK/lab.log"; exit 1; }
# shellcheck disable=SC1090
source <(scripts/lab.sh env)

scripts/lab.sh appliance-config 1 0 >"$WORK/appliance.toml"

sim_config() { # loopback|appliance
  cat <<TOML
ip = "$FDLAB_GW_IP"
consumer = { tun = "$FDLAB_GW_TUN_CLIENT", vpc_endpoint_id = "vpce-0c0c0c0c0c0c0c0c0" }
provider = { tun = "$FDLAB_GW_TUN_SERVER", vpc_endpoint_id = "vpce-05e5e5e5e5e5e5e5e" }
TOML
  if [ "$1" = loopback ]; then echo "loopback = true"; else printf '[[targets]]\nip = "%s"\n' "$FDLAB_APP1_IP"; fi
}

start() { # loopback|appliance
  if [ "$1" = appliance ]; then
    ip netns exec "$FDLAB_APP1_NS" "$BIN" run --config "$WORK/appliance.toml" >"$WORK/app.log" 2>&1 &
    APP_PID=$!
    for _ in $(seq 100); do grep -q "flowdog: ready" "$WORK/app.log" && break; sleep 0.1; done
    grep -q "flowdog: ready" "$WORK/app.log" || { cat "$WORK/app.log"; exit 1; }
  fi
  sim_config "$1" >"$WORK/gwlb.toml"
  ip netns exec "$FDLAB_NS_GW" "$BIN" gwlb --config "$WORK/gwlb.toml" --counters-out "$WORK/gwlb.json" \
    >"$WORK/gwlb.log" 2>&1 &
  SIM_PID=$!
  sleep 0.5
  # Warm up: the ARP entries, nginx's workers.
  ip netns exec "$FDLAB_NS_CLIENT" curl -s -o /dev/null --max-time 5 "http://$FDLAB_SERVER_IP4/" || true
}

measure() { # -> "gbps reqs"
  local gbps reqs
  gbps=$(ip netns exec "$FDLAB_NS_CLIENT" iperf3 -c "$FDLAB_SERVER_IP4" -t "$seconds" -J |
    python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))')
  reqs=$(ip netns exec "$FDLAB_NS_CLIENT" h2load -n "$requests" -c 8 -m 4 "https://$FDLAB_SERVER_IP4/" 2>&1 |
    sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p')
  echo "$gbps ${reqs:-0}"
}

declare -A best_gbps=([loopback]=0 [appliance]=0) best_reqs=([loopback]=0 [appliance]=0)
for r in $(seq "$repeat"); do
  for mode in loopback appliance; do
    start "$mode"
    read -r gbps reqs < <(measure)
    stop_all
    drops=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["drops"]; print(sum(v for k,v in d.items() if k.startswith("return_")))' "$WORK/gwlb.json")
    echo "bench-gwlb.sh: run $r $mode: iperf3 TCP $gbps Gbit/s, h2load $reqs req/s (returns that failed the checks: $drops)" >&2
    best_gbps[$mode]=$(python3 -c "print(max($gbps, ${best_gbps[$mode]}))")
    best_reqs[$mode]=$(python3 -c "print(max($reqs, ${best_reqs[$mode]}))")
  done
done

table=$(python3 - "${best_gbps[loopback]}" "${best_gbps[appliance]}" "${best_reqs[loopback]}" "${best_reqs[appliance]}" <<'PY'
import sys
gl, ga, rl, ra = map(float, sys.argv[1:])
ratio = lambda a, b: f"{a / b:.2f}" if b else "-"
print("| load | simulator alone (loopback) | simulator + appliance on DPDK | appliance / alone |")
print("|---|---:|---:|---:|")
print(f"| iperf3 TCP, 1 stream (Gbit/s) | {gl:.2f} | {ga:.2f} | {ratio(ga, gl)} |")
print(f"| h2load HTTPS small object, 8 conn x 4 streams (req/s) | {rl:.0f} | {ra:.0f} | {ratio(ra, rl)} |")
PY
)
header="flowdog gwlb lab path, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), best of $repeat, iperf3 ${seconds} s, h2load $requests requests"
printf '%s\n\n%s\n' "$header" "$table"
if [ -n "$out" ]; then printf '%s\n\n%s\n' "$header" "$table" >"$out"; fi
