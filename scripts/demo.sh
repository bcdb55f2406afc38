#!/usr/bin/env bash
# The demo: real clients and servers talking through a simulated Gateway Load Balancer and the
# appliance on DPDK.
#
#   scripts/lab.sh up          namespaces: client, server (nginx HTTP/HTTPS, iperf3, echo), gw, a1
#   flowdog run  (in a1)       the appliance: DPDK net_af_packet on the veth dp0, --no-pci
#   flowdog gwlb (in gw)       the GWLB: Geneve to the appliance, health checks, strict returns
#   curl, ping, UDP            from the client namespace, through all of it; ports 8080 and 443
#                              intercepted: the appliance terminates TCP (and TLS, with leaves it
#                              mints from a root made by `flowdog ca init`) and rewrites the HTTP
#                              exchange with proxy-wasm plugins (header_case, sts_rickroll, and
#                              cloudfront_functions running rick.js); every new flow is put to
#                              the lab's authorizer by the flow_acceptor plugin (UDP to one
#                              address denied);
#                              bank.lab.test is excluded from decryption by SNI
#
# It prints what each client saw, then the simulator's and the appliance's counters, and tears
# everything down. Addresses are from 198.18.0.0/15; nothing routes out. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

scripts/setup.sh
echo "== build (release), and the plugins (wasm32-wasip1)"
cargo build --release -q
scripts/build-plugins.sh >/dev/null
PLUGINS=$ROOT/wasm-plugins/target/wasm32-wasip1/release
BIN=$ROOT/target/release/flowdog

export FDLAB=fddemo
WORK=$(mktemp -d /tmp/flowdog-demo.XXXXXX)
APP_PID='' SIM_PID=''
cleanup() {
  for p in $SIM_PID $APP_PID; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/lab.sh down >/dev/null 2>&1 || true
  rm -rf "$WORK" "/var/run/dpdk/$FDLAB-a1"
}
trap cleanup EXIT

echo "== lab: scripts/lab.sh up (namespaces $FDLAB-c, $FDLAB-s, $FDLAB-gw, $FDLAB-a1)"
scripts/lab.sh up --appliances 1 >"$WORK/lab.log" 2>&1 || { cat "$WORK/lab.log"; exit 1; }
# shellcheck disable=SC1090
source <(scripts/lab.sh env)
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# The root the client trusts for intercepted HTTPS, next to the lab's own CA (nginx's
# certificates, which the excluded host still shows).
"$BIN" ca init --out "$WORK/ca" >/dev/null
cat "$WORK/ca/ca.pem" "$FDLAB_CA" >"$WORK/trust.pem"
printf '{"deny": [{"TransportProtocol": "udp", "Destination.Address": "%s"}]}\n' "$FDLAB_SERVER_IP4_IMG" \
  >"$FDLAB_AUTHORIZER_RULES"

{
  scripts/lab.sh appliance-config 1 1
  printf '\n[[policy.rules]]\nname = "no-telnet"\nprotocol = "tcp"\ndst_ports = "23"\naction = "reset"\n'
  # Intercepted: HTTP to the lab's echo server (it answers with the request head it received).
  printf '\n[[policy.rules]]\nname = "inspect"\nprotocol = "tcp"\ndst_ports = "%s"\naction = "intercept"\n' \
    "$FDLAB_HTTPECHO_PORT"
  printf '\n[[policy.rules]]\nname = "inspect-tls"\nprotocol = "tcp"\ndst_ports = "443"\naction = "intercept"\n'
  # The plugin chain: header_case for the www host, sts_rickroll on STS answers.
  printf '\n[[plugin]]\nname = "header_case"\nfile = "%s/header_case.wasm"\nconfiguration = %s\n' \
    "$PLUGINS" "'{\"hosts\": [\"$FDLAB_HOST_WWW\"]}'"
  printf '\n[[plugin]]\nname = "sts_rickroll"\nfile = "%s/sts_rickroll.wasm"\n' "$PLUGINS"
  # cloudfront_functions runs the seed's rick.js, unchanged, on its JavaScript engine.
  printf "\n[[plugin]]\nname = \"cloudfront_functions\"\nfile = \"%s/cloudfront_functions.wasm\"\nconfiguration = '''\n%s\n'''\n" \
    "$PLUGINS" "$(cat "$ROOT/wasm-plugins/cloudfront_functions/rick.js")"
  # The flow acceptor (the seed's lambda_acceptor): every new flow is put to the lab's authorizer,
  # which denies UDP to the img address (its rules file, below).
  printf '\n[[plugin]]\nname = "flow_acceptor"\nkind = "acceptor"\nfile = "%s/flow_acceptor.wasm"\nconfiguration = %s\n' \
    "$PLUGINS" "'{\"upstream\": \"authorizer\", \"path\": \"/authorize\", \"on_error\": \"accept\"}'"
  printf '\n[acceptor]\ntimeout_ms = 1000\ndefault = "accept"\ndeny = "reset"\n'
  # Compiled modules kept between demo runs (the JavaScript engine's takes seconds to compile).
  printf '\n[plugins]\ncache_dir = "%s/target/demo-wasm-cache"\n[plugins.upstreams]\nauthorizer = "%s"\n' \
    "$ROOT" "$FDLAB_AUTHORIZER_URL"
  printf '\n[tls]\nroot_cert = "%s"\nroot_key = "%s"\nupstream_system_roots = false\nupstream_ca_file = "%s"\nexclude_sni = ["%s"]\n' \
    "$WORK/ca/ca.pem" "$WORK/ca/ca.key" "$FDLAB_UPSTREAM_CA" "$FDLAB_HOST_BANK"
} >"$WORK/appliance.toml"

cat >"$WORK/gwlb.toml" <<TOML
ip = "$FDLAB_GW_IP"
consumer = { tun = "$FDLAB_GW_TUN_CLIENT", vpc_endpoint_id = "vpce-0c0c0c0c0c0c0c0c0" }
provider = { tun = "$FDLAB_GW_TUN_SERVER", vpc_endpoint_id = "vpce-05e5e5e5e5e5e5e5e" }

[[targets]]
ip = "$FDLAB_APP1_IP"

[health_check]
protocol = "http"
port = 80
path = "/healthz"
interval_s = 1
timeout_s = 1
healthy_threshold = 2
unhealthy_threshold = 2
TOML

echo "== appliance: flowdog run in $FDLAB_APP1_NS (DPDK net_af_packet on $FDLAB_APP1_IF, $FDLAB_APP1_IP)"
# (ip netns exec execs flowdog: $! is flowdog's PID, which the SIGTERM below must reach.)
ip netns exec "$FDLAB_APP1_NS" "$BIN" run --config "$WORK/appliance.toml" --counters-out "$WORK/appliance.json" \
  >"$WORK/appliance.log" 2>&1 &
APP_PID=$!
for _ in $(seq 100); do grep -q "flowdog: ready" "$WORK/appliance.log" && break; sleep 0.1; done
grep -q "flowdog: ready" "$WORK/appliance.log" || { cat "$WORK/appliance.log"; exit 1; }
grep "flowdog: ready" "$WORK/appliance.log"

echo "== GWLB: flowdog gwlb in $FDLAB_NS_GW ($FDLAB_GW_IP), health check HTTP /healthz every 1 s"
ip netns exec "$FDLAB_NS_GW" "$BIN" gwlb --config "$WORK/gwlb.toml" --counters-out "$WORK/gwlb.json" \
  >"$WORK/gwlb.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 50); do
  [ -s "$WORK/gwlb.json" ] && python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["targets"][0]["checks_passed"] < 1)' "$WORK/gwlb.json" 2>/dev/null && break
  sleep 0.2
done

echo "== clients (from $FDLAB_NS_CLIENT, $FDLAB_CLIENT_IP4 / $FDLAB_CLIENT_IP6)"
show() { printf '  %-58s %s\n' "$1" "$2"; }
CURL=(curl -sS --max-time 20 --cacert "$WORK/trust.pem")
fetch() { # label, curl args...
  local label=$1; shift
  local out
  if out=$(in_ns "$FDLAB_NS_CLIENT" "${CURL[@]}" -o /dev/null -w '%{http_code}, %{size_download} B in %{time_total} s from %{remote_ip} (%{http_version})' "$@" 2>&1); then
    show "$label" "HTTP $out"
  else
    show "$label" "FAILED: $out"
  fi
}
fetch "curl http://www.lab.test/" http://www.lab.test/
fetch "curl https://www.lab.test/" https://www.lab.test/
fetch "curl -6 https://www.lab.test/" -6 https://www.lab.test/
fetch "curl https://img.lab.test/cat.png" https://img.lab.test/cat.png
# sts_rickroll rewrites the UserId of GetCallerIdentity answers (nginx sends AIDA... ).
sts=$(in_ns "$FDLAB_NS_CLIENT" "${CURL[@]}" -X POST --data 'Action=GetCallerIdentity&Version=2011-06-15' \
  "https://$FDLAB_HOST_STS/" 2>&1 || true)
userid=$(printf '%s\n' "$sts" | sed -n 's:.*<UserId>\(.*\)</UserId>.*:\1:p')
account=$(printf '%s\n' "$sts" | sed -n 's:.*<Account>\(.*\)</Account>.*:\1:p')
show "curl -X POST https://$FDLAB_HOST_STS/ GetCallerIdentity" "UserId ${userid:-MISSING} (plugin sts_rickroll), Account ${account:-MISSING}"
# cloudfront_functions (rick.js): on www.youtube.com only one video may be watched.
yt=$(in_ns "$FDLAB_NS_CLIENT" "${CURL[@]}" -o /dev/null -w '%{http_code} to %{redirect_url}' https://www.youtube.com/ 2>&1 || true)
show "curl https://www.youtube.com/" "HTTP $yt (plugin cloudfront_functions, rick.js)"
yt=$(in_ns "$FDLAB_NS_CLIENT" "${CURL[@]}" 'https://www.youtube.com/watch?v=dQw4w9WgXcQ' 2>&1 || true)
show "curl https://www.youtube.com/watch?v=dQw4w9WgXcQ" "${yt:-NOTHING} (the only video reaches the server)"
in_ns "$FDLAB_NS_CLIENT" "${CURL[@]}" -o "$WORK/big.bin" https://www.lab.test/big.bin
got=$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)
[ "$got" = "$FDLAB_BIG_SHA256" ] && verdict="sha256 matches the server's" || verdict="sha256 MISMATCH"
show "curl https://www.lab.test/big.bin (20 MiB)" "$verdict"
ping_out=$(in_ns "$FDLAB_NS_CLIENT" ping -c 3 -i 0.2 -W 2 "$FDLAB_SERVER_IP4" 2>&1 | grep -E 'packets transmitted' || true)
show "ping -c 3 $FDLAB_SERVER_IP4" "${ping_out:-FAILED}"
udp=$(in_ns "$FDLAB_NS_CLIENT" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); ok = 0
for i in range(5):
    m = b"flowdog-demo-%d" % i
    s.sendto(m, (sys.argv[1], int(sys.argv[2])))
    try: ok += s.recvfrom(2048)[0] == m
    except socket.timeout: pass
print(ok)' "$FDLAB_SERVER_IP4" "$FDLAB_ECHO_PORT")
show "UDP echo to $FDLAB_SERVER_IP4:$FDLAB_ECHO_PORT, 5 datagrams" "$udp of 5 echoed"
udp_denied=$(in_ns "$FDLAB_NS_CLIENT" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1); ok = 0
for i in range(3):
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    try: ok += len(s.recvfrom(2048)[0]) == 1
    except socket.timeout: pass
print(ok)' "$FDLAB_SERVER_IP4_IMG" "$FDLAB_ECHO_PORT")
asked=$(wc -l <"$FDLAB_AUTHORIZER_LOG" 2>/dev/null || echo 0)
denied=$(grep -c '"answer": false' "$FDLAB_AUTHORIZER_LOG" 2>/dev/null || true)
show "UDP to $FDLAB_SERVER_IP4_IMG:$FDLAB_ECHO_PORT (authorizer: deny)" "$udp_denied of 3 echoed (plugin flow_acceptor)"
show "  the authorizer was asked about" "${asked// /} flows so far, ${denied:-0} denied (one question per flow)"
telnet=$(in_ns "$FDLAB_NS_CLIENT" curl -sS --max-time 5 "telnet://$FDLAB_SERVER_IP4:23" 2>&1 </dev/null | head -n 1 || true)
show "TCP to port 23 (policy: reset)" "${telnet:-no answer}"
# Intercepted: the server's echo of the request head shows the rewritten header name, curl's
# response headers show the one the appliance added.
icpt=$(in_ns "$FDLAB_NS_CLIENT" "${CURL[@]}" -D "$WORK/icpt.head" "http://$FDLAB_HOST_WWW:$FDLAB_HTTPECHO_PORT/headers" 2>&1 || true)
seen=$(printf '%s\n' "$icpt" | grep -i '^user-agent:' | tr -d '\r' || true)
added=$(grep -i '^x-flowdog:' "$WORK/icpt.head" 2>/dev/null | tr -d '\r' || true)
show "curl http://$FDLAB_HOST_WWW:$FDLAB_HTTPECHO_PORT/headers (header_case)" "server saw \"${seen:-NOTHING}\""
show "  (curl sent \"User-Agent: curl/...\")" "client got \"${added:-NO x-flowdog header}\""
# Intercepted HTTPS: the leaf curl verified was minted by the appliance (issuer: its
# intermediate), and the response carries the header the rewrite added.
tls_v=$(in_ns "$FDLAB_NS_CLIENT" "${CURL[@]}" -v -D "$WORK/tls.head" -o /dev/null "https://$FDLAB_HOST_WWW/echo" 2>&1 || true)
issuer=$(printf '%s\n' "$tls_v" | sed -n 's/^\*  issuer: //p' | head -n 1)
added=$(grep -i '^x-flowdog:' "$WORK/tls.head" 2>/dev/null | tr -d '\r' || true)
proto=$(head -n 1 "$WORK/tls.head" 2>/dev/null | tr -d '\r' | sed 's/ *$//' || true)
show "curl https://$FDLAB_HOST_WWW/echo (TLS intercepted)" "${proto:-FAILED}, \"${added:-NO x-flowdog header}\""
show "  leaf certificate issued by" "${issuer:-UNKNOWN}"
bank_v=$(in_ns "$FDLAB_NS_CLIENT" "${CURL[@]}" -v -o /dev/null "https://$FDLAB_HOST_BANK/" 2>&1 || true)
issuer=$(printf '%s\n' "$bank_v" | sed -n 's/^\*  issuer: //p' | head -n 1)
show "curl https://$FDLAB_HOST_BANK/ (excluded by SNI)" "issuer ${issuer:-UNKNOWN}"
health=$(in_ns "$FDLAB_NS_GW" curl -sS --max-time 3 -w ' (HTTP %{http_code})' "http://$FDLAB_APP1_IP/healthz" 2>&1 | tr -d '\n')
show "health check: curl http://$FDLAB_APP1_IP/healthz (from gw)" "$health"

echo "== stopping: the GWLB, then the appliance (SIGTERM: 503 while it drains for 1 s, then exit)"
sleep 1.2   # one more counters snapshot from the simulator
kill -TERM "$SIM_PID"; wait "$SIM_PID" || true; SIM_PID=
kill -TERM "$APP_PID"; wait "$APP_PID" || true; APP_PID=
for f in gwlb appliance; do
  [ -s "$WORK/$f.json" ] || { echo "demo: $f wrote no counters; its log:"; tail -n 20 "$WORK/$f.log"; exit 1; }
done
python3 "$ROOT/scripts/demo_summary.py" "$WORK/gwlb.json" "$WORK/appliance.json"
