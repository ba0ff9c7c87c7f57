#!/usr/bin/env bash
# `vmvault files get` of a folder of 10 000 small files on ext4 (unindexed, as old installs
# leave it), XFS, btrfs and NTFS, out of an encrypted point, beside the kernel's own reader
# (`cp -r` from a read-only loop mount of the same filesystem; ntfs-3g for NTFS) into the same
# target. Targets are a tmpfs (the reader's speed) and the work directory's filesystem (what an
# operator's disk allows). Page caches are dropped before each timed step where allowed.
#
# Needs root, xfsprogs, btrfs-progs, ntfs-3g and a release vmvault.
# Usage: VMVAULT=target/release/vmvault bash bench/files.sh   (work dir: $BENCH_DIR/files)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/vmvault-bench}/files
VMVAULT=${VMVAULT:-${CARGO_TARGET_DIR:-$here/target}/release/vmvault}
FILES=${BENCH_FILES_COUNT:-10000}
[ -x "$VMVAULT" ] || { echo "no vmvault at $VMVAULT" >&2; exit 1; }
now() { date +%s.%N; }
since() { sync; python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

rm -rf "$WORK" && mkdir -p "$WORK/mnt"
shm=$(mktemp -d /dev/shm/vmvault-files.XXXXXX)
cleanup() { umount "$WORK/mnt" 2>/dev/null || true; rm -rf "$shm" "$WORK"; }
trap cleanup EXIT
export VMVAULT_VAULT=$WORK/vault VMVAULT_PASSPHRASE=bench-passphrase
"$VMVAULT" vault init >/dev/null

fill() { # a mounted filesystem: /many with $FILES files of 1-4 KiB
    python3 - "$1" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{root}/many")
for i in range(n):
    with open(f"{root}/many/file-{i:05d}.conf", "w") as f:
        f.write(f"setting {i} = {'x' * (1024 + (i * 37) % 3072)}\n")
PY
}

rows=()
for fs in ext4 xfs btrfs ntfs; do
    img=$WORK/$fs.raw
    truncate -s 400M "$img"
    case $fs in
        ext4) mkfs.ext4 -q -F -O ^dir_index "$img" ;;
        xfs) mkfs.xfs -q -f "$img" ;;
        btrfs) mkfs.btrfs -q -f "$img" >/dev/null ;;
        ntfs) mkntfs -q -F -f "$img" >/dev/null 2>&1 ;;
    esac
    if [ $fs = ntfs ]; then ntfs-3g "$img" "$WORK/mnt"; else mount -o loop "$img" "$WORK/mnt"; fi
    fill "$WORK/mnt"
    umount "$WORK/mnt"
    "$VMVAULT" vm add "$fs" --disk "vda=$img" >/dev/null
    "$VMVAULT" backup "$fs" >/dev/null
    for target in "$shm" "$WORK"; do
        where=$([ "$target" = "$shm" ] && echo tmpfs || echo disk)
        rm -rf "$target/out"
        drop_caches; t=$(now)
        "$VMVAULT" files get "$fs" --partition 0 /many --to "$target/out" >/dev/null
        secs=$(since "$t")
        count=$(find "$target/out/many" -type f | wc -l)
        [ "$count" = "$FILES" ] || { echo "$fs: extracted $count files, not $FILES" >&2; exit 1; }
        rm -rf "$target/out"
        if [ $fs = ntfs ]; then ntfs-3g -o ro "$img" "$WORK/mnt"; else mount -o loop,ro "$img" "$WORK/mnt"; fi
        drop_caches; t=$(now)
        cp -r "$WORK/mnt/many" "$target/out"
        ksecs=$(since "$t")
        umount "$WORK/mnt"
        rm -rf "$target/out"
        rows+=("$fs|$where|$secs|$ksecs")
        echo "  $fs into $where: vmvault $secs s, kernel cp $ksecs s" >&2
    done
done

printf '\n%-7s %-6s %12s %12s %14s %10s\n' fs target "vmvault s" "files/s" "kernel cp s" "vs kernel"
for row in "${rows[@]}"; do
    IFS='|' read -r fs where secs ksecs <<<"$row"
    python3 - "$fs" "$where" "$secs" "$ksecs" "$FILES" <<'PY'
import sys
fs, where, secs, ksecs, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rate = n / secs if secs > 0 else float("inf")
ratio = f"{ksecs / secs:.1f}x" if secs > 0 else "-"
print(f"{fs:<7} {where:<6} {secs:12.2f} {rate:12.0f} {ksecs:14.2f} {ratio:>10}")
PY
done
