#!/usr/bin/env bash
# reserve.sh: reserve hugepages for flowdog (DPDK) and mount hugetlbfs for them.
#
#   reserve.sh [--2m N] [--1g N] [--node N] [--mount DIR] [--persist]
#
# Counts are absolute targets (the value written to nr_hugepages), not increments.
# With neither --2m nor --1g, reserves 1024 x 2 MiB pages (2 GiB).
# The 2 MiB mount is DIR (default /dev/hugepages-flowdog, pagesize=2M), the 1 GiB mount is DIR-1G.
# Exits non-zero if the kernel gave fewer pages than asked for (the pages it did give stay
# reserved: run release.sh to undo), or if 1 GiB pages are asked for where they are unsupported.
#
# The state before the first reservation is kept in /run/flowdog-hugepages.state so that
# release.sh can put the machine back as it was. See README.md beside this script.
set -euo pipefail

readonly PROG=${0##*/}
# Test hooks: point these at a fake tree to exercise the checks without touching the machine.
readonly SYSFS=${FLOWDOG_HP_SYSFS:-/sys}
readonly CPUINFO=${FLOWDOG_HP_CPUINFO:-/proc/cpuinfo}
readonly STATE=${FLOWDOG_HP_STATE:-/run/flowdog-hugepages.state}
readonly SYSCTL_FILE=${FLOWDOG_HP_SYSCTL_FILE:-/etc/sysctl.d/80-flowdog-hugepages.conf}
readonly FSTAB=${FLOWDOG_HP_FSTAB:-/etc/fstab}
readonly MARK="# flowdog-hugepages: added by hugepages/reserve.sh --persist, removed by hugepages/release.sh"

usage() {
    cat <<EOF
usage: $PROG [--2m N] [--1g N] [--node N] [--mount DIR] [--persist]

  --2m N       reserve N pages of 2 MiB (absolute count; default 1024 when no size is given)
  --1g N       reserve N pages of 1 GiB (needs the pdpe1gb CPU flag and kernel support)
  --node N     reserve on NUMA node N only (per-node sysfs counters) instead of system-wide
  --mount DIR  hugetlbfs mount point for 2 MiB pages (default /dev/hugepages-flowdog);
               1 GiB pages are mounted at DIR-1G
  --persist    also write $SYSCTL_FILE and $FSTAB entries so that the
               reservation survives a reboot; for 1 GiB pages print the kernel boot
               arguments (GRUB line) to add by hand
  -h, --help   this text
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*"; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

n2m=""
n1g=""
node=""
mnt=/dev/hugepages-flowdog
persist=0

while (($#)); do
    case $1 in
        --2m) (($# >= 2)) || die "--2m needs a count"; n2m=$2; shift 2 ;;
        --1g) (($# >= 2)) || die "--1g needs a count"; n1g=$2; shift 2 ;;
        --node) (($# >= 2)) || die "--node needs a NUMA node number"; node=$2; shift 2 ;;
        --mount) (($# >= 2)) || die "--mount needs a directory"; mnt=$2; shift 2 ;;
        --persist) persist=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ -z $n2m && -z $n1g ]] && n2m=1024
[[ -z $n2m ]] || is_uint "$n2m" || die "--2m wants a non-negative integer, got '$n2m'"
[[ -z $n1g ]] || is_uint "$n1g" || die "--1g wants a non-negative integer, got '$n1g'"
[[ -z $node ]] || is_uint "$node" || die "--node wants a NUMA node number, got '$node'"
[[ $mnt == /* ]] || die "--mount wants an absolute path, got '$mnt'"
mnt=${mnt%/}
readonly mnt1g="$mnt-1G"

if [[ -n $node && $persist == 1 ]]; then
    die "--persist with --node is not supported: sysctl can only set the system-wide count; \
use kernel boot arguments or a boot-time unit that writes \
/sys/devices/system/node/node$node/hugepages/hugepages-2048kB/nr_hugepages"
fi

# ---------------------------------------------------------------------------------------------
# Checks before touching anything.

[[ $EUID -eq 0 ]] || die "must run as root (writes sysfs and mounts hugetlbfs)"

hp_dir() { # size_kB -> sysfs directory holding nr_hugepages for it (global or per node)
    if [[ -n $node ]]; then
        echo "$SYSFS/devices/system/node/node$node/hugepages/hugepages-${1}kB"
    else
        echo "$SYSFS/kernel/mm/hugepages/hugepages-${1}kB"
    fi
}

if [[ -n $node && ! -d $SYSFS/devices/system/node/node$node ]]; then
    die "NUMA node $node does not exist (nodes: $(cd "$SYSFS/devices/system/node" 2>/dev/null && echo node[0-9]*))"
fi

if [[ -n $n2m ]]; then
    [[ -d $(hp_dir 2048) ]] || die "this kernel has no 2 MiB hugepage support ($(hp_dir 2048) is missing)"
fi

if [[ -n $n1g && $n1g -gt 0 ]]; then
    # 1 GiB pages need both the CPU (pdpe1gb) and the kernel (hugepages-1048576kB in sysfs).
    if ! grep -qw pdpe1gb "$CPUINFO" 2>/dev/null; then
        die "1 GiB hugepages are not supported here: the CPU does not advertise the 'pdpe1gb' flag \
in $CPUINFO (common in VMs whose hypervisor hides it). Use 2 MiB pages instead: --2m N"
    fi
    if [[ ! -d $(hp_dir 1048576) ]]; then
        die "1 GiB hugepages are not supported here: $(hp_dir 1048576) does not exist \
(kernel built without gigantic page support, or the pool is not exposed). Use 2 MiB pages instead: --2m N"
    fi
fi

# hugetlbfs must be known to the kernel.
grep -qw hugetlbfs /proc/filesystems || die "the kernel has no hugetlbfs (not in /proc/filesystems)"

# ---------------------------------------------------------------------------------------------
# Remember how things were, once, for release.sh.

if [[ ! -e $STATE ]]; then
    {
        echo "# written by $PROG on $(date -u +%FT%TZ): state before the first reservation"
        for d in "$SYSFS"/kernel/mm/hugepages/hugepages-*kB; do
            [[ -d $d ]] || continue
            echo "global ${d##*/} $(<"$d/nr_hugepages")"
        done
        for d in "$SYSFS"/devices/system/node/node[0-9]*/hugepages/hugepages-*kB; do
            [[ -d $d ]] || continue
            n=${d%/hugepages/*}
            echo "node ${n##*/node} ${d##*/} $(<"$d/nr_hugepages")"
        done
    } >"$STATE"
fi

state_note_dir() { # record a mount point directory we created, so release.sh removes it
    grep -qxF "createddir $1" "$STATE" 2>/dev/null || echo "createddir $1" >>"$STATE"
}

# ---------------------------------------------------------------------------------------------
# Reserve.

failed=0

reserve() { # size_kB count label
    local d want got before
    d=$(hp_dir "$1")
    want=$2
    before=$(<"$d/nr_hugepages")
    echo "$want" >"$d/nr_hugepages"
    got=$(<"$d/nr_hugepages")
    if ((got < want)) && [[ -w /proc/sys/vm/compact_memory ]]; then
        # Memory is usually just fragmented: compact it once and ask again.
        note "$3: got $got of $want, compacting memory and retrying"
        echo 1 >/proc/sys/vm/compact_memory 2>/dev/null || true
        echo "$want" >"$d/nr_hugepages"
        got=$(<"$d/nr_hugepages")
    fi
    local where="system-wide"
    [[ -n $node ]] && where="on NUMA node $node"
    if ((got < want)); then
        echo "$PROG: error: $3: asked for $want pages $where, the kernel gave $got (was $before)." >&2
        echo "$PROG:        Not enough free contiguous memory. Reserve earlier (at boot, see --persist)," >&2
        echo "$PROG:        ask for fewer, or free memory. The $got pages stay reserved: release.sh undoes it." >&2
        failed=1
    else
        note "$3: $got pages reserved $where (was $before)"
    fi
}

[[ -n $n2m ]] && reserve 2048 "$n2m" "2 MiB"
# --1g 0 where 1 GiB pages do not exist is a no-op, not an error.
[[ -n $n1g ]] && [[ $n1g -gt 0 || -d $(hp_dir 1048576) ]] && reserve 1048576 "$n1g" "1 GiB"

# ---------------------------------------------------------------------------------------------
# Mount.

# The pagesize= option as /proc/mounts shows it for a mount point, or nothing if not hugetlbfs.
mounted_pagesize() {
    awk -v m="$1" '$2 == m && $3 == "hugetlbfs" {
        ps = "default"; n = split($4, o, ",")
        for (i = 1; i <= n; i++) if (o[i] ~ /^pagesize=/) ps = substr(o[i], 10)
        print ps; exit }' /proc/mounts
}

do_mount() { # dir pagesize(2M|1G)
    local dir=$1 ps=$2 cur
    cur=$(mounted_pagesize "$dir")
    if [[ -n $cur ]]; then
        case "$ps:$cur" in
            2M:2M | 1G:1G | 1G:1024M) note "hugetlbfs pagesize=$ps already mounted at $dir"; return 0 ;;
            *) die "$dir is already a hugetlbfs mount with pagesize=$cur, not $ps; unmount it or use --mount" ;;
        esac
    fi
    if mountpoint -q "$dir" 2>/dev/null; then
        die "$dir is already a mount point of another file system type"
    fi
    if [[ ! -d $dir ]]; then
        mkdir -p "$dir"
        state_note_dir "$dir"
    fi
    mount -t hugetlbfs -o "pagesize=$ps" nodev "$dir"
    note "mounted hugetlbfs pagesize=$ps at $dir"
}

[[ -n $n2m && $n2m -gt 0 ]] && do_mount "$mnt" 2M
[[ -n $n1g && $n1g -gt 0 ]] && do_mount "$mnt1g" 1G

# ---------------------------------------------------------------------------------------------
# Persist.

fstab_drop_ours() { # dir: remove our marker line and the entry after it, for that mount point
    [[ -f $FSTAB ]] || return 0
    grep -qxF "$MARK" "$FSTAB" || return 0
    local tmp
    tmp=$(mktemp "$FSTAB.flowdog.XXXXXX")
    awk -v mark="$MARK" -v dir="$1" '
        held { held = 0; if ($2 == dir) next; print mark }
        $0 == mark { held = 1; next }
        { print }
        END { if (held) print mark }' "$FSTAB" >"$tmp"
    cat "$tmp" >"$FSTAB" # keep the inode, owner and mode of fstab
    rm -f "$tmp"
}

if ((persist)); then
    if [[ -n $n2m && $n2m -gt 0 ]]; then
        mkdir -p "$(dirname "$SYSCTL_FILE")"
        {
            echo "$MARK"
            echo "# vm.nr_hugepages counts pages of the DEFAULT hugepage size (2 MiB unless the kernel"
            echo "# was booted with default_hugepagesz=...)."
            echo "vm.nr_hugepages = $n2m"
        } >"$SYSCTL_FILE"
        note "wrote $SYSCTL_FILE (vm.nr_hugepages = $n2m)"
        fstab_drop_ours "$mnt"
        printf '%s\n%s\n' "$MARK" "nodev $mnt hugetlbfs pagesize=2M 0 0" >>"$FSTAB"
        note "added to $FSTAB: nodev $mnt hugetlbfs pagesize=2M 0 0"
    fi
    if [[ -n $n1g && $n1g -gt 0 ]]; then
        fstab_drop_ours "$mnt1g"
        printf '%s\n%s\n' "$MARK" "nodev $mnt1g hugetlbfs pagesize=1G 0 0" >>"$FSTAB"
        note "added to $FSTAB: nodev $mnt1g hugetlbfs pagesize=1G 0 0"
        # 1 GiB pages must be taken at boot, before memory fragments; sysctl is too late for them.
        # When 2 MiB pages are persisted too, the default size must stay 2 MiB, or the sysctl
        # above would count 1 GiB pages.
        if [[ -n $n2m && $n2m -gt 0 ]]; then
            args="hugepagesz=1G hugepages=$n1g"
        else
            args="default_hugepagesz=1G hugepagesz=1G hugepages=$n1g"
        fi
        cat <<EOF
$PROG: 1 GiB pages usually have to be reserved on the kernel command line. This script does not
$PROG: edit the boot loader; add these kernel arguments yourself, then reboot:
$PROG:
$PROG:     $args
$PROG:
$PROG:   Debian 12:          in /etc/default/grub
$PROG:                         GRUB_CMDLINE_LINUX="\$GRUB_CMDLINE_LINUX $args"
$PROG:                       then: update-grub
$PROG:   Amazon Linux 2023:  grubby --update-kernel=ALL --args="$args"
EOF
    fi
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload || true
    fi
fi

exit "$failed"
