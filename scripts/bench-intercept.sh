#!/usr/bin/env bash
# bench-intercept.sh: what interception costs, against the fast path and mitmproxy, in one run.
#
#   scripts/bench-intercept.sh [--repeat N] [--seconds S] [--connections C] [--hold N] [--out FILE] [--no-build]
#
# Over the same lab (scripts/lab.sh, FDLAB=fdbench), the simulator in front of one appliance
# (flowdog run on DPDK net_af_packet, its worker on CPU 1), small responses (nginx's 187-byte
# page at http://198.18.2.10/), wrk from the client namespace:
#   (a) fast path:   policy allow: the appliance returns every packet to GWLB;
#   (b) intercepted: policy intercept for TCP port 80: a TCP pair per connection on the worker,
#       hyper both sides, the built-in rewrite (x-flowdog on every response);
#   (c) mitmproxy:   mitmdump (PyPI, in a venv under target/) in reverse-proxy mode on the gw
#       namespace's client-side address: the client connects to it, it connects to nginx. It
#       cannot sit inside the GWLB tunnel (it is not an appliance), so the packets take the
#       direct kernel path, without the simulator and af_packet: that favours it.
# Each with keep-alive (-c connections) and with a new connection per request (Connection:
# close). Reported: requests/s and latency percentiles (wrk --latency), the best run of
# --repeat, and intercepted / fast path. Then the memory per intercepted flow: the appliance's
# resident memory with --hold idle keep-alive connections open (each has sent one request),
# minus without, divided by --hold. Nothing is asserted: the figures go into BENCHMARKS.md.
#
# This machine has 2 CPUs: the worker owns CPU 1; the simulator, nginx, wrk and mitmproxy share
# CPU 0. Both (a) and (b) are bound by af_packet and the simulator's TUN path here.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
repeat=2 seconds=8 conns=8 hold=500 out="" build=1
while (($#)); do
  case $1 in
    --repeat) repeat=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --hold) hold=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "bench-intercept.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench-intercept.sh: run as root" >&2; exit 1; }
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
VENV=$ROOT/target/bench-venv
if [ ! -x "$VENV/bin/mitmdump" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q mitmproxy
fi
if ((build)); then cargo build --release -q; fi
BIN=$ROOT/target/release/flowdog
export FDLAB=fdbench
WORK=$(mktemp -d /tmp/flowdog-bench-intercept.XXXXXX)
APP_PID='' SIM_PID='' MITM_PID=''
stop_all() {
  for p in $SIM_PID $APP_PID $MITM_PID; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $SIM_PID $APP_PID $MITM_PID; do wait "$p" 2>/dev/null || true; done
  SIM_PID='' APP_PID='' MITM_PID=''
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
URL=http://$FDLAB_SERVER_IP4/
MITM_URL=http://$FDLAB_GW_CLIENT_IP4:8080/

start() { # fastpath|intercept|mitmproxy
  scripts/lab.sh appliance-config 1 0 >"$WORK/appliance.toml"
  if [ "$1" = intercept ]; then
    printf '\n[[policy.rules]]\nname = "web"\nprotocol = "tcp"\ndst_ports = "80"\naction = "intercept"\n' \
      >>"$WORK/appliance.toml"
    printf '\n[intercept]\nmax_flows_per_worker = %d\n' $((hold + 1024)) >>"$WORK/appliance.toml"
  fi
  ip netns exec "$FDLAB_APP1_NS" "$BIN" run --config "$WORK/appliance.toml" >"$WORK/app.log" 2>&1 &
  APP_PID=$!
  for _ in $(seq 100); do grep -q "flowdog: ready" "$WORK/app.log" && break; sleep 0.1; done
  grep -q "flowdog: ready" "$WORK/app.log" || { cat "$WORK/app.log"; exit 1; }
  printf 'ip = "%s"\nconsumer = { tun = "%s", vpc_endpoint_id = "vpce-0c0c0c0c0c0c0c0c0" }\n' \
    "$FDLAB_GW_IP" "$FDLAB_GW_TUN_CLIENT" >"$WORK/gwlb.toml"
  printf 'provider = { tun = "%s", vpc_endpoint_id = "vpce-05e5e5e5e5e5e5e5e" }\n[[targets]]\nip = "%s"\n' \
    "$FDLAB_GW_TUN_SERVER" "$FDLAB_APP1_IP" >>"$WORK/gwlb.toml"
  ip netns exec "$FDLAB_NS_GW" "$BIN" gwlb --config "$WORK/gwlb.toml" >"$WORK/gwlb.log" 2>&1 &
  SIM_PID=$!
  if [ "$1" = mitmproxy ]; then
    ip netns exec "$FDLAB_NS_GW" "$VENV/bin/mitmdump" -q --mode "reverse:$URL" \
      --listen-host "$FDLAB_GW_CLIENT_IP4" --listen-port 8080 >"$WORK/mitm.log" 2>&1 &
    MITM_PID=$!
    for _ in $(seq 100); do
      ip netns exec "$FDLAB_NS_CLIENT" curl -s -o /dev/null --max-time 1 "$MITM_URL" && break
      sleep 0.2
    done
  fi
  sleep 0.5
  ip netns exec "$FDLAB_NS_CLIENT" curl -s -o /dev/null --max-time 5 "$URL" || true
}

# wrk's summary as "req/s p50 p90 p99" (latencies in ms).
wrk_run() { # url [extra wrk args]
  local url=$1; shift
  ip netns exec "$FDLAB_NS_CLIENT" wrk -t 1 -c "$conns" -d "${seconds}s" --latency "$@" "$url" 2>&1 |
    python3 -c '
import re, sys
t = sys.stdin.read()
ms = lambda v, u: float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", t)
print("%.0f %.3f %.3f %.3f %s" % (float(rps.group(1)) if rps else 0, lat.get("50", 0), lat.get("90", 0),
      lat.get("99", 0), "errors" if errs else "ok"))'
}

declare -A best
record() { # key "rps p50 p90 p99 ok"
  local rps=${2%% *}
  if [ -z "${best[$1]:-}" ] || [ "$rps" -gt "${best[$1]%% *}" ]; then best[$1]=$2; fi
}

for r in $(seq "$repeat"); do
  for mode in fastpath intercept mitmproxy; do
    start "$mode"
    url=$URL
    [ "$mode" = mitmproxy ] && url=$MITM_URL
    ka=$(wrk_run "$url")
    nc=$(wrk_run "$url" -H "Connection: close")
    echo "bench-intercept.sh: run $r $mode: keep-alive [$ka] new-connection [$nc] (req/s p50 p90 p99 ms)" >&2
    record "$mode-ka" "$ka"
    record "$mode-nc" "$nc"
    stop_all
  done
done

# Memory per intercepted flow: resident memory with $hold idle connections, minus without.
start intercept
rss() { awk '/^VmRSS/ {print $2}' "/proc/$APP_PID/status"; }
sleep 1
before=$(rss)
ip netns exec "$FDLAB_NS_CLIENT" python3 - "$FDLAB_SERVER_IP4" "$hold" "$WORK/held" <<'PY' &
import asyncio, os, sys
host, n, flag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
async def one():
    r, w = await asyncio.open_connection(host, 80)
    w.write(b"GET / HTTP/1.1\r\nHost: www.lab.test\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    await r.readexactly(n)
    return w
async def main():
    ws = []
    for i in range(0, n, 50):
        ws += await asyncio.gather(*(one() for _ in range(min(50, n - i))))
    open(flag, "w").close()
    await asyncio.sleep(30)
asyncio.run(main())
PY
HOLD_PID=$!
for _ in $(seq 300); do [ -e "$WORK/held" ] && break; sleep 0.1; done
sleep 2
after=$(rss)
kill "$HOLD_PID" 2>/dev/null || true
wait "$HOLD_PID" 2>/dev/null || true
stop_all
[ -e "$WORK/held" ] || { echo "bench-intercept.sh: the $hold connections did not all open" >&2; exit 1; }
per_flow=$(( (after - before) * 1024 / hold ))

table=$(python3 - "${best[fastpath-ka]}" "${best[intercept-ka]}" "${best[mitmproxy-ka]}" \
  "${best[fastpath-nc]}" "${best[intercept-nc]}" "${best[mitmproxy-nc]}" <<'PY'
import sys
rows = [a.split() for a in sys.argv[1:]]
names = ["fast path", "intercepted (built-in rewrite)", "mitmproxy (reverse mode, direct path)"]
print("| load | set-up | req/s | p50 ms | p90 ms | p99 ms | vs fast path |")
print("|---|---|---:|---:|---:|---:|---:|")
for k, load in enumerate(["keep-alive", "new connection per request"]):
    base = float(rows[3 * k][0]) or 1
    for j, name in enumerate(names):
        rps, p50, p90, p99, ok = rows[3 * k + j]
        flag = "" if ok == "ok" else " (errors)"
        print(f"| {load} | {name}{flag} | {float(rps):.0f} | {p50} | {p90} | {p99} | {float(rps) / base:.2f} |")
PY
)
header="flowdog interception, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), best of $repeat, wrk -t1 -c$conns -d${seconds}s, nginx 187-byte page"
mem="Memory per intercepted flow: $per_flow bytes resident ($hold idle keep-alive connections: VmRSS $before KiB -> $after KiB); the bound is 4 x leg_buffer_bytes (256 KiB) plus smoltcp and hyper state."
printf '%s\n\n%s\n\n%s\n' "$header" "$table" "$mem"
if [ -n "$out" ]; then printf '%s\n\n%s\n\n%s\n' "$header" "$table" "$mem" >"$out"; fi
