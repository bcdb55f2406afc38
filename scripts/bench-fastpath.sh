#!/usr/bin/env bash
# bench-fastpath.sh: how fast is flowdog's fast path, next to the cost of bouncing a frame?
#
#   scripts/bench-fastpath.sh [--quick] [--out FILE] [--flows "1 1000 100000"] [--sizes "64 1500"]
#                             [--warmup S] [--measure S] [--repeat N] [--quiet-wait S]
#                             [--hugepages auto|off|reserve] [--pages N] [--no-build] [--keep]
#
# The generator is dpdk-testpmd (io forwarding, one lcore on CPU 0) replaying a pcap from
# `flowdog gen pcap` (net_pcap, infinite_rx=1) into a net_memif server port and counting what
# comes back on it. The device under test (DUT) is the memif client, its one busy-polling lcore
# on CPU 1:
#   (a) dpdk-testpmd --forward-mode=macswap: the baseline, the cost of bouncing a frame;
#   (b) flowdog run: the fast path (parse outer + Geneve + inner, flow table, swap, transmit).
# Both DUTs run for every case in the same script run, with the same generator settings.
# The rate reported is the generator's memif Rx-pps (what came back), averaged over --measure
# seconds after --warmup seconds; "offered" is the generator's memif Tx-pps (what the DUT
# accepted) and "tried" its pcap Rx-pps (what it read and tried to send). Offered well below
# tried: the DUT's ring was full, the DUT is the bottleneck; offered close to tried: the
# generator is (its one core also copies every frame out of the pcap and back in from memif).
#
# Each run's line on stderr also gives the per-second range and the share of its CPU that the
# busiest thread of the generator and of the DUT got: below 0.9, something else ran there and
# the result is marked "contended". The machine must be otherwise idle: before each run the
# script waits (--quiet-wait) until no CPU is busy. On a shared machine, --repeat 3 reports the
# best of three alternating runs per DUT.
#
# flowdog's counters are checked after each run (fast_path ~ rx, no drops but for a little
# tx_refused backpressure, the expected number of flows), so that a DUT that drops or
# misroutes cannot look fast.
#
# Speed is reported, never asserted: the exit status is non-zero only when a run failed (a process
# did not start, the memif link never came up, a process died during the run).
#
# Every DPDK process runs with --no-pci, its own --file-prefix, virtual devices only, and
# --no-huge unless hugepages are used (--hugepages). With --hugepages reserve the script reserves
# 2 MiB pages through hugepages/reserve.sh and gives them back through hugepages/release.sh on
# exit, whatever happens. Temp files live in a mktemp directory that is removed on exit, as are the
# memif sockets and DPDK's runtime directories of the processes it started.
set -euo pipefail

readonly PROG=${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
readonly FLOWDOG_BUILT=$ROOT/target/release/flowdog
readonly PARSE=$ROOT/scripts/bench_parse.py

# CPUs: the generator's forwarding lcore and every main lcore (they sleep) on GEN_CPU, the DUT's
# busy-polling lcore alone on DUT_CPU.
readonly GEN_CPU=0
readonly DUT_CPU=1
readonly CTL_CPU=$GEN_CPU

flows_list="1 1000 100000"
sizes="64 1500"
warmup=2
measure=8
out=""
huge_mode=auto
pages=1024
build=1
keep=0
quiet_wait=120
repeat=1

usage() {
    cat <<EOF
usage: $PROG [options]

  --quick            1 s warm-up and 3 s measurement per run (smoke test)
  --out FILE         also write the results table (Markdown) to FILE
  --flows "LIST"     flow counts (default "$flows_list")
  --sizes "LIST"     inner IP packet sizes in bytes (default "$sizes")
  --warmup S         seconds skipped after the memif link is up (default $warmup)
  --measure S        seconds averaged (default $measure)
  --hugepages MODE   auto: use hugepages if enough are already reserved and mounted, else --no-huge
                     (default); off: always --no-huge; reserve: reserve --pages 2 MiB pages for
                     the run (root) and release them on exit
  --pages N          2 MiB pages to reserve with --hugepages reserve (default $pages)
  --repeat N         run each DUT N times per case, alternating, and report the best (default 1)
  --quiet-wait S     before each run, wait up to S seconds for both CPUs to be idle (default $quiet_wait)
  --no-build         do not run cargo build --release first
  --keep             keep the temp directory (logs, configs, counters) and print its path
  -h, --help         this text
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 2; }
note() { echo "$PROG: $*" >&2; }

while (($#)); do
    case $1 in
        --quick) warmup=1; measure=3; shift ;;
        --out) (($# >= 2)) || die "--out needs a file"; out=$2; shift 2 ;;
        --flows) (($# >= 2)) || die "--flows needs a list"; flows_list=$2; shift 2 ;;
        --sizes) (($# >= 2)) || die "--sizes needs a list"; sizes=$2; shift 2 ;;
        --warmup) (($# >= 2)) || die "--warmup needs seconds"; warmup=$2; shift 2 ;;
        --measure) (($# >= 2)) || die "--measure needs seconds"; measure=$2; shift 2 ;;
        --hugepages) (($# >= 2)) || die "--hugepages needs auto, off or reserve"; huge_mode=$2; shift 2 ;;
        --pages) (($# >= 2)) || die "--pages needs a count"; pages=$2; shift 2 ;;
        --repeat) (($# >= 2)) || die "--repeat needs a count"; repeat=$2; shift 2 ;;
        --quiet-wait) (($# >= 2)) || die "--quiet-wait needs seconds"; quiet_wait=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_pos() { is_uint "$1" && (($1 > 0)); }
for v in $flows_list; do is_pos "$v" || die "--flows: '$v' is not a positive integer"; done
for v in $sizes; do
    if ! is_uint "$v" || ((v < 64 || v > 1500)); then die "--sizes: '$v' is outside 64..1500"; fi
done
is_uint "$warmup" || die "--warmup: '$warmup' is not a whole number of seconds"
is_pos "$measure" || die "--measure: '$measure' is not a positive whole number of seconds"
is_uint "$quiet_wait" || die "--quiet-wait: '$quiet_wait' is not a whole number of seconds"
is_pos "$repeat" || die "--repeat: '$repeat' is not a positive integer"
is_pos "$pages" || die "--pages: '$pages' is not a positive integer"
case $huge_mode in auto | off | reserve) ;; *) die "--hugepages: '$huge_mode' is not auto, off or reserve" ;; esac
[[ -z $out || -d $(dirname "$out") ]] || die "--out: directory $(dirname "$out") does not exist"

for c in dpdk-testpmd python3 timeout stdbuf; do
    command -v "$c" >/dev/null || die "$c is not installed"
done
(($(nproc) >= 2)) || die "needs 2 CPUs (generator on CPU $GEN_CPU, device under test on CPU $DUT_CPU)"

# ---------------------------------------------------------------------------------------------
# State for the exit trap.

PFX=fdbench-$$                  # every DPDK --file-prefix starts with this
if ((EUID == 0)); then RUNTIME=/var/run/dpdk; else RUNTIME=${XDG_RUNTIME_DIR:-/tmp}/dpdk; fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fdbench.XXXXXX")
FLOWDOG=$TMP/flowdog            # the binary under test, copied from target/release
PIDS=()                         # `timeout` processes of the DPDK processes still running
reserved=0                      # 1 once reserve.sh ran: release.sh must run
HUGE_MNT=$TMP/hugepages         # our own hugetlbfs mount (reserve mode)
HUGE_DIR=""                     # the hugetlbfs mount DPDK uses, if any
export FLOWDOG_HP_STATE=$TMP/hugepages.state   # reserve.sh's undo record: ours, not the system's

# Stops a process started by start_bg: SIGINT to its `timeout` wrapper, which passes it on (and
# sends SIGKILL 10 s later if the process is still there); SIGKILL after 15 s. Returns the exit
# status of the `timeout` wrapper: the process's own, 124 if its time ran out, 128 + N if signal
# N killed it.
stop_pid() {
    local pid=$1 i rc=0
    if kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "${BG_WRAP[$pid]}" 2>/dev/null || true
    rc=$(cat "${BG_LOG[$pid]}.rc" 2>/dev/null || echo 255)
    local keep_pids=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep_pids+=("$p"); done
    PIDS=("${keep_pids[@]}")
    return "$rc"
}

remove_dpdk_leftovers() { # runtime dirs and hugepage files of our prefixes
    rm -rf "$RUNTIME/$PFX"-* 2>/dev/null || true
    if [[ -n $HUGE_DIR ]]; then rm -f "$HUGE_DIR/$PFX"-*map_* 2>/dev/null || true; fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p" || true; done
    remove_dpdk_leftovers
    if ((reserved)); then
        if ! "$ROOT/hugepages/release.sh" --mount "$HUGE_MNT" >"$TMP/release.log" 2>&1; then
            note "hugepages/release.sh failed; its output:"
            cat "$TMP/release.log" >&2
            rc=1
        fi
    fi
    if ((keep)); then
        note "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The line of a DPDK log that says why it failed.
first_error() {
    { grep -m1 -E 'Cause:' "$1" || grep -m1 -iE 'error|panic|fail' "$1" || tail -n 1 "$1"; } | sed 's/^[[:space:]]*//'
}

# " (SIGSEGV)" for an exit status above 128.
signame() {
    if (($1 > 128)); then echo " (SIG$(kill -l $(($1 - 128)) 2>/dev/null || echo $(($1 - 128))))"; fi
}

# Runs "$@" in the background under `timeout LIMIT`, output to LOG; sets BG_PID.
# A wrapper subshell waits for it and writes its exit status to LOG.rc (so that bash reports no
# "Killed" or "Segmentation fault" on the terminal: run_one reports them).
declare -A BG_WRAP=() BG_LOG=()
start_bg() {
    local limit=$1 log=$2 i
    shift 2
    rm -f "$log.pid" "$log.rc"
    (
        timeout -s INT -k 10 "$limit" "$@" >"$log" 2>&1 </dev/null &
        echo $! >"$log.pid"
        rc=0
        wait $! || rc=$?
        echo "$rc" >"$log.rc"
    ) 2>/dev/null &
    local wrap=$!
    for ((i = 0; i < 100; i++)); do
        [[ -s $log.pid ]] && break
        sleep 0.02
    done
    BG_PID=$(cat "$log.pid")
    BG_WRAP[$BG_PID]=$wrap
    BG_LOG[$BG_PID]=$log
    PIDS+=("$BG_PID")
}

# ---------------------------------------------------------------------------------------------
# Build, hugepages.

t_start=$SECONDS
if ((build)); then
    note "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $FLOWDOG_BUILT ]] || die "$FLOWDOG_BUILT is missing (build it, or drop --no-build)"
# A copy, so that a rebuild while the script runs (others share target/) cannot change the
# binary between cases.
cp "$FLOWDOG_BUILT" "$FLOWDOG"
version=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
# (read-only: no index refresh, no lock)
if ! git -C "$ROOT" --no-optional-locks diff-index --quiet HEAD -- src crates Cargo.toml Cargo.lock 2>/dev/null; then version+="+changes"; fi

max_flows=0
for f in $flows_list; do ((f > max_flows)) && max_flows=$f; done
# Memory the generator and the DUT need at once, MiB: the pcap's frames copied into mbufs
# (2 per flow; a 2176-byte mbuf takes ~2.5 KiB in its pool, count 4) plus the rings, and the
# DUT's pools.
need_mb=$(((2 * max_flows + 16384) * 4 / 1024 + 512))

free_huge_mb() {
    local d total=0 n sz
    for d in /sys/kernel/mm/hugepages/hugepages-*kB; do
        [[ -r $d/free_hugepages ]] || continue
        sz=${d##*hugepages-}
        sz=${sz%kB}
        n=$(($(cat "$d/free_hugepages") - $(cat "$d/resv_hugepages" 2>/dev/null || echo 0)))
        total=$((total + n * sz / 1024))
    done
    echo "$total"
}

EAL_MEM=()          # hugepage arguments for every DPDK process, or empty for --no-huge
case $huge_mode in
    reserve)
        ((EUID == 0)) || die "--hugepages reserve needs root"
        cur=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)
        note "reserving $pages x 2 MiB hugepages on top of the $cur reserved (released on exit)"
        reserved=1
        "$ROOT/hugepages/reserve.sh" --2m $((cur + pages)) --mount "$HUGE_MNT" >"$TMP/reserve.log" 2>&1 ||
            { cat "$TMP/reserve.log" >&2; die "hugepages/reserve.sh failed"; }
        HUGE_DIR=$HUGE_MNT
        ;;
    auto)
        eal=$("$ROOT/hugepages/check.sh" --eal-args 2>/dev/null || echo --no-huge)
        if [[ $eal == --huge-dir* ]] && (($(free_huge_mb) >= need_mb)); then
            HUGE_DIR=${eal#--huge-dir }
        fi
        ;;
esac
if [[ -n $HUGE_DIR ]]; then
    EAL_MEM=(--huge-dir "$HUGE_DIR")
    memory="hugepages in $HUGE_DIR ($(free_huge_mb) MiB free at start)"
else
    memory="--no-huge (4 KiB pages)"
fi

# ---------------------------------------------------------------------------------------------
# One run: the generator and one DUT. Sets R_BACK, R_OFFERED, R_READ (pps, or "-") and R_NOTE;
# returns 1 if the run failed.

no_huge_args() { # MiB -> EAL memory arguments
    if ((${#EAL_MEM[@]})); then printf '%s\n' "${EAL_MEM[@]}"; else printf '%s\n' --no-huge -m "$1"; fi
}

run_one() {
    local dut=$1 pcap=$2 flows=$3 size=$4
    local id=$size-$flows-$dut
    local sock=$TMP/memif-$id.sock glog=$TMP/gen-$id.log dlog=$TMP/dut-$id.log
    local counters=$TMP/counters-$id.json cfg=$TMP/flowdog-$id.toml
    local nmbufs=$((2 * flows + 16384))
    local gen_mb=$((nmbufs * 4 / 1024 + 256))
    # Wall-clock limits: the generator's and DUT's own, and the budget for a measurement.
    local window=$((warmup + measure + 2))
    local limit=$((window + 90))
    R_BACK=- R_OFFERED=- R_READ=- R_NOTE="" R_CPU="?/?" R_EXIT=""

    local mem=()
    mapfile -t mem < <(no_huge_args "$gen_mb")
    start_bg "$limit" "$glog" stdbuf -oL dpdk-testpmd --no-pci "${mem[@]}" --file-prefix "$PFX-gen-$id" \
        --lcores="0@$CTL_CPU,1@$GEN_CPU" --main-lcore=0 \
        --vdev="net_pcap0,rx_pcap=$pcap,infinite_rx=1" \
        --vdev="net_memif0,role=server,socket=$sock,socket-abstract=no" \
        -- --forward-mode=io --nb-cores=1 --stats-period 1 --total-num-mbufs="$nmbufs" \
        --disable-link-check --no-flush-rx
    local gen_pid=$BG_PID

    # The generator is ready when its socket exists and it prints stats (ports started,
    # pcap loaded into mbufs).
    local t0=$SECONDS
    until [[ -S $sock ]] && grep -q "Port statistics" "$glog"; do
        if ! kill -0 "$gen_pid" 2>/dev/null; then
            R_NOTE="generator did not start: $(first_error "$glog")"
            stop_pid "$gen_pid" || true
            return 1
        fi
        if ((SECONDS - t0 > 60)); then
            R_NOTE="generator not ready after 60 s"
            stop_pid "$gen_pid" || true
            return 1
        fi
        sleep 0.2
    done

    local dut_pid
    if [[ $dut == testpmd ]]; then
        mapfile -t mem < <(no_huge_args 256)
        start_bg "$limit" "$dlog" stdbuf -oL dpdk-testpmd --no-pci "${mem[@]}" --file-prefix "$PFX-dut-$id" \
            --lcores="0@$CTL_CPU,1@$DUT_CPU" --main-lcore=0 \
            --vdev="net_memif0,role=client,socket=$sock,socket-abstract=no" \
            -- --forward-mode=macswap --nb-cores=1 --stats-period 1 --total-num-mbufs=16384 \
            --disable-link-check
    else
        local args='"--no-pci", "--log-level=lib.eal:warning"' huge=off
        if [[ -n $HUGE_DIR ]]; then
            args+=", \"--huge-dir\", \"$HUGE_DIR\""
            huge=on
        fi
        cat >"$cfg" <<EOF
# written by $PROG
[eal]
args = [$args]
vdevs = ["net_memif0,role=client,socket=$sock,socket-abstract=no"]
file_prefix = "$PFX-dut-$id"
hugepages = "$huge"
no_huge_memory_mb = 256

[port]
name = "net_memif0"

[appliance]
ip = "198.18.0.2"
mac = "02:00:00:00:00:02"

[workers]
cpus = [$DUT_CPU]
control_cpu = $CTL_CPU

[flows]
capacity = 262144

[control]
drain_seconds = 0
EOF
        start_bg "$limit" "$dlog" "$FLOWDOG" run --config "$cfg" --duration "$limit" --counters-out "$counters"
    fi
    dut_pid=$BG_PID

    # Wait for the measurement window: the link up (the generator's memif port transmits),
    # then warm-up + measurement seconds of stats.
    local base state="" line="" failed=0 blocks snap_a="" snap_b t_a t_b gen_child dut_child
    base=$(grep -c "Port statistics" "$glog" || true)
    gen_child=$(pgrep -P "$gen_pid" | head -n 1 || true)
    dut_child=$(pgrep -P "$dut_pid" | head -n 1 || true)
    t0=$SECONDS
    while :; do
        sleep 1
        blocks=$(grep -c "Port statistics" "$glog" || true)
        if [[ -z $snap_a ]] && ((blocks >= base + warmup + 1)); then
            # About when the measurement starts: how much CPU the busiest thread of each gets.
            t_a=$(date +%s.%N)
            snap_a="$(python3 "$PARSE" cpu-snap "$gen_child") $(python3 "$PARSE" cpu-snap "$dut_child")"
        fi
        if ! kill -0 "$dut_pid" 2>/dev/null; then
            R_NOTE="DUT exited during the run: $(first_error "$dlog")"
            failed=1
            break
        fi
        if ! kill -0 "$gen_pid" 2>/dev/null; then
            R_NOTE="generator exited during the run"
            failed=1
            break
        fi
        if ((blocks >= base + warmup + measure + 1)); then
            line=$(python3 "$PARSE" window "$glog" --port 1 --pcap-port 0 --warmup "$warmup" --measure "$measure")
            state=${line%% *}
            if [[ $state == state=ok ]]; then
                t_b=$(date +%s.%N)
                snap_b="$(python3 "$PARSE" cpu-snap "$gen_child") $(python3 "$PARSE" cpu-snap "$dut_child")"
                break
            fi
        fi
        if ((SECONDS - t0 > window + 20)); then
            if [[ $state == state=nolink || -z $state ]]; then
                R_NOTE="the memif link never came up (no packets accepted by the DUT in $((SECONDS - t0)) s)"
            else
                R_NOTE="no complete measurement window after $((SECONDS - t0)) s ($line)"
            fi
            failed=1
            break
        fi
    done

    # Freeze the generator, stop the DUT (SIGINT: it prints and writes its final counters), then
    # kill the generator. DPDK 22.11's memif server can die of SIGSEGV when its peer disconnects
    # while it forwards (the interrupt thread unmaps the shared regions under the forwarding
    # lcore); a frozen generator cannot race, and its graceful exit adds nothing: its numbers are
    # in its log already. What SIGKILL leaves behind (runtime dir, hugepage files) is removed.
    local dut_rc=0 gen_rc=0
    [[ -n $gen_child ]] && kill -STOP "$gen_child" 2>/dev/null
    stop_pid "$dut_pid" || dut_rc=$?
    [[ -n $gen_child ]] && kill -KILL "$gen_child" 2>/dev/null
    stop_pid "$gen_pid" || gen_rc=$?
    # The DUT exits 0 on SIGINT (124: `timeout` stopped it; above 128: a signal killed it); the
    # generator, killed, 137.
    if ((dut_rc != 0)); then R_EXIT+="DUT exit status $dut_rc$(signame "$dut_rc"); "; fi
    if ((gen_rc != 0 && gen_rc != 137)); then R_EXIT+="generator exit status $gen_rc$(signame "$gen_rc"); "; fi
    rm -f "$sock"
    rm -rf "${RUNTIME:?}/$PFX-gen-$id" "${RUNTIME:?}/$PFX-dut-$id"
    if [[ -n $HUGE_DIR ]]; then rm -f "$HUGE_DIR/$PFX-gen-$id"map_* "$HUGE_DIR/$PFX-dut-$id"map_*; fi
    ((failed)) && return 1

    local kv k v
    for kv in $line; do
        k=${kv%%=*} v=${kv#*=}
        case $k in
            back_pps) R_BACK=$v ;;
            offered_pps) R_OFFERED=$v ;;
            read_pps) R_READ=$v ;;
            back_min) R_MIN=$v ;;
            back_max) R_MAX=$v ;;
        esac
    done
    if [[ -n $snap_a ]]; then
        local secs
        secs=$(awk -v a="$t_a" -v b="$t_b" 'BEGIN { print b - a }')
        R_CPU="$(python3 "$PARSE" cpu-share "${snap_a% *}" "${snap_b% *}" --seconds "$secs")"
        R_CPU+="/$(python3 "$PARSE" cpu-share "${snap_a#* }" "${snap_b#* }" --seconds "$secs")"
    fi
    if [[ $dut == testpmd ]]; then
        R_NOTE="testpmd totals: $(python3 "$PARSE" testpmd-final "$dlog")"
    else
        if [[ ! -s $counters ]]; then
            R_NOTE="flowdog wrote no counters (exit status $dut_rc): $(tail -n 2 "$dlog" | tr '\n' ' ')"
            return 1
        fi
        R_NOTE=$(python3 "$PARSE" flowdog-sanity "$counters" --flows "$flows" || true)
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------
# The cases.

# Before each run, wait (up to --quiet-wait seconds) until no CPU is more than 20 % busy: the
# runs need both CPUs to themselves. Sets QUIET to what it found.
wait_quiet() {
    local t0=$SECONDS line
    while :; do
        line=$(python3 "$PARSE" cpu-busy --seconds 1)
        QUIET=$line
        [[ $line == busy=0.[01]* ]] && return 0
        if ((SECONDS - t0 >= quiet_wait)); then
            QUIET="$line BUSY (waited ${quiet_wait} s)"
            return 0
        fi
        sleep 2
    done
}

bc_mpps() { awk -v x="$1" 'BEGIN { if (x == "-" || x == "") x = 0; printf "%.2f", x / 1e6 }'; }

results=$TMP/results.tsv
: >"$results"
failures=0
contended=0
read -r load_start _ </proc/loadavg
note "memory: $memory; generator CPU $GEN_CPU, DUT CPU $DUT_CPU; warm-up $warmup s, measurement $measure s"
note "load average before: $load_start (other busy processes on these 2 CPUs distort the numbers)"

# One run and its report line. Sets R_* (see run_one) and R_FLAG ("" or markers for the table).
run_and_report() {
    local dut=$1 pcap=$2 flows=$3 size=$4 rep=$5 cpu_note="" tag
    R_MIN=0 R_MAX=0 R_FLAG=""
    tag=$(printf '%6s flows, %4s B, %-7s' "$flows" "$size" "$dut")
    ((repeat > 1)) && tag+=" #$rep"
    wait_quiet
    if ! run_one "$dut" "$pcap" "$flows" "$size"; then
        # One more try: a memif connection can fail to come up for reasons that do not last.
        note "$tag: failed, trying once more: $R_NOTE${R_EXIT:+; $R_EXIT}"
        remove_dpdk_leftovers
        sleep 2
        if ! run_one "$dut" "$pcap" "$flows" "$size"; then
            failures=$((failures + 1))
            R_FLAG="failed"
            note "$tag: FAILED: $R_NOTE${R_EXIT:+; $R_EXIT}"
            return 1
        fi
    fi
    if ! awk -v s="$R_CPU" 'BEGIN { split(s, v, "/"); exit !(v[1] >= 0.9 && v[2] >= 0.9) }'; then
        cpu_note=" CONTENDED"
        R_FLAG+="c"
    fi
    [[ $R_NOTE == *SUSPECT* || $R_NOTE == *UNREADABLE* ]] && R_FLAG+="s"
    if [[ -n $R_EXIT && $R_EXIT != *"status 0"* ]]; then
        R_FLAG+="x"
        failures=$((failures + 1))
    fi
    note "$(printf '%s: back %6.2f Mpps (per second %.2f..%.2f), offered %6.2f, tried %6.2f; CPU share gen/DUT %s%s; before: %s; %s%s' \
        "$tag" "$(bc_mpps "$R_BACK")" "$(bc_mpps "$R_MIN")" "$(bc_mpps "$R_MAX")" \
        "$(bc_mpps "$R_OFFERED")" "$(bc_mpps "$R_READ")" "$R_CPU" "$cpu_note" "$QUIET" "$R_NOTE" \
        "${R_EXIT:+; $R_EXIT}")"
}

for size in $sizes; do
    for flows in $flows_list; do
        pcap=$TMP/gen-$size-$flows.pcap
        "$FLOWDOG" gen pcap --flows "$flows" --size "$size" --ipv6-share 0.2 --out "$pcap" >/dev/null ||
            die "flowdog gen pcap failed"
        frame=$(python3 "$PARSE" frame-len "$pcap")
        # Per DUT, the best of --repeat runs (interference only ever slows a run down).
        declare -A best_back=([testpmd]=- [flowdog]=-) best_off=([testpmd]=- [flowdog]=-) \
            best_read=([testpmd]=- [flowdog]=-) best_flag=([testpmd]=failed [flowdog]=failed)
        for ((rep = 1; rep <= repeat; rep++)); do
            for dut in testpmd flowdog; do
                run_and_report "$dut" "$pcap" "$flows" "$size" "$rep" || continue
                if [[ ${best_back[$dut]} == - ]] || ((R_BACK > best_back[$dut])); then
                    best_back[$dut]=$R_BACK best_off[$dut]=$R_OFFERED best_read[$dut]=$R_READ
                    best_flag[$dut]=$R_FLAG
                fi
            done
        done
        rm -f "$pcap"
        for dut in testpmd flowdog; do [[ ${best_flag[$dut]} == *c* ]] && contended=$((contended + 1)); done
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$flows" "$size" "$frame" \
            "${best_back[testpmd]}" "${best_off[testpmd]}" "${best_back[flowdog]}" "${best_off[flowdog]}" \
            "${best_flag[testpmd]}" "${best_flag[flowdog]}" "${best_read[testpmd]}" "${best_read[flowdog]}" \
            >>"$results"
    done
done

read -r load_end _ </proc/loadavg
elapsed=$((SECONDS - t_start))
{
    echo "flowdog $version fast path vs testpmd macswap over net_memif ($(date -u +%F), $(nproc) CPUs, $memory;"
    echo "${measure} s averages after ${warmup} s warm-up, best of $repeat; generator testpmd io on CPU $GEN_CPU, DUT on CPU $DUT_CPU;"
    echo "20 % of flows IPv6 inner; load average $load_start before, $load_end after; took ${elapsed} s)"
    echo
    python3 "$PARSE" table "$results"
} >"$TMP/table.md"
cat "$TMP/table.md"
[[ -z $out ]] || cp "$TMP/table.md" "$out"

if ((contended)); then
    note "$contended result(s) CONTENDED (c): a busy-polling thread got less than 90 % of its CPU (other processes ran there)"
fi
if ((failures)); then
    note "$failures run(s) failed"
    exit 1
fi
