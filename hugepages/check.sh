#!/usr/bin/env bash
# check.sh: report the hugepages available to DPDK and where hugetlbfs is mounted.
#
#   check.sh              full report; exit 0 if usable, 1 if not
#   check.sh --quiet      only the verdict line; same exit status
#   check.sh --eal-args   print DPDK EAL arguments: "--huge-dir DIR" or "--no-huge"; exit 0
#   check.sh --mount DIR  prefer this mount (default /dev/hugepages-flowdog) for --eal-args
#
# "Usable" means: some hugepage size has pages free for a new process (free - reserved > 0)
# AND a hugetlbfs mount of that same page size exists (writable by the caller for --eal-args).
# Needs no root. See README.md beside this script.
set -euo pipefail

readonly PROG=${0##*/}
readonly SYSFS=${FLOWDOG_HP_SYSFS:-/sys}
readonly MOUNTS=${FLOWDOG_HP_MOUNTS:-/proc/mounts}
readonly MEMINFO=${FLOWDOG_HP_MEMINFO:-/proc/meminfo}

mode=report
prefer=/dev/hugepages-flowdog

usage() {
    cat <<EOF
usage: $PROG [--quiet | --eal-args] [--mount DIR]

  (no option)   print reserved/free/surplus pages per size and per NUMA node, and the
                hugetlbfs mounts; exit 0 if some size has free pages and a mount, 1 otherwise
  --quiet       print only the verdict line (same exit status)
  --eal-args    print "--huge-dir DIR" when hugepages are usable, "--no-huge" otherwise
                (always exit 0, for use in \$(...) on a DPDK command line)
  --mount DIR   the mount to prefer for --eal-args (default $prefer)
EOF
}

while (($#)); do
    case $1 in
        --quiet | -q) mode=quiet; shift ;;
        --eal-args) mode=eal; shift ;;
        --mount) (($# >= 2)) || { echo "$PROG: --mount needs a directory" >&2; exit 2; }; prefer=${2%/}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; echo "$PROG: unknown argument: $1" >&2; exit 2 ;;
    esac
done

# Size of a "pagesize=" mount option (2M, 1G, 1024M, 2048k, ...) in kB.
to_kb() {
    local v=${1,,} n
    n=${v%[kmg]*}
    case $v in
        *k | *kb) echo "$n" ;;
        *m | *mb) echo $((n * 1024)) ;;
        *g | *gb) echo $((n * 1024 * 1024)) ;;
        *) echo $((v / 1024)) ;; # plain bytes
    esac
}

human() { # kB -> 2M / 1G
    if (($1 >= 1048576)); then echo "$(($1 / 1048576))G"; else echo "$(($1 / 1024))M"; fi
}

default_kb=$(awk '/^Hugepagesize:/ { print $2 }' "$MEMINFO" 2>/dev/null || true)
default_kb=${default_kb:-2048}

rd() { if [[ -r $1 ]]; then echo "$(<"$1")"; else echo 0; fi; }

# ---------------------------------------------------------------------------------------------
# Pools per size.

declare -A avail=() # kB -> pages free for new mappings (free - resv)
sizes=()
for d in "$SYSFS"/kernel/mm/hugepages/hugepages-*kB; do
    [[ -d $d ]] || continue
    kb=${d##*/hugepages-}
    kb=${kb%kB}
    sizes+=("$kb")
done
# Numeric order: 2048 before 1048576.
if ((${#sizes[@]})); then
    mapfile -t sizes < <(printf '%s\n' "${sizes[@]}" | sort -n)
fi

# ---------------------------------------------------------------------------------------------
# Mounts: "dir kB" lines.

mounts=()
while read -r _ dir fstype opts _; do
    [[ $fstype == hugetlbfs ]] || continue
    ps=""
    IFS=, read -ra o <<<"$opts"
    for x in "${o[@]}"; do
        [[ $x == pagesize=* ]] && ps=${x#pagesize=}
    done
    if [[ -n $ps ]]; then kb=$(to_kb "$ps"); else kb=$default_kb; fi
    dir=${dir//\\040/ }
    mounts+=("$kb $dir")
done <"$MOUNTS"

# ---------------------------------------------------------------------------------------------
# Report.

report() { [[ $mode == report ]]; }

if report; then
    if ((${#sizes[@]} == 0)); then
        echo "no hugepage support in this kernel ($SYSFS/kernel/mm/hugepages is empty or missing)"
    else
        printf '%-6s %-8s %8s %8s %8s %8s %9s\n' size scope total free resv surplus "free MiB"
    fi
fi
for kb in "${sizes[@]}"; do
    d=$SYSFS/kernel/mm/hugepages/hugepages-${kb}kB
    tot=$(rd "$d/nr_hugepages")
    free=$(rd "$d/free_hugepages")
    resv=$(rd "$d/resv_hugepages")
    surp=$(rd "$d/surplus_hugepages")
    a=$((free - resv))
    ((a < 0)) && a=0
    avail[$kb]=$a
    if report; then
        printf '%-6s %-8s %8d %8d %8d %8d %9d\n' "$(human "$kb")" all "$tot" "$free" "$resv" "$surp" $((a * kb / 1024))
        for nd in "$SYSFS"/devices/system/node/node[0-9]*/hugepages/hugepages-"${kb}"kB; do
            [[ -d $nd ]] || continue
            n=${nd%/hugepages/*}
            n=${n##*/}
            nf=$(rd "$nd/free_hugepages")
            printf '%-6s %-8s %8d %8d %8s %8d %9d\n' "" "$n" "$(rd "$nd/nr_hugepages")" "$nf" - \
                "$(rd "$nd/surplus_hugepages")" $((nf * kb / 1024))
        done
    fi
done

if report; then
    echo
    if ((${#mounts[@]} == 0)); then
        echo "hugetlbfs mounts: none"
    else
        echo "hugetlbfs mounts:"
        for m in "${mounts[@]}"; do
            kb=${m%% *}
            dir=${m#* }
            used=$(find "$dir" -maxdepth 1 -type f 2>/dev/null | wc -l || true)
            w=no
            [[ -w $dir ]] && w=yes
            printf '  %-32s pagesize=%-5s writable-by-me=%-3s files=%s\n' "$dir" "$(human "$kb")" "$w" "$used"
        done
    fi
    echo
fi

# ---------------------------------------------------------------------------------------------
# Verdict: mounts whose size has available pages; the preferred one first, then most free memory.

best=""
best_mb=-1
usable=()
for m in "${mounts[@]}"; do
    kb=${m%% *}
    dir=${m#* }
    a=${avail[$kb]:-0}
    ((a > 0)) || continue
    usable+=("$dir ($(human "$kb"): $a pages free)")
    [[ $mode == eal && ! -w $dir ]] && continue
    mb=$((a * kb / 1024))
    if [[ $dir == "$prefer" ]]; then
        mb=$((1 << 60))
    fi
    if ((mb > best_mb)); then
        best=$dir
        best_mb=$mb
    fi
done

if [[ $mode == eal ]]; then
    if [[ -n $best ]]; then
        printf -- '--huge-dir %s\n' "$best"
    else
        echo "--no-huge"
    fi
    exit 0
fi

if ((${#usable[@]})); then
    echo "hugepages: OK: $(
        IFS=';'
        echo "${usable[*]}"
    )" | sed 's/;/; /g'
    exit 0
fi

why=""
total_avail=0
for kb in "${sizes[@]}"; do total_avail=$((total_avail + ${avail[$kb]})); done
if ((${#sizes[@]} == 0)); then
    why="kernel has no hugepage support"
elif ((total_avail == 0)); then
    why="no free hugepages (reserve some: hugepages/reserve.sh --2m 1024)"
else
    why="free hugepages but no hugetlbfs mount of that size (hugepages/reserve.sh mounts one)"
fi
echo "hugepages: NOT USABLE: $why; DPDK needs --no-huge"
exit 1
