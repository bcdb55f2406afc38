#!/usr/bin/env bash
# A lab of network namespaces for running flowdog behind the userspace GWLB simulator:
#
#   ${FDLAB}-c (client)          ${FDLAB}-gw (GWLB simulator)                 ${FDLAB}-s (server)
#   eth0 198.18.1.10 ------- gwc 198.18.1.1    gws 198.18.2.1 ------- eth0 198.18.2.10 .11 .12
#        fd00:fd:1::10           fd00:fd:1::1   fd00:fd:2::1                fd00:fd:2::10
#                                tunc, tuns (TUN, no addresses)          nginx 80/443, h2c 8081,
#                                brapp 198.18.0.1                        iperf3, UDP/TCP echo 7,
#                                blackhole 198.18.3.0/24                 HTTP echo 8080, WS 8765
#                                 |-- gwa1 ------- dp0 ${FDLAB}-a1 (appliance 198.18.0.2, no IP)
#                                 |-- gwaN ------- dp0 ${FDLAB}-aN (appliance 198.18.0.(1+N))
#                                brmgmt 198.18.4.1
#                                 |-- gwm1 ------- mgmt0 ${FDLAB}-a1 198.18.4.2 (management)
#                                 |-- gwmN ------- mgmt0 ${FDLAB}-aN 198.18.4.(1+N)
#
# The management link is the appliance's second ENI on AWS: its kernel's own traffic (the
# plugins' outbound calls, such as flow_acceptor's authorizer) goes over it to the server
# subnet only (a route to 198.18.2.0/24, no default route); gw routes it by its main table.
#
# What the client or the server sends through the gw namespace is not forwarded by the kernel:
# policy routing sends everything arriving on gwc into the TUN tunc and everything arriving on
# gws into tuns, where the simulator reads it. What the simulator writes into a TUN is routed by
# the main table to the right veth. The appliances' dp0 carry no address: flowdog owns
# 198.18.0.(1+i) with MAC 02:fd:00:00:00:0i on DPDK's net_af_packet, and dp0 has that MAC.
#
# Addresses are from 198.18.0.0/15 and fd00:fd::/32; no namespace has a link to the root
# namespace, so nothing routes out of the machine.
#
# The server's services, each on every server address (198.18.2.10 .11 .12, fd00:fd:2::10):
#   nginx 80 (HTTP/1.1), 443 (TLS, h2 or HTTP/1.1), 8081 (cleartext HTTP/2 with prior
#         knowledge, h2c: the content of port 80; no HTTP/1.1 there). www serves /index.html,
#         /echo, /big.bin (20 MiB) and /big100.bin (100 MiB), both random, made at "up".
#         TLS-only names (443 alone, chosen by SNI) for TLS interception tests, each serving
#         www's content and /echo over h2 and HTTP/1.1 (they resolve to 198.18.2.10 and
#         fd00:fd:2::10):
#           expired.lab.test    signed by the lab CA, valid 2020-01-01..2020-01-02 only
#           untrusted.lab.test  self-signed (its own issuer, FDLAB_UNTRUSTED_CA), not the lab CA
#           bank.lab.test       signed by the lab CA, its own subject (CN=bank.lab.test, O=lab
#                               bank): the host a test keeps out of decryption
#           h1.lab.test .. h8.lab.test  one lab-CA certificate listing all eight (for h2load)
#         www.youtube.com (198.18.2.10, fd00:fd:2::10; 80, 443, 8081) for the seed's rick.js
#         (plugin cloudfront_functions): www's content, and /watch answers "watch v=<v>".
#         Everything else (www, img, sts, www.youtube.com and the server's IP addresses) has
#         one lab-CA certificate; the lab CA is $FDLAB_STATE/ca.pem (FDLAB_CA,
#         FDLAB_UPSTREAM_CA).
#   iperf3 5201; UDP and TCP echo on port 7 (echo.py).
#   scripts/lab_httpecho.py (copied to the state dir):
#     8080  a strict HTTP/1.1 server that parses requests itself: GET /headers answers the
#           request head byte for byte (header-name case survives), POST|PUT /upload answers
#           the sha256 and size of the body (Content-Length or chunked, Expect: 100-continue),
#           GET /stream/N sends N bytes (byte i = i % 251) chunked; anything malformed: 400.
#     8765  a WebSocket echo (python3-websockets): every message back with its type.
#   scripts/lab_authorizer.py on 9100 (FDLAB_AUTHORIZER_URL, reached over the management link):
#     the flow authorizer of the flow_acceptor plugin; its rules are $FDLAB_STATE/authorizer.json
#     (FDLAB_AUTHORIZER_RULES, read at every request; absent: accept all) and it logs every
#     request to FDLAB_AUTHORIZER_LOG, one JSON line each.
#   Nothing listens on port 9 (FDLAB_CLOSED_PORT): a TCP connect to it gets an RST.
# In gw, 198.18.3.0/24 (FDLAB_BLACKHOLE_IP 198.18.3.1) is a blackhole route: what the client
# sends there through the GWLB path is dropped silently, so a TCP connect to it times out.
#
# Usage (as root):
#   scripts/lab.sh up [--appliances N]   tear down leftovers of this prefix, build the lab (N: 1..4)
#   scripts/lab.sh down                  remove everything (processes, namespaces, files)
#   scripts/lab.sh status                show the lab; exit 0 if it is up, 1 if not
#   scripts/lab.sh env                   KEY=value lines describing the lab (shell-sourceable)
#   scripts/lab.sh appliance-config I [DRAIN_SECONDS]
#                                        a flowdog config for appliance I (net_af_packet on its
#                                        dp0, one worker on CPU 1), to extend with [policy] etc.
#
# Every name carries the prefix $FDLAB (default fdlab): namespaces ${FDLAB}-gw, -c, -s, -a1..-a4,
# state in /run/${FDLAB}, /etc/netns/${FDLAB}-*/hosts. Interfaces live inside namespaces and have
# short fixed names. Needs: ip, nginx, iperf3, openssl, curl, python3 and python3-websockets
# (scripts/setup.sh).
set -euo pipefail
umask 022

P=${FDLAB:-fdlab}
if ! [[ $P =~ ^[a-z0-9][a-z0-9-]{0,15}$ ]]; then
  echo "lab.sh: FDLAB='$P' must be 1-16 characters of a-z, 0-9 and '-'" >&2
  exit 2
fi

STATE=/run/$P
NS_GW=$P-gw NS_C=$P-c NS_S=$P-s
MAX_APPS=4
# The appliances' network carries inner packets plus 68 bytes of Geneve: jumbo. The client and
# server links stay at 1500 (an internet-facing VPC): the appliance's af_packet frames (2 KiB)
# then hold every Geneve packet, and inner packets stay far below GWLB's 8500-byte limit, past
# which it drops silently (no ICMP, so PMTUD cannot help).
MTU=9001 EDGE_MTU=1500 TUN_MTU=9000
GW_BR_MAC=02:fd:00:00:ff:01
HOSTS_WWW=www.lab.test HOSTS_IMG=img.lab.test HOSTS_STS=sts.lab.test
# A real name, for the seed's rick.js (it only acts on www.youtube.com); see the header.
HOSTS_YOUTUBE=www.youtube.com
# TLS-only upstreams (port 443) for interception tests; see the header.
HOSTS_EXPIRED=expired.lab.test HOSTS_UNTRUSTED=untrusted.lab.test HOSTS_BANK=bank.lab.test
HOSTS_MANY=(h1.lab.test h2.lab.test h3.lab.test h4.lab.test h5.lab.test h6.lab.test h7.lab.test
  h8.lab.test)
# The expired certificate's validity (openssl ca -startdate/-enddate, UTCTime).
EXPIRED_FROM=200101000000Z EXPIRED_UNTIL=200102000000Z
BIG_SIZE=$((20 * 1024 * 1024)) BIG100_SIZE=$((100 * 1024 * 1024))
ECHO_PORT=7 IPERF_PORT=5201 HTTPECHO_PORT=8080 H2C_PORT=8081 WS_PORT=8765 AUTHORIZER_PORT=9100
# Nothing may listen on CLOSED_PORT in the server namespace (checked at "up").
CLOSED_PORT=9
BLACKHOLE_NET=198.18.3.0/24 BLACKHOLE_IP=198.18.3.1
# Every server service listens on each of these (one socket per address, so that a reply
# leaves from the address the request went to).
SERVER_ADDRS=(198.18.2.10 198.18.2.11 198.18.2.12 fd00:fd:2::10)
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Serialises up/down of one prefix. The empty lock file stays (deleting it while another caller
# waits on it would let two callers in at once); /run/lock is a tmpfs.
LOCK=/run/lock/flowdog-lab-$P.lock

die() { echo "lab.sh: $*" >&2; exit 1; }
log() { echo "lab.sh[$P]: $*" >&2; }

usage() {
  sed -n '/^# Usage/,/^#   scripts\/lab.sh env/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# This prefix's namespaces and nothing else (FDLAB=fd must not match fd-x-gw).
lab_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${P}-(gw|c|s|a[0-9]+)\$" || true
}

# Pids of the processes in the given namespaces.
ns_pids() {
  local ns
  for ns in "$@"; do ip netns pids "$ns" 2>/dev/null || true; done
}

# Stops every process in the lab's namespaces, deletes the namespaces (and with them every veth,
# the bridge and the TUNs), the /etc/netns entries and the state dir. Quiet if nothing exists.
teardown() {
  local nss pids i d
  mapfile -t nss < <(lab_namespaces)
  if [ ${#nss[@]} -gt 0 ]; then
    mapfile -t pids < <(ns_pids "${nss[@]}")
    if [ ${#pids[@]} -gt 0 ]; then
      kill -TERM "${pids[@]}" 2>/dev/null || true
      for ((i = 0; i < 30; i++)); do
        mapfile -t pids < <(ns_pids "${nss[@]}")
        [ ${#pids[@]} -eq 0 ] && break
        sleep 0.1
      done
      if [ ${#pids[@]} -gt 0 ]; then
        kill -KILL "${pids[@]}" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
          mapfile -t pids < <(ns_pids "${nss[@]}")
          [ ${#pids[@]} -eq 0 ] && break
          sleep 0.1
        done
        [ ${#pids[@]} -eq 0 ] || log "warning: processes still in the lab: ${pids[*]}"
      fi
    fi
    for d in "${nss[@]}"; do ip netns del "$d" 2>/dev/null || log "warning: ip netns del $d failed"; done
  fi
  for d in /etc/netns/"$P"-*; do
    [ -d "$d" ] || continue
    [[ ${d##*/} =~ ^${P}-(gw|c|s|a[0-9]+)$ ]] && rm -rf -- "$d"
  done
  rm -rf -- "$STATE"
}

take_lock() {
  mkdir -p "${LOCK%/*}"
  exec 9>"$LOCK"
  flock 9
}

# nsx NS CMD...: runs CMD in namespace NS with the lock's fd closed (no daemon may inherit it:
# it would hold the lock for as long as it lives).
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@" 9>&-; }

# wait_for SECONDS DESCRIPTION CMD...: polls CMD every 0.1 s.
wait_for() {
  local secs=$1 what=$2 i; shift 2
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "timed out after ${secs}s waiting for $what"
}

alive() { # alive NS PIDFILE: the pid in PIDFILE is a live process in NS
  local ns=$1 f=$2 pid
  [ -s "$f" ] || return 1
  pid=$(head -n1 "$f" | tr -dc 0-9)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ip netns pids "$ns" 2>/dev/null | grep -qx "$pid"
}

app_ip() { echo "198.18.0.$((1 + $1))"; }
mgmt_ip() { echo "198.18.4.$((1 + $1))"; }
app_mac() { printf '02:fd:00:00:00:%02x\n' "$1"; }

need_tools() {
  local t missing=()
  for t in ip nginx iperf3 openssl curl ss flock sha256sum "$PY"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ -f "$LAB_DIR/lab_httpecho.py" ] || missing+=("$LAB_DIR/lab_httpecho.py")
  [ -f "$LAB_DIR/lab_authorizer.py" ] || missing+=("$LAB_DIR/lab_authorizer.py")
  # The WebSocket server needs websockets >= 10.1 (a handler without the path argument).
  # Debian's python3-websockets is seen by /usr/bin/python3, not by a pyenv or venv $PY.
  WSPY=
  for t in "$PY" /usr/bin/python3; do
    if "$t" -c 'import sys; from websockets.version import version as v
sys.exit(tuple(int(x) for x in v.split(".")[:2]) < (10, 1))' >/dev/null 2>&1; then
      WSPY=$t
      break
    fi
  done
  [ -n "$WSPY" ] || missing+=("python3-websockets (>= 10.1)")
  [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (run scripts/setup.sh)"
}

write_hosts() {
  local ns
  for ns in "$NS_GW" "$NS_C" "$NS_S"; do
    mkdir -p "/etc/netns/$ns"
    cat >"/etc/netns/$ns/hosts" <<EOF
# flowdog lab $P (scripts/lab.sh); bind-mounted over /etc/hosts by 'ip netns exec $ns'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
198.18.2.10	$HOSTS_WWW
fd00:fd:2::10	$HOSTS_WWW
198.18.2.11	$HOSTS_IMG
198.18.2.12	$HOSTS_STS
198.18.2.10	$HOSTS_YOUTUBE
fd00:fd:2::10	$HOSTS_YOUTUBE
198.18.2.10	$HOSTS_EXPIRED $HOSTS_UNTRUSTED $HOSTS_BANK ${HOSTS_MANY[*]}
fd00:fd:2::10	$HOSTS_EXPIRED $HOSTS_UNTRUSTED $HOSTS_BANK ${HOSTS_MANY[*]}
EOF
  done
}

build_net() {
  local n=$1 i ns ifc

  # Namespaces, with sysctls set before any interface exists so that every new interface
  # inherits them from "default": no IPv6 DAD (no test waits for it), no IPv6 at all on the
  # appliances (the kernel sends nothing on dp0), forwarding and no rp_filter in gw.
  for ns in "$NS_GW" "$NS_C" "$NS_S"; do
    ip netns add "$ns"
    nsx "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip -n "$ns" link set lo up
  done
  nsx "$NS_GW" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
    net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv4.conf.all.accept_local=1 net.ipv4.conf.default.accept_local=1 \
    net.ipv6.conf.default.accept_ra=0 net.ipv6.conf.default.router_solicitations=0
  for ((i = 1; i <= n; i++)); do
    ns=$P-a$i
    ip netns add "$ns"
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
  done

  # gw <-> client, gw <-> server. The veth ends are created directly in their namespaces.
  ip link add gwc netns "$NS_GW" mtu "$EDGE_MTU" type veth peer name eth0 netns "$NS_C" mtu "$EDGE_MTU"
  ip link add gws netns "$NS_GW" mtu "$EDGE_MTU" type veth peer name eth0 netns "$NS_S" mtu "$EDGE_MTU"

  ip -n "$NS_GW" addr add 198.18.1.1/24 dev gwc
  ip -n "$NS_GW" addr add fd00:fd:1::1/64 dev gwc nodad
  ip -n "$NS_GW" addr add 198.18.2.1/24 dev gws
  ip -n "$NS_GW" addr add fd00:fd:2::1/64 dev gws nodad

  ip -n "$NS_C" addr add 198.18.1.10/24 dev eth0
  ip -n "$NS_C" addr add fd00:fd:1::10/64 dev eth0 nodad
  ip -n "$NS_S" addr add 198.18.2.10/24 dev eth0
  ip -n "$NS_S" addr add 198.18.2.11/24 dev eth0
  ip -n "$NS_S" addr add 198.18.2.12/24 dev eth0
  ip -n "$NS_S" addr add fd00:fd:2::10/64 dev eth0 nodad

  # The appliances' segment: a bridge with the GWLB's address, one veth per appliance.
  ip -n "$NS_GW" link add brapp type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  nsx "$NS_GW" sysctl -qw net.ipv6.conf.brapp.disable_ipv6=1
  ip -n "$NS_GW" link set brapp address "$GW_BR_MAC" mtu "$MTU"
  ip -n "$NS_GW" addr add 198.18.0.1/24 dev brapp
  for ((i = 1; i <= n; i++)); do
    ns=$P-a$i
    ip link add "gwa$i" netns "$NS_GW" mtu "$MTU" type veth peer name dp0 netns "$ns" mtu "$MTU"
    nsx "$NS_GW" sysctl -qw "net.ipv6.conf.gwa$i.disable_ipv6=1"
    ip -n "$NS_GW" link set "gwa$i" master brapp
    nsx "$ns" sysctl -qw net.ipv6.conf.dp0.disable_ipv6=1
    ip -n "$ns" link set dp0 address "$(app_mac "$i")"
    ip -n "$ns" link set dp0 up
    ip -n "$NS_GW" link set "gwa$i" up
  done
  ip -n "$NS_GW" link set brapp up

  # The management segment: the appliances' kernels reach the server subnet through gw.
  ip -n "$NS_GW" link add brmgmt type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  nsx "$NS_GW" sysctl -qw net.ipv6.conf.brmgmt.disable_ipv6=1
  ip -n "$NS_GW" addr add 198.18.4.1/24 dev brmgmt
  for ((i = 1; i <= n; i++)); do
    ns=$P-a$i
    ip link add "gwm$i" netns "$NS_GW" type veth peer name mgmt0 netns "$ns"
    nsx "$NS_GW" sysctl -qw "net.ipv6.conf.gwm$i.disable_ipv6=1"
    ip -n "$NS_GW" link set "gwm$i" master brmgmt
    ip -n "$ns" addr add "$(mgmt_ip "$i")/24" dev mgmt0
    ip -n "$ns" link set mgmt0 up
    ip -n "$NS_GW" link set "gwm$i" up
    ip -n "$ns" route add 198.18.2.0/24 via 198.18.4.1
  done
  ip -n "$NS_GW" link set brmgmt up
  # The UDP checksum of what gw's sockets send to the appliances is otherwise left for an
  # "offload" that a veth never does, and af_packet would show it unfilled to flowdog and tshark.
  if command -v ethtool >/dev/null 2>&1; then
    nsx "$NS_GW" ethtool -K brapp tx off >/dev/null 2>&1 || log "warning: ethtool -K brapp tx off failed"
  fi

  # The simulator's TUNs: persistent, single queue, IFF_TUN (open them with IFF_TUN, IFF_NO_PI
  # as wished, without IFF_MULTI_QUEUE). No addresses and no IPv6 link-local address either; the
  # kernel still writes an MLD report or two into them when a reader attaches (the simulator
  # does not carry link-local/multicast chatter). IPv6 stays enabled so v6 can be forwarded.
  for ifc in tunc tuns; do
    ip -n "$NS_GW" tuntap add dev "$ifc" mode tun
    ip -n "$NS_GW" link set "$ifc" addrgenmode none
    ip -n "$NS_GW" link set "$ifc" mtu "$TUN_MTU" txqueuelen 1000 up
  done

  ip -n "$NS_GW" link set gwc up
  ip -n "$NS_GW" link set gws up
  ip -n "$NS_C" link set eth0 up
  ip -n "$NS_S" link set eth0 up

  # rp_filter off everywhere (the effective value is max(all, interface)): packets from the
  # client and server subnets come back in on the TUNs.
  for ifc in lo gwc gws brapp brmgmt tunc tuns; do
    nsx "$NS_GW" sysctl -qw "net.ipv4.conf.$ifc.rp_filter=0"
  done
  for ((i = 1; i <= n; i++)); do
    nsx "$NS_GW" sysctl -qw "net.ipv4.conf.gwa$i.rp_filter=0" "net.ipv4.conf.gwm$i.rp_filter=0"
  done

  # Policy routing: from the client into tunc, from the server into tuns. The local table (pref
  # 0) still delivers what is addressed to gw itself (ARP, ND, ping of 198.18.1.1).
  # Before those: the server's answers to the management segment take the main table.
  ip -n "$NS_GW" rule add pref 900 to 198.18.4.0/24 lookup main
  local fam
  for fam in -4 -6; do
    ip -n "$NS_GW" "$fam" rule add pref 1000 iif gwc lookup 101
    ip -n "$NS_GW" "$fam" rule add pref 1001 iif gws lookup 102
    ip -n "$NS_GW" "$fam" route add default dev tunc table 101
    ip -n "$NS_GW" "$fam" route add default dev tuns table 102
  done

  ip -n "$NS_C" route add default via 198.18.1.1
  ip -n "$NS_C" -6 route add default via fd00:fd:1::1
  ip -n "$NS_S" route add default via 198.18.2.1
  ip -n "$NS_S" -6 route add default via fd00:fd:2::1

  # A destination that swallows packets, for connect timeouts: what the simulator writes into a
  # TUN for 198.18.3.0/24 (the client's packets, back from the appliance) is routed by the main
  # table to this blackhole and dropped without a trace. A blackhole route fails with EINVAL, for
  # which the kernel's ip_error sends nothing; "unreachable" (EHOSTUNREACH) or "prohibit" would
  # answer with ICMP, and so would no route at all (net unreachable). So no RST and no ICMP: a
  # TCP connect to it times out. (A socket in gw itself gets EINVAL at once, without a packet.)
  ip -n "$NS_GW" route add blackhole "$BLACKHOLE_NET"
}

make_content() {
  mkdir -p "$STATE/www" "$STATE/img"
  cat >"$STATE/www/index.html" <<EOF
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>flowdog lab</title></head>
<body><h1>flowdog lab $P</h1><p>Served by nginx in $NS_S behind the GWLB simulator.</p></body></html>
EOF
  head -c "$BIG_SIZE" /dev/urandom >"$STATE/www/big.bin"
  sha256sum "$STATE/www/big.bin" | cut -d' ' -f1 >"$STATE/big.bin.sha256"
  # A transfer five times longer than big.bin's. /run is a tmpfs: it holds 100 MiB of memory
  # while the lab is up.
  head -c "$BIG100_SIZE" /dev/urandom >"$STATE/www/big100.bin"
  sha256sum "$STATE/www/big100.bin" | cut -d' ' -f1 >"$STATE/big100.bin.sha256"

  # A real 64x64 RGB PNG (a gradient), standard library only.
  "$PY" - "$STATE/img/cat.png" <<'EOF'
import struct, sys, zlib
w = h = 64
rows = b"".join(b"\x00" + bytes(v for x in range(w) for v in (x * 4, y * 4, 255 - x * 2)) for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))
open(sys.argv[1], "wb").write(png)
EOF
  chmod -R a+rX "$STATE/www" "$STATE/img"
}

make_certs() {
  local d=$STATE/tls
  mkdir -p "$d"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/ca.key" -out "$STATE/ca.pem" -days 30 -subj "/O=flowdog lab/CN=flowdog lab $P CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/server.key" -out "$d/server.csr" -subj "/O=flowdog lab/CN=$HOSTS_WWW" 2>/dev/null
  cat >"$d/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=DNS:$HOSTS_WWW,DNS:$HOSTS_IMG,DNS:$HOSTS_STS,DNS:$HOSTS_YOUTUBE,IP:198.18.2.10,IP:198.18.2.11,IP:198.18.2.12,IP:fd00:fd:2::10
EOF
  openssl x509 -req -in "$d/server.csr" -CA "$STATE/ca.pem" -CAkey "$d/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days 30 -extfile "$d/server.ext" \
    -out "$d/server.pem" 2>/dev/null

  # bank.lab.test and h1..h8.lab.test: lab-CA certificates of their own.
  lab_leaf bank "/O=lab bank/CN=$HOSTS_BANK" "DNS:$HOSTS_BANK"
  local h sans=
  for h in "${HOSTS_MANY[@]}"; do sans+=${sans:+,}DNS:$h; done
  lab_leaf many "/O=flowdog lab/CN=${HOSTS_MANY[0]}" "$sans"

  # expired.lab.test: "openssl x509 -req" of OpenSSL 3.0 cannot set notBefore, "openssl ca" can.
  local e=$d/expired-ca
  mkdir -p "$e"
  : >"$e/index.txt"
  openssl rand -hex 8 >"$e/serial"
  cat >"$e/ca.cnf" <<EOF
[ca]
default_ca = lab
[lab]
database = $e/index.txt
new_certs_dir = $e
serial = $e/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
organizationName = optional
commonName = supplied
EOF
  leaf_ext "DNS:$HOSTS_EXPIRED" >"$d/expired.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/expired.key" -out "$d/expired.csr" -subj "/O=flowdog lab/CN=$HOSTS_EXPIRED" 2>/dev/null
  openssl ca -batch -notext -preserveDN -config "$e/ca.cnf" -cert "$STATE/ca.pem" \
    -keyfile "$d/ca.key" -startdate "$EXPIRED_FROM" -enddate "$EXPIRED_UNTIL" \
    -extfile "$d/expired.ext" -in "$d/expired.csr" -out "$d/expired.pem" >/dev/null 2>&1 \
    || die "openssl ca (expired certificate) failed"

  # untrusted.lab.test: self-signed (issuer = subject, CA:FALSE: a leaf that is its own trust
  # anchor for whoever trusts exactly this PEM), nothing to do with the lab CA.
  {
    printf '[req]\ndistinguished_name = dn\nx509_extensions = leaf\nprompt = no\n[dn]\n[leaf]\n'
    leaf_ext "DNS:$HOSTS_UNTRUSTED" | grep -v '^authorityKeyIdentifier'
  } >"$d/untrusted.cnf"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/untrusted.key" -out "$STATE/untrusted.pem" -days 30 -config "$d/untrusted.cnf" \
    -subj "/O=untrusted lab/CN=$HOSTS_UNTRUSTED" -set_serial "0x$(openssl rand -hex 8)" 2>/dev/null \
    || die "openssl req -x509 (untrusted certificate) failed"

  local f
  for f in "$d/server.pem" "$d/bank.pem" "$d/many.pem" "$d/expired.pem" "$STATE/untrusted.pem"; do
    [ -s "$f" ] || die "no certificate $f"
  done
  chmod 600 "$d"/*.key
}

# leaf_ext SANS: the X.509v3 extensions of a TLS server certificate.
leaf_ext() {
  cat <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=$1
EOF
}

# lab_leaf NAME SUBJECT SANS: $STATE/tls/NAME.{key,pem}, signed by the lab CA for 30 days.
lab_leaf() {
  local d=$STATE/tls name=$1
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/$name.key" -out "$d/$name.csr" -subj "$2" 2>/dev/null
  leaf_ext "$3" >"$d/$name.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$STATE/ca.pem" -CAkey "$d/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days 30 -extfile "$d/$name.ext" \
    -out "$d/$name.pem" 2>/dev/null || die "openssl x509 -req ($name certificate) failed"
}

write_nginx_conf() {
  local d=$STATE/nginx user=www-data
  id -u "$user" >/dev/null 2>&1 || user=nobody
  mkdir -p "$d/tmp"
  # Every "listen" pair: all IPv4 and all IPv6 addresses of the server namespace. "http2"
  # without "ssl" is cleartext HTTP/2 with prior knowledge (h2c, no Upgrade from HTTP/1.1).
  local l80='listen 80; listen [::]:80;' l443='listen 443 ssl http2; listen [::]:443 ssl http2;'
  local l8081="listen $H2C_PORT http2; listen [::]:$H2C_PORT http2;"
  # www's content, also served by the TLS-only hosts. /echo: who the server saw (the client's
  # address must survive the GWLB and the appliance).
  local www="root $STATE/www;
        index index.html;
        location = /echo {
            default_type text/plain;
            return 200 \"method=\$request_method uri=\$request_uri host=\$host remote=\$remote_addr:\$remote_port proto=\$server_protocol https=\$https\\n\";
        }"
  local tls=$STATE/tls
  cat >"$d/nginx.conf" <<EOF
# flowdog lab $P (scripts/lab.sh): nginx in $NS_S. Nothing here comes from /etc/nginx.
user $user;
worker_processes 2;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
    types {
        text/html html;
        text/plain txt;
        image/png png;
        image/jpeg jpg;
        image/gif gif;
        application/octet-stream bin;
    }
    default_type application/octet-stream;
    access_log $d/access.log;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    server_tokens off;
    ssl_certificate $STATE/tls/server.pem;
    ssl_certificate_key $STATE/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;

    # nginx's 32 hex digit request id, written as a UUID for the STS RequestId.
    map \$request_id \$lab_request_uuid {
        "~^(?<u1>.{8})(?<u2>.{4})(?<u3>.{4})(?<u4>.{4})(?<u5>.{12})\$" "\$u1-\$u2-\$u3-\$u4-\$u5";
        default \$request_id;
    }

    # Any other name: 404.
    server {
        listen 80 default_server; listen [::]:80 default_server;
        listen 443 ssl http2 default_server; listen [::]:443 ssl http2 default_server;
        listen $H2C_PORT http2 default_server; listen [::]:$H2C_PORT http2 default_server;
        server_name _;
        return 404;
    }

    server {
        $l80 $l443 $l8081
        server_name $HOSTS_WWW 198.18.2.10 [fd00:fd:2::10];
        $www
    }

    # TLS-only upstreams for interception tests, chosen by SNI (see scripts/lab.sh's header).
    server {
        $l443
        server_name $HOSTS_EXPIRED;
        ssl_certificate $tls/expired.pem;
        ssl_certificate_key $tls/expired.key;
        $www
    }

    server {
        $l443
        server_name $HOSTS_UNTRUSTED;
        ssl_certificate $STATE/untrusted.pem;
        ssl_certificate_key $tls/untrusted.key;
        $www
    }

    server {
        $l443
        server_name $HOSTS_BANK;
        ssl_certificate $tls/bank.pem;
        ssl_certificate_key $tls/bank.key;
        $www
    }

    # Many names on one certificate, for h2load; long keep-alive connections.
    server {
        $l443
        server_name ${HOSTS_MANY[*]};
        ssl_certificate $tls/many.pem;
        ssl_certificate_key $tls/many.key;
        keepalive_requests 1000000;
        $www
    }

    # For the seed's rick.js: www's content; /watch names the video it was asked for.
    server {
        $l80 $l443 $l8081
        server_name $HOSTS_YOUTUBE;
        location = /watch {
            default_type text/plain;
            return 200 "watch v=\$arg_v\n";
        }
        $www
    }

    server {
        $l80 $l443 $l8081
        server_name $HOSTS_IMG 198.18.2.11;
        # /cat.png, and the .png, .jpg and .gif files tests write into \$FDLAB_STATE/img.
        root $STATE/img;
    }

    # What AWS STS GetCallerIdentity answers (GET or POST, whatever the body).
    server {
        $l80 $l443 $l8081
        server_name $HOSTS_STS 198.18.2.12;
        location / {
            default_type text/xml;
            add_header x-amzn-RequestId \$lab_request_uuid always;
            return 200 '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:iam::123456789012:user/lab</Arn>
    <UserId>AIDAEXAMPLELABUSER01</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>\$lab_request_uuid</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>
';
        }
    }
}
EOF
}

write_echo_server() {
  cat >"$STATE/echo.py" <<'EOF'
"""UDP and TCP echo for the flowdog lab: echo.py PORT PIDFILE ADDR... One socket per address so
that a reply leaves from the address the request went to (the server has several)."""
import os, selectors, socket, sys, threading

port, pidfile, addrs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
try:
    os.setsid()
except OSError:
    pass
sel = selectors.DefaultSelector()

def bound(addr, kind):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    s.setblocking(False)
    return s

for a in addrs:
    sel.register(bound(a, socket.SOCK_DGRAM), selectors.EVENT_READ, "udp")
    t = bound(a, socket.SOCK_STREAM)
    t.listen(128)
    sel.register(t, selectors.EVENT_READ, "tcp")

def tcp_echo(c):
    with c:
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                c.sendall(d)
        except OSError:
            pass

with open(pidfile + ".tmp", "w") as f:
    f.write(f"{os.getpid()}\n")
os.rename(pidfile + ".tmp", pidfile)

while True:
    for key, _ in sel.select():
        s = key.fileobj
        if key.data == "udp":
            for _ in range(64):
                try:
                    d, peer = s.recvfrom(65535)
                    s.sendto(d, peer)
                except BlockingIOError:
                    break
                except OSError:
                    pass
        else:
            try:
                c, _ = s.accept()
            except OSError:
                continue
            c.setblocking(True)
            threading.Thread(target=tcp_echo, args=(c,), daemon=True).start()
EOF
}

start_services() {
  local d=$STATE/nginx out
  if ! out=$(nsx "$NS_S" nginx -t -q -p "$d" -c "$d/nginx.conf" -e "$d/error.log" 2>&1); then
    die "nginx -t failed: $out"
  fi
  nsx "$NS_S" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" </dev/null >>"$d/stderr.log" 2>&1 \
    || die "nginx did not start: $(tail -n 5 "$d/error.log" "$d/stderr.log" 2>/dev/null)"

  nsx "$NS_S" iperf3 -s -D -p "$IPERF_PORT" --pidfile "$STATE/iperf3.pid" --logfile "$STATE/iperf3.log" \
    </dev/null >/dev/null 2>&1 || die "iperf3 did not start: $(tail -n 5 "$STATE/iperf3.log" 2>/dev/null)"

  # A plain command in the background (no subshell stays behind); echo.py writes its pid file.
  write_echo_server
  ip netns exec "$NS_S" "$PY" "$STATE/echo.py" "$ECHO_PORT" "$STATE/echo.pid" \
    "${SERVER_ADDRS[@]}" </dev/null >>"$STATE/echo.log" 2>&1 9>&- &
  disown

  # The HTTP and WebSocket echo servers, likewise; they write their pid files once listening.
  # A copy in the state dir: the lab keeps running what it started with while the checkout
  # changes, and "down" removes it with the rest.
  install -m 0644 "$LAB_DIR/lab_httpecho.py" "$STATE/lab_httpecho.py"
  ip netns exec "$NS_S" "$PY" "$STATE/lab_httpecho.py" http "$HTTPECHO_PORT" "$STATE/httpecho.pid" \
    "${SERVER_ADDRS[@]}" </dev/null >>"$STATE/httpecho.log" 2>&1 9>&- &
  disown
  ip netns exec "$NS_S" "$WSPY" "$STATE/lab_httpecho.py" ws "$WS_PORT" "$STATE/wsecho.pid" \
    "${SERVER_ADDRS[@]}" </dev/null >>"$STATE/wsecho.log" 2>&1 9>&- &
  disown
  install -m 0644 "$LAB_DIR/lab_authorizer.py" "$STATE/lab_authorizer.py"
  ip netns exec "$NS_S" "$PY" "$STATE/lab_authorizer.py" "$AUTHORIZER_PORT" "$STATE/authorizer.pid" \
    "$STATE/authorizer.json" "$STATE/authorizer.log" 198.18.2.10 </dev/null >>"$STATE/authorizer.err" 2>&1 9>&- &
  disown

  wait_for 10 "nginx (http)" nsx "$NS_S" curl -fsS -o /dev/null --max-time 2 "http://$HOSTS_WWW/"
  wait_for 10 "nginx (https)" nsx "$NS_S" curl -fsS -o /dev/null --max-time 2 --cacert "$STATE/ca.pem" \
    "https://$HOSTS_WWW/"
  local h
  for h in "$HOSTS_BANK" "${HOSTS_MANY[@]}"; do
    wait_for 10 "nginx (https $h)" nsx "$NS_S" curl -fsS -o /dev/null --max-time 2 \
      --cacert "$STATE/ca.pem" "https://$h/"
  done
  for h in "$HOSTS_EXPIRED" "$HOSTS_UNTRUSTED"; do
    wait_for 10 "nginx (https $h)" nsx "$NS_S" curl -fsS -o /dev/null --max-time 2 -k \
      "https://$h/"
  done
  # What the interception tests rely on: these two fail verification with the lab CA.
  for h in "$HOSTS_EXPIRED" "$HOSTS_UNTRUSTED"; do
    if nsx "$NS_S" curl -sS -o /dev/null --max-time 2 --cacert "$STATE/ca.pem" "https://$h/" 2>/dev/null; then
      die "https://$h/ verified with the lab CA, which it must not"
    fi
  done
  nsx "$NS_S" curl -fsS -o /dev/null --max-time 2 --cacert "$STATE/untrusted.pem" \
    "https://$HOSTS_UNTRUSTED/" || die "https://$HOSTS_UNTRUSTED/ did not verify with $STATE/untrusted.pem"
  wait_for 10 "iperf3" alive "$NS_S" "$STATE/iperf3.pid"
  wait_for 10 "iperf3 listening" sh -c "ip netns exec '$NS_S' ss -Hltn 'sport = :$IPERF_PORT' | grep -q ."
  wait_for 10 "the echo server (see $STATE/echo.log)" alive "$NS_S" "$STATE/echo.pid"
  wait_for 10 "nginx (h2c)" nsx "$NS_S" curl -fsS -o /dev/null --max-time 2 --http2-prior-knowledge \
    "http://$HOSTS_WWW:$H2C_PORT/"
  wait_for 10 "the HTTP echo server (see $STATE/httpecho.log)" alive "$NS_S" "$STATE/httpecho.pid"
  wait_for 10 "the WebSocket echo server (see $STATE/wsecho.log)" alive "$NS_S" "$STATE/wsecho.pid"
  wait_for 10 "the authorizer (see $STATE/authorizer.err)" alive "$NS_S" "$STATE/authorizer.pid"
  if nsx "$NS_S" ss -Hltn "sport = :$CLOSED_PORT" | grep -q .; then
    die "something listens on port $CLOSED_PORT in $NS_S, which must stay closed"
  fi
}

write_env() {
  local n=$1 i
  {
    echo "FDLAB=$P"
    echo "FDLAB_STATE=$STATE"
    echo "FDLAB_CA=$STATE/ca.pem"
    echo "FDLAB_NS_GW=$NS_GW"
    echo "FDLAB_NS_CLIENT=$NS_C"
    echo "FDLAB_NS_SERVER=$NS_S"
    echo "FDLAB_MTU=$MTU"
    echo "FDLAB_EDGE_MTU=$EDGE_MTU"
    echo "FDLAB_TUN_MTU=$TUN_MTU"
    echo "FDLAB_GW_IF_CLIENT=gwc"
    echo "FDLAB_GW_IF_SERVER=gws"
    echo "FDLAB_GW_TUN_CLIENT=tunc"
    echo "FDLAB_GW_TUN_SERVER=tuns"
    echo "FDLAB_GW_TABLE_CLIENT=101"
    echo "FDLAB_GW_TABLE_SERVER=102"
    echo "FDLAB_GW_BRIDGE=brapp"
    echo "FDLAB_GW_IP=198.18.0.1"
    echo "FDLAB_GW_MAC=$GW_BR_MAC"
    echo "FDLAB_GW_CLIENT_IP4=198.18.1.1"
    echo "FDLAB_GW_CLIENT_IP6=fd00:fd:1::1"
    echo "FDLAB_GW_SERVER_IP4=198.18.2.1"
    echo "FDLAB_GW_SERVER_IP6=fd00:fd:2::1"
    echo "FDLAB_CLIENT_IF=eth0"
    echo "FDLAB_CLIENT_IP4=198.18.1.10"
    echo "FDLAB_CLIENT_IP6=fd00:fd:1::10"
    echo "FDLAB_SERVER_IF=eth0"
    echo "FDLAB_SERVER_IP4=198.18.2.10"
    echo "FDLAB_SERVER_IP4_IMG=198.18.2.11"
    echo "FDLAB_SERVER_IP4_STS=198.18.2.12"
    echo "FDLAB_SERVER_IP6=fd00:fd:2::10"
    echo "FDLAB_HOST_WWW=$HOSTS_WWW"
    echo "FDLAB_HOST_IMG=$HOSTS_IMG"
    echo "FDLAB_HOST_STS=$HOSTS_STS"
    echo "FDLAB_HOST_EXPIRED=$HOSTS_EXPIRED"
    echo "FDLAB_HOST_UNTRUSTED=$HOSTS_UNTRUSTED"
    echo "FDLAB_HOST_BANK=$HOSTS_BANK"
    echo "FDLAB_HOSTS_MANY=\"${HOSTS_MANY[*]}\""
    echo "FDLAB_UPSTREAM_CA=$STATE/ca.pem"
    echo "FDLAB_UNTRUSTED_CA=$STATE/untrusted.pem"
    echo "FDLAB_BIG_URL_PATH=/big.bin"
    echo "FDLAB_BIG_SIZE=$BIG_SIZE"
    echo "FDLAB_BIG_SHA256=$(cat "$STATE/big.bin.sha256")"
    echo "FDLAB_BIG100_URL_PATH=/big100.bin"
    echo "FDLAB_BIG100_SIZE=$BIG100_SIZE"
    echo "FDLAB_BIG100_SHA256=$(cat "$STATE/big100.bin.sha256")"
    echo "FDLAB_PNG_URL_PATH=/cat.png"
    echo "FDLAB_PNG_SHA256=$(sha256sum "$STATE/img/cat.png" | cut -d' ' -f1)"
    echo "FDLAB_IPERF_PORT=$IPERF_PORT"
    echo "FDLAB_ECHO_PORT=$ECHO_PORT"
    echo "FDLAB_HTTPECHO_PORT=$HTTPECHO_PORT"
    echo "FDLAB_H2C_PORT=$H2C_PORT"
    echo "FDLAB_WS_PORT=$WS_PORT"
    echo "FDLAB_AUTHORIZER_URL=http://198.18.2.10:$AUTHORIZER_PORT"
    echo "FDLAB_AUTHORIZER_RULES=$STATE/authorizer.json"
    echo "FDLAB_AUTHORIZER_LOG=$STATE/authorizer.log"
    echo "FDLAB_CLOSED_PORT=$CLOSED_PORT"
    echo "FDLAB_BLACKHOLE_NET=$BLACKHOLE_NET"
    echo "FDLAB_BLACKHOLE_IP=$BLACKHOLE_IP"
    echo "FDLAB_APPLIANCES=$n"
    for ((i = 1; i <= n; i++)); do
      echo "FDLAB_APP${i}_NS=$P-a$i"
      echo "FDLAB_APP${i}_IF=dp0"
      echo "FDLAB_APP${i}_IP=$(app_ip "$i")"
      echo "FDLAB_APP${i}_MAC=$(app_mac "$i")"
      echo "FDLAB_APP${i}_GW_IF=gwa$i"
      echo "FDLAB_APP${i}_MGMT_IP=$(mgmt_ip "$i")"
    done
  } >"$STATE/lab.env.tmp"
  mv "$STATE/lab.env.tmp" "$STATE/lab.env"
}

on_up_exit() {
  local rc=$?
  if [ $rc -ne 0 ] && [ -z "${FDLAB_KEEP:-}" ]; then
    log "up failed, tearing down"
    teardown
  fi
}

cmd_up() {
  local n=1
  while [ $# -gt 0 ]; do
    case $1 in
      --appliances) [ $# -ge 2 ] || usage; n=$2; shift 2 ;;
      --appliances=*) n=${1#*=}; shift ;;
      *) usage ;;
    esac
  done
  if ! [[ $n =~ ^[1-9]$ ]] || [ "$n" -gt $MAX_APPS ]; then die "--appliances must be 1..$MAX_APPS"; fi
  need_tools
  take_lock
  teardown
  # A failed "up" leaves nothing behind (FDLAB_KEEP=1 keeps it to look at).
  trap on_up_exit EXIT
  mkdir -p "$STATE"
  build_net "$n"
  write_hosts
  make_content
  make_certs
  write_nginx_conf
  start_services
  write_env "$n"
  trap - EXIT
  log "up: $n appliance(s); 'scripts/lab.sh env' describes it, state in $STATE"
}

cmd_down() {
  take_lock
  teardown
}

cmd_status() {
  local ns up=0 n i
  mapfile -t nss < <(lab_namespaces)
  if [ ${#nss[@]} -eq 0 ]; then
    echo "lab $P: down (no namespaces)"
    return 1
  fi
  echo "lab $P: namespaces ${nss[*]}"
  for ns in "${nss[@]}"; do
    echo "== $ns"
    ip -n "$ns" -br addr show | sed 's/^/  /'
  done
  [ -f "$STATE/lab.env" ] || { echo "lab $P: incomplete (no $STATE/lab.env)"; up=1; }
  for ns in "$NS_GW" "$NS_C" "$NS_S"; do
    printf '%s\n' "${nss[@]}" | grep -qx "$ns" || { echo "missing namespace $ns"; up=1; }
  done
  if [ -f "$STATE/lab.env" ]; then
    n=$(sed -n 's/^FDLAB_APPLIANCES=//p' "$STATE/lab.env")
    for ((i = 1; i <= n; i++)); do
      printf '%s\n' "${nss[@]}" | grep -qx "$P-a$i" || { echo "missing namespace $P-a$i"; up=1; }
    done
  fi
  local svc f
  for svc in nginx:nginx/nginx.pid iperf3:iperf3.pid udp-echo:echo.pid http-echo:httpecho.pid \
    ws-echo:wsecho.pid authorizer:authorizer.pid; do
    f=$STATE/${svc#*:}
    if alive "$NS_S" "$f"; then
      echo "$NS_S ${svc%%:*}: running (pid $(head -n1 "$f"))"
    else
      echo "$NS_S ${svc%%:*}: NOT running"
      up=1
    fi
  done
  if [ $up -eq 0 ]; then echo "lab $P: up"; else echo "lab $P: NOT fully up"; fi
  return $up
}

cmd_env() {
  [ -f "$STATE/lab.env" ] || die "lab $P is not up (no $STATE/lab.env)"
  cat "$STATE/lab.env"
}

cmd_appliance_config() { # I [DRAIN_SECONDS]
  local i=$1 drain=${2:-0}
  [ -f "$STATE/lab.env" ] || die "lab $P is not up (no $STATE/lab.env)"
  local ns ifc ip mac
  ns=$(sed -n "s/^FDLAB_APP${i}_NS=//p" "$STATE/lab.env")
  ifc=$(sed -n "s/^FDLAB_APP${i}_IF=//p" "$STATE/lab.env")
  ip=$(sed -n "s/^FDLAB_APP${i}_IP=//p" "$STATE/lab.env")
  mac=$(sed -n "s/^FDLAB_APP${i}_MAC=//p" "$STATE/lab.env")
  [ -n "$ns" ] || die "appliance $i is not in lab $P"
  cat <<TOML
# flowdog run in $ns (scripts/lab.sh appliance-config $i)
[eal]
args = ["--no-pci", "--log-level=lib.eal:warning", "--log-level=pmd.*:warning"]
vdevs = ["net_af_packet0,iface=$ifc"]
file_prefix = "$P-a$i"
hugepages = "off"

[port]
name = "net_af_packet0"

[appliance]
ip = "$ip"
mac = "$mac"

[workers]
cpus = [1]
control_cpu = 0

[control]
health_ports = [80]
drain_seconds = $drain
TOML
}

[ $# -ge 1 ] || usage
[ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
# The real interpreter, not a pyenv shim that may behave differently under "ip netns exec".
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=
[ -n "$PY" ] || PY=/usr/bin/python3
cmd=$1; shift
case $cmd in
  up) cmd_up "$@" ;;
  down) [ $# -eq 0 ] || usage; cmd_down ;;
  status) [ $# -eq 0 ] || usage; cmd_status ;;
  env) [ $# -eq 0 ] || usage; cmd_env ;;
  appliance-config) if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi; cmd_appliance_config "$@" ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
