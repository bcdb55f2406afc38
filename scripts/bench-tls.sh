#!/usr/bin/env bash
# bench-tls.sh: what TLS interception costs, against nginx as a TLS reverse proxy and mitmproxy,
# in one run (issue 6).
#
#   scripts/bench-tls.sh [--repeat N] [--seconds S] [--connections C] [--out FILE] [--no-build]
#                        [--profile]
#
# Over the same lab (scripts/lab.sh, FDLAB=fdtls), the upstream is always the lab's nginx
# https://www.lab.test/ (198.18.2.10:443, a small page, certificate from the lab CA); wrk
# (-t1, pinned to CPU 0) from the client namespace; the proxy under test gets CPU 1:
#   (a) nginx:     a TLS reverse proxy in the gw namespace on the gw's client-side address, port
#       8443 (its own config under $WORK: one worker pinned to CPU 1, TLS 1.3, a P-256 leaf for
#       www.lab.test signed by an intermediate of the flowdog root, session tickets/cache as
#       nginx's defaults, upstream verified, upstream connections kept alive: keepalive 64,
#       proxy_ssl_session_reuse on, access_log off). The client reaches it directly;
#   (b) flowdog:   the simulator in front of one appliance (flowdog run on DPDK net_af_packet,
#       its worker busy-polling CPU 1), policy intercept for TCP port 443 with [tls]: a leaf
#       minted per upstream certificate, signed by an intermediate of `flowdog ca init`'s root,
#       upstream verified against the lab CA. wrk connects to https://www.lab.test/ itself;
#   (c) mitmproxy: mitmdump (PyPI, in a venv under target/) in reverse mode
#       (reverse:https://198.18.2.10/) on the gw's client-side address, port 8444, pinned to
#       CPU 1 with taskset, upstream verified against the lab CA. Reached directly;
#   and for reference (no ratio is taken against it): the appliance without the intercept rule,
#   its fast path returning every packet, wrk's TLS ending at the upstream nginx (on CPU 0): what
#   the lab's simulator path carries when nothing is intercepted.
# nginx and mitmproxy cannot sit inside the GWLB tunnel (they are not appliances): their packets
# take the direct kernel path, without the simulator and af_packet. That favours them.
# Each with keep-alive (-c connections) and with a new connection per request (Connection:
# close: a TCP and a TLS handshake per request). Reported: requests/s and wrk's latency
# percentiles, the best run of --repeat; CPU 1's busy share during the run (/proc/stat; everything
# else is pinned to CPU 0) and the proxy's own CPU time (/proc/PID/task/*/stat), hence requests
# per busy CPU-1 core and CPU-1 microseconds per request (per handshake in the new-connection
# case; flowdog's worker busy-polls, so CPU 1 is always 100 % busy for it and its figure is an
# upper bound). Then whether wrk's reconnections resume TLS sessions (ClientHello/ServerHello
# pre_shared_key, tshark on a short capture, client side and upstream side), and flowdog's
# counters (minting, TLS and HTTP failures) from --counters-out. With --profile, flowdog's worker
# thread is sampled (perf record -e cpu-clock) during the first run's two loads and its samples
# are grouped by symbol: the poll loop's own functions (idle polling, with what they inline), the
# kernel (af_packet), TLS (rustls, aws-lc), HTTP, smoltcp, the PMD: how busy the worker really
# was, which CPU 1's 100 % cannot say. Nothing is asserted: the figures go into BENCHMARKS.md.
#
# This machine has 2 CPUs. wrk, the simulator, the upstream nginx (and flowdog's control and
# minting threads) share CPU 0. wrk spins on its sockets while a TLS handshake is in flight
# (EPOLLOUT stays armed), and with the kernel's autogroups a plain `nice` does not keep it from
# starving the upstream nginx and the simulator of CPU 0 (new connections through flowdog then
# collapsed to a few per second): wrk runs in a session of its own whose autogroup is niced to 19.
# The client namespace prefers IPv4 (a gai.conf), so wrk reaches www.lab.test on 198.18.2.10 like
# the proxies reach their upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
repeat=2 seconds=8 conns=8 out="" build=1 profile=0
while (($#)); do
  case $1 in
    --repeat) repeat=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --profile) profile=1; shift ;;
    -h | --help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "bench-tls.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench-tls.sh: run as root" >&2; exit 1; }
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
command -v tshark >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null
if ((profile)) && ! command -v perf >/dev/null; then echo "bench-tls.sh: --profile needs perf" >&2; exit 1; fi
VENV=$ROOT/target/bench-venv
if [ ! -x "$VENV/bin/mitmdump" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q mitmproxy
fi
if ((build)); then cargo build --release -q; fi
BIN=$ROOT/target/release/flowdog
export FDLAB=fdtls
WORK=$(mktemp -d /tmp/flowdog-bench-tls.XXXXXX)
chmod 755 "$WORK"
APP_PID='' SIM_PID='' NGINX_PID='' MITM_PID='' CAP_PIDS=''
stop_all() {
  local p
  for p in $SIM_PID $APP_PID $NGINX_PID $MITM_PID $CAP_PIDS; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $SIM_PID $APP_PID $NGINX_PID $MITM_PID $CAP_PIDS; do wait "$p" 2>/dev/null || true; done
  SIM_PID='' APP_PID='' NGINX_PID='' MITM_PID='' CAP_PIDS=''
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
# IPv4 first in the client namespace (www.lab.test also has fd00:fd:2::10); lab.sh down removes it.
echo "precedence ::ffff:0:0/96  100" >"/etc/netns/$FDLAB_NS_CLIENT/gai.conf"
HOST=$FDLAB_HOST_WWW
FLOWDOG_URL=https://$HOST/
NGINX_URL=https://$FDLAB_GW_CLIENT_IP4:8443/
MITM_URL=https://$FDLAB_GW_CLIENT_IP4:8444/

# CPU 1 is the proxy's: the lab's upstream nginx (and everything else this script starts) on CPU 0.
for f in /run/$FDLAB/nginx/nginx.pid; do
  m=$(head -n1 "$f")
  for p in $m $(pgrep -P "$m"); do taskset -a -cp 0 "$p" >/dev/null; done
done

# The root flowdog mints under, and for nginx an intermediate of it and a P-256 leaf for www (and
# the gw's address, which is what wrk connects to), served as leaf + intermediate like flowdog's.
"$BIN" ca init --out "$WORK/ca" >"$WORK/ca.log"
mkdir -p "$WORK/nginx/tmp"
(
  cd "$WORK/nginx"
  openssl ecparam -name prime256v1 -genkey -noout -out int.key
  openssl req -new -key int.key -subj "/CN=bench intermediate" -out int.csr
  printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >int.ext
  openssl x509 -req -in int.csr -CA "$WORK/ca/ca.pem" -CAkey "$WORK/ca/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile int.ext -out int.pem
  openssl ecparam -name prime256v1 -genkey -noout -out leaf.key
  openssl req -new -key leaf.key -subj "/CN=$HOST" -out leaf.csr
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s,IP:%s\n' \
    "$HOST" "$FDLAB_GW_CLIENT_IP4" >leaf.ext
  openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -CAcreateserial -days 2 -sha256 \
    -extfile leaf.ext -out leaf.pem
  cat leaf.pem int.pem >chain.pem
) >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log"; exit 1; }
cat >"$WORK/nginx/nginx.conf" <<EOF
# bench-tls.sh: nginx as the TLS reverse proxy in $FDLAB_NS_GW, one worker on CPU 1.
worker_processes 1;
worker_cpu_affinity 10;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    upstream lab_www {
        server $FDLAB_SERVER_IP4:443;
        keepalive 64;
    }
    server {
        listen $FDLAB_GW_CLIENT_IP4:8443 ssl;
        ssl_certificate $WORK/nginx/chain.pem;
        ssl_certificate_key $WORK/nginx/leaf.key;
        ssl_protocols TLSv1.3;
        location / {
            proxy_pass https://lab_www;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $HOST;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_server_name on;
            proxy_ssl_name $HOST;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $FDLAB_UPSTREAM_CA;
            proxy_ssl_session_reuse on;
        }
    }
}
EOF

start() { # nginx|flowdog|fastpath|mitmproxy [counters file]
  case $1 in
    flowdog | fastpath)
      scripts/lab.sh appliance-config 1 0 >"$WORK/appliance.toml"
      [ "$1" = fastpath ] || cat >>"$WORK/appliance.toml" <<EOF

[[policy.rules]]
name = "https"
protocol = "tcp"
dst_ports = "443"
action = "intercept"

[intercept]
max_flows_per_worker = 16384
when_full = "refuse"

[tls]
root_cert = "$WORK/ca/ca.pem"
root_key = "$WORK/ca/ca.key"
upstream_system_roots = false
upstream_ca_file = "$FDLAB_UPSTREAM_CA"
EOF
      ip netns exec "$FDLAB_APP1_NS" "$BIN" run --config "$WORK/appliance.toml" --counters-out "$2" \
        >"$WORK/app.log" 2>&1 &
      APP_PID=$!
      for _ in $(seq 100); do grep -q "flowdog: ready" "$WORK/app.log" && break; sleep 0.1; done
      grep -q "flowdog: ready" "$WORK/app.log" || { cat "$WORK/app.log"; exit 1; }
      printf 'ip = "%s"\nconsumer = { tun = "%s", vpc_endpoint_id = "vpce-0c0c0c0c0c0c0c0c0" }\n' \
        "$FDLAB_GW_IP" "$FDLAB_GW_TUN_CLIENT" >"$WORK/gwlb.toml"
      printf 'provider = { tun = "%s", vpc_endpoint_id = "vpce-05e5e5e5e5e5e5e5e" }\n[[targets]]\nip = "%s"\n' \
        "$FDLAB_GW_TUN_SERVER" "$FDLAB_APP1_IP" >>"$WORK/gwlb.toml"
      ip netns exec "$FDLAB_NS_GW" taskset -c 0 "$BIN" gwlb --config "$WORK/gwlb.toml" >"$WORK/gwlb.log" 2>&1 &
      SIM_PID=$!
      PROXY_PID=$APP_PID URL=$FLOWDOG_URL CURL_ARGS=(--cacert "$WORK/ca/ca.pem")
      [ "$1" = flowdog ] || CURL_ARGS=(--cacert "$FDLAB_UPSTREAM_CA")
      ;;
    nginx)
      ip netns exec "$FDLAB_NS_GW" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
        -e "$WORK/nginx/error.log" >"$WORK/nginx.log" 2>&1 &
      NGINX_PID=$!
      PROXY_PID='' URL=$NGINX_URL
      CURL_ARGS=(--cacert "$WORK/ca/ca.pem" --connect-to "$HOST:443:$FDLAB_GW_CLIENT_IP4:8443")
      for _ in $(seq 100); do PROXY_PID=$(pgrep -P "$NGINX_PID" | head -n1) && [ -n "$PROXY_PID" ] && break; sleep 0.1; done
      [ -n "$PROXY_PID" ] || { cat "$WORK/nginx.log" "$WORK/nginx/error.log"; exit 1; }
      ;;
    mitmproxy)
      # Upstream verified against the lab CA; mitmproxy's own CA under $WORK, not ~/.mitmproxy.
      ip netns exec "$FDLAB_NS_GW" taskset -c 1 "$VENV/bin/mitmdump" -q \
        --mode "reverse:https://$FDLAB_SERVER_IP4/" \
        --listen-host "$FDLAB_GW_CLIENT_IP4" --listen-port 8444 --set "confdir=$WORK/mitm" \
        --set "ssl_verify_upstream_trusted_ca=$FDLAB_UPSTREAM_CA" >"$WORK/mitm.log" 2>&1 &
      MITM_PID=$!
      PROXY_PID=$MITM_PID URL=$MITM_URL CURL_ARGS=(-k)
      ;;
  esac
  # Ready when a request through it answers 200 (curl verifies the proxy's certificate against
  # the flowdog root for flowdog and nginx).
  local code=''
  for _ in $(seq 100); do
    code=$(ip netns exec "$FDLAB_NS_CLIENT" curl -s -o "$WORK/page" -w '%{http_code}' --max-time 2 \
      "${CURL_ARGS[@]}" "$( [ "$1" = nginx ] && echo "$FLOWDOG_URL" || echo "$URL")" || true)
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  PAGE_BYTES=$(wc -c <"$WORK/page")
  echo "bench-tls.sh: $1 ready: HTTP $code, $PAGE_BYTES bytes" >&2
  [ "$code" = 200 ] || { cat "$WORK"/*.log "$WORK/nginx/error.log" 2>/dev/null | tail -40 >&2; exit 1; }
}

# wrk in the client namespace on CPU 0, in a session (an autogroup) of its own at nice 19.
client_wrk() {
  ip netns exec "$FDLAB_NS_CLIENT" setsid -w sh -c \
    'echo 19 >/proc/self/autogroup 2>/dev/null; exec nice -n 19 taskset -c 0 wrk "$@"' wrk "$@"
}

# Ticks (1/100 s) of CPU 1 busy and total, and of each thread of $1: "cpu1 BUSY TOTAL" then
# "TID COMM TICKS" lines.
cpu_snap() {
  python3 - "$1" <<'PY'
import os, sys
for l in open("/proc/stat"):
    if l.startswith("cpu1 "):
        v = [int(x) for x in l.split()[1:]]
        print("cpu1", sum(v) - v[3] - v[4], sum(v))
pid = sys.argv[1]
for t in os.listdir(f"/proc/{pid}/task"):
    try:
        s = open(f"/proc/{pid}/task/{t}/stat").read()
    except OSError:
        continue
    comm = s[s.index("(") + 1 : s.rindex(")")].replace(" ", "_")
    f = s[s.rindex(")") + 2 :].split()
    print(t, comm, int(f[11]) + int(f[12]))
PY
}
# "cpu1_busy_share proxy_cpu_cores busiest_thread busiest_share" between two snapshots.
cpu_diff() { # before after
  python3 - "$1" "$2" <<'PY'
import sys
def load(p):
    cpu, th = None, {}
    for l in open(p):
        a = l.split()
        if a[0] == "cpu1":
            cpu = (int(a[1]), int(a[2]))
        else:
            th[a[0]] = (a[1], int(a[2]))
    return cpu, th
(c0, t0), (c1, t1) = load(sys.argv[1]), load(sys.argv[2])
span = (c1[1] - c0[1]) or 1  # CPU 1's ticks over the run: its wall time
d = {t: (n, v - t0.get(t, (n, 0))[1]) for t, (n, v) in t1.items()}
busiest = max(d.items(), key=lambda kv: kv[1][1])
print("%.3f %.3f %s %.3f" % ((c1[0] - c0[0]) / span, sum(v for _, v in d.values()) / span,
      busiest[1][0], busiest[1][1] / span))
PY
}

# wrk's summary as "req/s p50 p90 p99 ok|errors" (latencies in ms), then the CPU figures.
wrk_run() { # url [extra wrk args]; PERF_TID: a thread to sample meanwhile into $WORK/perf.data
  local url=$1 perf_pid=''; shift
  if [ -n "${PERF_TID:-}" ]; then
    taskset -c 0 perf record -q -e cpu-clock -F 1000 -t "$PERF_TID" -o "$WORK/perf.data" \
      -- sleep $((seconds > 2 ? seconds - 1 : 1)) >/dev/null 2>&1 &
    perf_pid=$!
  fi
  cpu_snap "$PROXY_PID" >"$WORK/cpu.before"
  client_wrk -t 1 -c "$conns" -d "${seconds}s" --latency "$@" "$url" >"$WORK/wrk.out" 2>&1 || true
  cpu_snap "$PROXY_PID" >"$WORK/cpu.after"
  if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
  cat "$WORK/wrk.out" >>"$WORK/wrk.log"
  python3 - "$WORK/wrk.out" <<'PY' | tr '\n' ' '
import re, sys
t = open(sys.argv[1]).read()
ms = lambda v, u: float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", t)
print("%.0f %.3f %.3f %.3f %s" % (float(rps.group(1)) if rps else 0, lat.get("50", 0), lat.get("90", 0),
      lat.get("99", 0), "errors" if errs else "ok"))
PY
  cpu_diff "$WORK/cpu.before" "$WORK/cpu.after"
  grep -E "Non-2xx|Socket errors" "$WORK/wrk.out" | sed "s|^|bench-tls.sh:   wrk: |" >&2 || true
}

# Whether wrk's reconnections resume TLS sessions: 2 s of wrk -c1 with Connection: close,
# captured on the client's and the server's link; ClientHellos, those offering a session
# (pre_shared_key, extension 41), ServerHellos accepting one.
resumption() { # mode url port
  local cap_c=$WORK/$1-client.pcap cap_s=$WORK/$1-server.pcap
  ip netns exec "$FDLAB_NS_CLIENT" taskset -c 0 tcpdump -q -i "$FDLAB_CLIENT_IF" -s 0 -w "$cap_c" "tcp port $3" \
    >/dev/null 2>&1 &
  CAP_PIDS="$CAP_PIDS $!"
  ip netns exec "$FDLAB_NS_SERVER" taskset -c 0 tcpdump -q -i "$FDLAB_SERVER_IF" -s 0 -w "$cap_s" "tcp port 443" \
    >/dev/null 2>&1 &
  CAP_PIDS="$CAP_PIDS $!"
  sleep 1
  client_wrk -t 1 -c 1 -d 2s -H "Connection: close" "$2" >/dev/null 2>&1 || true
  sleep 1
  local p
  for p in $CAP_PIDS; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  CAP_PIDS=''
  count() { # pcap port filter
    tshark -r "$1" -d "tcp.port==$2,tls" -Y "$3" -T fields -e frame.number 2>/dev/null | wc -l
  }
  local hc hp sp uc up us
  hc=$(count "$cap_c" "$3" "tls.handshake.type == 1")
  hp=$(count "$cap_c" "$3" "tls.handshake.type == 1 && tls.handshake.extension.type == 41")
  sp=$(count "$cap_c" "$3" "tls.handshake.type == 2 && tls.handshake.extension.type == 41")
  uc=$(count "$cap_s" 443 "tls.handshake.type == 1")
  up=$(count "$cap_s" 443 "tls.handshake.type == 1 && tls.handshake.extension.type == 41")
  us=$(count "$cap_s" 443 "tls.handshake.type == 2 && tls.handshake.extension.type == 41")
  local cc cu
  cc=$(tshark -r "$cap_c" -d "tcp.port==$3,tls" -Y "tls.handshake.type == 2" -T fields -e tls.handshake.ciphersuite \
    2>/dev/null | sort | uniq -c | sort -rn | awk 'NR == 1 {print $2}')
  cu=$(tshark -r "$cap_s" -Y "tls.handshake.type == 2" -T fields -e tls.handshake.ciphersuite \
    2>/dev/null | sort | uniq -c | sort -rn | awk 'NR == 1 {print $2}')
  echo "$1: client side $hc ClientHellos, $hp offering a session, $sp resumed (cipher suite ${cc:-none}); upstream side $uc ClientHellos, $up offering a session, $us resumed (cipher suite ${cu:-none})"
  rm -f "$cap_c" "$cap_s"
}

# The sampled worker's time by group of symbols, one line.
profile_line() { # label
  perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null | python3 -c '
import collections, re, sys
g = collections.Counter()
for l in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.*)", l)
    if not m:
        continue
    p, s = float(m[1]), m[3].strip()
    if re.search(r"poll_once|vtable.shim|flowdog_rx_burst|ring_dequeue|adopt_spawned", s): k = "poll loop"
    elif re.search(r"aws_lc|rustls|x25519|curve25519|p256|ecdsa|aes|gcm|sha", s, re.I): k = "TLS"
    elif re.search(r"smoltcp|Leg::|intercept::tcp", s): k = "smoltcp legs"
    elif re.search(r"hyper|httparse|intercept::proxy", s): k = "HTTP"
    elif m[2] == "k": k = "kernel"
    elif s.startswith("0x"): k = "af_packet PMD"
    else: k = "other"
    g[k] += p
print(", ".join("%s %.0f %%" % (k, v) for k, v in g.most_common()))' | sed "s|^|$1: |"
}

declare -A best
record() { # key "rps p50 p90 p99 ok cpu1 proc thread share"
  local rps=${2%% *}
  if [ -z "${best[$1]:-}" ] || [ "$rps" -gt "${best[$1]%% *}" ]; then best[$1]=$2; fi
}

resume_notes=() counter_notes=() profile_notes=()
for r in $(seq "$repeat"); do
  for mode in nginx flowdog fastpath mitmproxy; do
    start "$mode" "$WORK/counters-$r.json"
    if [ "$mode" = flowdog ]; then
      for t in /proc/"$APP_PID"/task/*; do
        echo "bench-tls.sh:   flowdog thread $(cat "$t/comm"): CPUs $(awk '/Cpus_allowed_list/ {print $2}' "$t/status")" >&2
      done
    fi
    PERF_TID=''
    if ((profile)) && [ "$r" = 1 ] && [ "$mode" = flowdog ]; then
      PERF_TID=$(grep -l '^rte-worker' /proc/"$APP_PID"/task/*/comm | head -n1 | cut -d/ -f5)
    fi
    ka=$(wrk_run "$URL")
    [ -z "$PERF_TID" ] || profile_notes+=("$(profile_line keep-alive)")
    nc=$(wrk_run "$URL" -H "Connection: close")
    [ -z "$PERF_TID" ] || profile_notes+=("$(profile_line "new connection per request")")
    echo "bench-tls.sh: run $r $mode: keep-alive [$ka] new-connection [$nc] (req/s p50 p90 p99 ms, CPU-1 busy, proxy CPU cores, busiest thread and its share)" >&2
    record "$mode-ka" "$ka"
    record "$mode-nc" "$nc"
    if [ "$r" = 1 ] && [ "$mode" != fastpath ]; then
      port=443
      [ "$mode" = nginx ] && port=8443
      [ "$mode" = mitmproxy ] && port=8444
      resumption "$mode" "$URL" "$port" >"$WORK/resume.txt"
      resume_notes+=("$(cat "$WORK/resume.txt")")
      echo "bench-tls.sh:   ${resume_notes[-1]}" >&2
    fi
    stop_all
    if [ "$mode" = flowdog ]; then
      counter_notes+=("$(python3 - "$WORK/counters-$r.json" "$r" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c, t = d["control"], d["total"]
keys = ["tls_leaf_minted", "tls_leaf_cache_hits", "tls_leaf_mint_us_total", "tls_leaf_mint_us_max"]
s = "run %s: " % sys.argv[2] + ", ".join(f"{k} {c.get(k, 0)}" for k in keys)
s += "; " + ", ".join(f"{k} {t.get(k, 0)}" for k in ["tcp_pairs_created", "tls_intercepted", "http_requests", "http_responses"])
bad = {k: v for k, v in t.items() if v and (k.startswith("drop") or any(w in k for w in
       ("failed", "error", "rejected", "gone", "bad_", "no_ca", "timed_out", "refused", "unreachable", "no_pair", "no_mbuf", "no_header")))}
bad.update({k: v for k, v in c.items() if v and any(w in k for w in ("error", "queue_full", "nombuf", "full"))})
s += "; nonzero failure counters: " + (", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "none")
print(s)
PY
)")
      echo "bench-tls.sh:   flowdog counters ${counter_notes[-1]}" >&2
      # Its TLS and error messages, without the addresses, counted.
      grep -E "^flowdog: (tls: |.*(error|panic|warn))" "$WORK/app.log" | grep -vE "interception on|EAL arguments" |
        sed -E 's/(client|server)=[^ ]+ ?//g' | sort | uniq -c | sort -rn | head -5 |
        sed "s|^|bench-tls.sh:   flowdog log: |" >&2 || true
    fi
  done
done

table=$(python3 - "${best[nginx-ka]}" "${best[flowdog-ka]}" "${best[mitmproxy-ka]}" "${best[fastpath-ka]}" \
  "${best[nginx-nc]}" "${best[flowdog-nc]}" "${best[mitmproxy-nc]}" "${best[fastpath-nc]}" <<'PY'
import sys
rows = [a.split() for a in sys.argv[1:]]
names = ["nginx (TLS reverse proxy, direct path)", "flowdog intercepting (simulator + af_packet)",
         "mitmproxy (reverse mode, direct path)",
         "reference: flowdog fast path, no interception (TLS ends at the upstream nginx, CPU 0)"]
print("| load | set-up | req/s | p50 ms | p90 ms | p99 ms | CPU 1 busy | proxy CPU (cores) "
      "| req/s per busy CPU-1 core | CPU-1 us per request |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
per_core = {}
for k, load in enumerate(["keep-alive", "new connection per request"]):
    for j, name in enumerate(names):
        rps, p50, p90, p99, ok, cpu1, proc, thr, share = rows[4 * k + j]
        rps, cpu1 = float(rps), float(cpu1)
        pc = rps / cpu1 if cpu1 else 0
        per_core[(k, j)] = (rps, pc)
        us = 1e6 * cpu1 / rps if rps else 0
        flag = "" if ok == "ok" else " (errors)"
        if j == 3:  # the TLS work is the upstream nginx's, on CPU 0: no per-core figure
            print(f"| {load} | {name}{flag} | {rps:.0f} | {p50} | {p90} | {p99} | {cpu1:.2f} | {float(proc):.2f} "
                  f"| - | - |")
        else:
            print(f"| {load} | {name}{flag} | {rps:.0f} | {p50} | {p90} | {p99} | {cpu1:.2f} | {float(proc):.2f} "
                  f"| {pc:.0f} | {us:.0f} |")
print()
for k, load in enumerate(["keep-alive", "new connection per request"]):
    f, n, m = per_core[(k, 1)], per_core[(k, 0)], per_core[(k, 2)]
    q = lambda a, b: a / b if b else float("inf")
    print(f"- {load}: flowdog / nginx {q(f[0], n[0]):.2f} (req/s), {q(f[1], n[1]):.2f} (per busy CPU-1 core); "
          f"flowdog / mitmproxy {q(f[0], m[0]):.1f} (req/s), {q(f[1], m[1]):.1f} (per busy CPU-1 core); "
          f"flowdog intercepting / fast path {q(f[0], per_core[(k, 3)][0]):.2f} (req/s)")
PY
)
header="flowdog TLS interception, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), best of $repeat, wrk -t1 -c$conns -d${seconds}s, upstream nginx https://$HOST/ ($PAGE_BYTES-byte page)"
notes="TLS session resumption (wrk -t1 -c1 -H 'Connection: close', 2 s, tshark):"
for n in "${resume_notes[@]}"; do notes+=$'\n'"- $n"; done
if ((${#profile_notes[@]})); then
  notes+=$'\n\n'"flowdog's worker thread, perf cpu-clock samples by symbol group (run 1):"
  for n in "${profile_notes[@]}"; do notes+=$'\n'"- $n"; done
fi
notes+=$'\n\n'"flowdog counters (--counters-out, after each run):"
for n in "${counter_notes[@]}"; do notes+=$'\n'"- $n"; done
printf '%s\n\n%s\n\n%s\n' "$header" "$table" "$notes"
if [ -n "$out" ]; then printf '%s\n\n%s\n\n%s\n' "$header" "$table" "$notes" >"$out"; fi
