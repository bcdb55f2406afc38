#!/usr/bin/env bash
# release.sh: undo reserve.sh.
#
#   release.sh [--mount DIR] [--force] [--zero]
#
# 1. refuses while a process still maps or holds files in our mounts (a running DPDK process;
#    --force skips this check)
# 2. removes leftover DPDK hugepage files (rtemap_*, <file-prefix>map_*) from DIR and DIR-1G
# 3. unmounts DIR and DIR-1G (default /dev/hugepages-flowdog[-1G]); removes the mount points
#    that reserve.sh created
# 4. sets the hugepage counts back to what they were before the first reserve.sh
#    (recorded in /run/flowdog-hugepages.state; 0 when there is no record, or with --zero)
# 5. removes what reserve.sh --persist wrote to /etc/sysctl.d and /etc/fstab
set -euo pipefail

readonly PROG=${0##*/}
readonly SYSFS=${FLOWDOG_HP_SYSFS:-/sys}
readonly STATE=${FLOWDOG_HP_STATE:-/run/flowdog-hugepages.state}
readonly SYSCTL_FILE=${FLOWDOG_HP_SYSCTL_FILE:-/etc/sysctl.d/80-flowdog-hugepages.conf}
readonly FSTAB=${FLOWDOG_HP_FSTAB:-/etc/fstab}
readonly MARK="# flowdog-hugepages: added by hugepages/reserve.sh --persist, removed by hugepages/release.sh"

usage() {
    cat <<EOF
usage: $PROG [--mount DIR] [--force] [--zero]

  --mount DIR  the 2 MiB mount point given to reserve.sh (default /dev/hugepages-flowdog);
               DIR-1G is released too
  --force      do not refuse when a process still uses files in the mounts
  --zero       set every hugepage count to 0 instead of restoring the recorded values
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*"; }

mnt=/dev/hugepages-flowdog
force=0
zero=0
while (($#)); do
    case $1 in
        --mount) (($# >= 2)) || die "--mount needs a directory"; mnt=${2%/}; shift 2 ;;
        --force) force=1; shift ;;
        --zero) zero=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $mnt == /* ]] || die "--mount wants an absolute path, got '$mnt'"
[[ $EUID -eq 0 ]] || die "must run as root"

dirs=("$mnt" "$mnt-1G")
rc=0

is_hugetlbfs() { awk -v m="$1" '$2 == m && $3 == "hugetlbfs" { f = 1 } END { exit !f }' /proc/mounts; }

# ---------------------------------------------------------------------------------------------
# 1. Anyone still using the mounts? (A DPDK process maps its rtemap files and keeps them open.)

users_of() { # dir -> "pid (comm)" lines
    local p
    for p in /proc/[0-9]*; do
        [[ $p == "/proc/$$" ]] && continue
        if grep -qF " $1/" "$p/maps" 2>/dev/null ||
            find "$p/fd" -maxdepth 1 -lname "$1/*" 2>/dev/null | grep -q .; then
            echo "${p#/proc/} ($(cat "$p/comm" 2>/dev/null || echo '?'))"
        fi
    done
}

if ((!force)); then
    busy=""
    for d in "${dirs[@]}"; do
        is_hugetlbfs "$d" || continue
        u=$(users_of "$d")
        [[ -z $u ]] || busy+="  $d: $(echo "$u" | tr '\n' ' ')"$'\n'
    done
    if [[ -n $busy ]]; then
        printf '%s' "$busy" >&2
        die "hugepage files are still in use by the processes above; stop them first (or --force)"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 2 and 3. Leftover DPDK files, then unmount.

for d in "${dirs[@]}"; do
    if ! is_hugetlbfs "$d"; then
        continue
    fi
    n=0
    while IFS= read -r -d '' f; do
        rm -f -- "$f"
        n=$((n + 1))
    done < <(find "$d" -maxdepth 1 -type f \( -name 'rtemap_*' -o -name '*map_*' \) -print0)
    note "$d: removed $n leftover DPDK hugepage file(s)"
    others=$(find "$d" -mindepth 1 -maxdepth 1 | wc -l)
    ((others == 0)) || note "$d: $others other file(s) left; they are freed by the unmount"
    if umount "$d"; then
        note "unmounted $d"
    else
        echo "$PROG: error: could not unmount $d" >&2
        rc=1
    fi
done

# Mount points that reserve.sh created.
if [[ -f $STATE ]]; then
    while read -r kind dir; do
        [[ $kind == createddir ]] || continue
        if [[ -d $dir ]] && ! mountpoint -q "$dir" && rmdir "$dir" 2>/dev/null; then
            note "removed mount point $dir"
        fi
    done <"$STATE"
fi

# ---------------------------------------------------------------------------------------------
# 4. Counts.

setcount() { # file value label
    local f=$1 want=$2 got
    [[ -w $f ]] || return 0
    [[ $(<"$f") == "$want" ]] && return 0
    echo "$want" >"$f"
    got=$(<"$f")
    if [[ $got == "$want" ]]; then
        note "$3: nr_hugepages set to $want"
    else
        # Pages still mapped somewhere cannot be freed; the kernel frees them when unmapped.
        echo "$PROG: error: $3: asked for $want pages, $got remain (pages in use?)" >&2
        rc=1
    fi
}

if [[ -f $STATE ]] && ((!zero)); then
    # Per-node records first (they fix how pages are spread), then the global ones.
    while read -r kind a b c; do
        if [[ $kind == node ]]; then
            setcount "$SYSFS/devices/system/node/node$a/hugepages/$b/nr_hugepages" "$c" "node$a $b"
        fi
    done <"$STATE"
    while read -r kind a b _; do
        if [[ $kind == global ]]; then
            setcount "$SYSFS/kernel/mm/hugepages/$a/nr_hugepages" "$b" "$a"
        fi
    done <"$STATE"
else
    for f in "$SYSFS"/kernel/mm/hugepages/hugepages-*kB/nr_hugepages; do
        [[ -e $f ]] || continue
        d=${f%/nr_hugepages}
        setcount "$f" 0 "${d##*/}"
    done
fi
if ((rc == 0)); then
    rm -f "$STATE"
fi

# ---------------------------------------------------------------------------------------------
# 5. What --persist wrote.

if [[ -f $SYSCTL_FILE ]] && grep -qxF "$MARK" "$SYSCTL_FILE"; then
    rm -f "$SYSCTL_FILE"
    note "removed $SYSCTL_FILE"
fi
if [[ -f $FSTAB ]] && grep -qxF "$MARK" "$FSTAB"; then
    tmp=$(mktemp "$FSTAB.flowdog.XXXXXX")
    # Drop each marker line and the entry that follows it.
    awk -v mark="$MARK" 'skip { skip = 0; next } $0 == mark { skip = 1; next } { print }' "$FSTAB" >"$tmp"
    cat "$tmp" >"$FSTAB" # keep the inode, owner and mode of fstab
    rm -f "$tmp"
    note "removed the flowdog-hugepages entries from $FSTAB"
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload || true
    fi
fi

exit "$rc"
