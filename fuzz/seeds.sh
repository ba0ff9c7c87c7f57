#!/bin/sh
# Seed corpora of real images for the guest-disk fuzz targets, made with the real tools and
# filled by the kernel where it can (run as root): fuzz/corpus/xfs (XFS v5 filled through a
# mount, and v4 — which this kernel no longer mounts — filled by mkfs.xfs from a protofile;
# 1 KiB blocks and an external log, so each filesystem is in its first few hundred KiB),
# fuzz/corpus/lvm (the first 64 KiB of a disk that is an LVM PV with two LVs) and
# fuzz/corpus/luks (LUKS1 and LUKS2 headers with their keyslots) and fuzz/corpus/btrfs (a
# btrfs with a subvolume and zstd files, as the target's sparse records of its non-zero
# 4 KiB blocks).
# Needs xfsprogs, btrfs-progs, lvm2 and cryptsetup. Usage: sh fuzz/seeds.sh
set -eu
cd "$(dirname "$0")"
work=$(mktemp -d)
loops=""
trap 'umount "$work/m" 2>/dev/null || true; for l in $loops; do losetup -d "$l" 2>/dev/null || true; done; rm -rf "$work"' EXIT
mkdir -p corpus/xfs corpus/lvm corpus/luks corpus/btrfs "$work/m"

xfs_seed() { # name, extra mkfs options ("-p PROTO": filled by mkfs, not mounted)
    img="$work/$1.img"
    truncate -s 24M "$img"
    truncate -s 8M "$work/log"
    log=$(losetup -f --show "$work/log")
    loops="$loops $log"
    # The 300 MiB minimum of mkfs.xfs is lifted for filesystem tests by these variables.
    TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f -b size=1024 -d agcount=1 -i size=512 \
        -l logdev="$log" $2 "$img"
    case "$2" in *-p*) ;; *)
    mount -o logdev="$log" "$img" "$work/m"
    mkdir -p "$work/m/d/sub"
    for i in $(seq 1 60); do echo "$i" > "$work/m/d/f$i"; done
    echo hello > "$work/m/d/sub/x"
    ln -s ../d/f1 "$work/m/link"
    ln -s "/$(printf 'abcdefghij/%.0s' $(seq 1 30))t" "$work/m/longlink"
    python3 -c "
import os
f = os.open('$work/m/frag', os.O_CREAT | os.O_WRONLY)
for i in range(40):
    os.pwrite(f, bytes([i]) * 1024, i * 2048)
"
    umount "$work/m" ;;
    esac
    losetup -d "$log"
    # Everything after the last non-zero byte reads as zeros in the target anyway.
    python3 -c "
d = open('$img', 'rb').read().rstrip(b'\0')
open('corpus/xfs/$1', 'wb').write(d)
"
}
xfs_seed v5 ""
mkdir -p "$work/src"
for i in $(seq 1 60); do echo "$i" > "$work/src/f$i"; done
{
    echo /dev/null; echo 0 0; echo "d--755 0 0"; echo "d d--755 0 0"
    for i in $(seq 1 60); do echo "f$i ---644 0 0 $work/src/f$i"; done
    echo '$'
    echo "link l--777 0 0 ../d/f1"
    echo "longlink l--777 0 0 /$(printf 'abcdefghij/%.0s' $(seq 1 30))t"
    echo '$'
} > "$work/proto"
xfs_seed v4 "-m crc=0 -p $work/proto"

img="$work/pv.img"
truncate -s 64M "$img"
pv=$(losetup -f --show "$img")
loops="$loops $pv"
export LVM_SUPPRESS_FD_WARNINGS=1
pvcreate -q --devicesfile "" "$pv"
vgcreate -q --devicesfile "" fuzzvg "$pv"
lvcreate -q --devicesfile "" --driverloaded n -an -Zn -L 8M -n one fuzzvg
lvcreate -q --devicesfile "" --driverloaded n -an -Zn -L 12M -n two fuzzvg
vgchange -q --devicesfile "" --driverloaded n -an fuzzvg >/dev/null 2>&1 || true
losetup -d "$pv"
head -c 65536 "$img" > corpus/lvm/pv
python3 -c "
d = open('corpus/lvm/pv', 'rb').read()
start = d.index(b'fuzzvg {')
open('corpus/lvm/metadata', 'wb').write(d[start:].split(b'\0')[0])
"
# LUKS1 and LUKS2 headers with cheap keyslots (the passphrase is the target's "fuzz").
printf fuzz > "$work/pass"
for v in luks1 luks2; do
    truncate -s 4M "$work/$v"
    dev=$(losetup -f --show "$work/$v")
    loops="$loops $dev"
    cryptsetup luksFormat -q --type "$v" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --key-file "$work/pass" "$dev"
    losetup -d "$dev"
    # Headers and keyslot 0 are in the first 300 KiB (the rest is random wipe).
    head -c 307200 "$work/$v" > "corpus/luks/$v"
done
truncate -s 128M "$work/btrfs"
mkfs.btrfs -q -f -m single -d single "$work/btrfs" >/dev/null 2>&1
mount -o compress=zstd "$work/btrfs" "$work/m"
btrfs -q subvolume create "$work/m/root"
mkdir -p "$work/m/root/etc"
echo fuzz > "$work/m/root/etc/hostname"
python3 -c "print('x' * 30000)" > "$work/m/root/big.txt"
head -c 20000 /dev/urandom > "$work/m/root/random.bin"
ln -s etc/hostname "$work/m/root/link"
umount "$work/m"
python3 -c "
import struct
d = open('$work/btrfs', 'rb').read()
with open('corpus/btrfs/small', 'wb') as out:
    for i in range(0, len(d), 4096):
        if d[i:i + 4096].strip(b'\0'):
            out.write(struct.pack('<I', i // 4096) + d[i:i + 4096])
"
ls -l corpus/luks corpus/btrfs
