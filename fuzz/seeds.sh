#!/bin/sh
# Seed corpora of real images for the guest-disk fuzz targets, made with the real tools and
# filled by the kernel where it can (run as root): fuzz/corpus/xfs (XFS v5 filled through a
# mount, and v4 — which this kernel no longer mounts — filled by mkfs.xfs from a protofile;
# 1 KiB blocks and an external log, so each filesystem is in its first few hundred KiB),
# fuzz/corpus/lvm (the first 64 KiB of a disk that is an LVM PV with two LVs) and
# fuzz/corpus/luks (LUKS1 and LUKS2 headers with their keyslots) and fuzz/corpus/btrfs (a
# btrfs with a subvolume and zstd files, as the target's sparse records of its non-zero
# 4 KiB blocks), fuzz/corpus/ext (ext4 with and without inline_data, in the same records) and
# fuzz/corpus/ntfs_parts (an LZNT1 chunk, a symlink reparse buffer), fuzz/corpus/guest_fs (a
# disk that is an MD RAID1 member holding ext4). Every filesystem seed
# carries extended attributes and ACLs.
# Needs xfsprogs, btrfs-progs, lvm2, cryptsetup, attr and acl. Usage: sh fuzz/seeds.sh
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
    # Attributes in short form, a leaf with a remote value, a dabtree (node form), ACLs.
    setfattr -n security.selinux -v system_u:object_r:etc_t:s0 "$work/m/d/f1"
    setfacl -m u:1001:rwx -d -m g:1002:r-x "$work/m/d"
    setfattr -n user.mid -v "$(printf 'm%.0s' $(seq 1 500))" "$work/m/d/f2"
    setfattr -n user.remote -v "$(printf 'r%.0s' $(seq 1 900))" "$work/m/d/f2"
    for i in $(seq 1 40); do setfattr -n "user.attr$i" -v "$(printf 'v%.0s' $(seq 1 40))" "$work/m/d/f3"; done
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
# v4 attributes, one xfs_db run each (it cannot be mounted here): short form, then a leaf.
for a in "-s -v 30 selinux" "-u -v 300 mid" "-r -v 10 root"; do
    xfs_db -x -l "$work/log" -c "path /d/f1" -c "attr_set $a" "$work/v4.img" >/dev/null
done
python3 -c "
d = open('$work/v4.img', 'rb').read().rstrip(b'\0')
open('corpus/xfs/v4-attrs', 'wb').write(d)
"

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
setfattr -n security.selinux -v system_u:object_r:etc_t:s0 "$work/m/root/etc/hostname"
setfacl -m u:1001:r-- "$work/m/root/big.txt"
umount "$work/m"
# The sparse-record form of the btrfs and ext targets: (u32 block number, 4 KiB) per
# non-zero block.
records() { # image, output
    python3 -c "
import struct
d = open('$1', 'rb').read()
with open('$2', 'wb') as out:
    for i in range(0, len(d), 4096):
        if d[i:i + 4096].strip(b'\0'):
            out.write(struct.pack('<I', i // 4096) + d[i:i + 4096])
"
}
records "$work/btrfs" corpus/btrfs/small
# ext4: plain, and with inline_data; attributes in inodes, in a block, ACLs, an htree.
mkdir -p corpus/ext
for features in plain inline_data; do
    truncate -s 8M "$work/ext"
    mkfs.ext4 -q -F -b 4096 -O "$(echo "$features" | sed 's/plain/^inline_data/')" "$work/ext"
    mount "$work/ext" "$work/m"
    mkdir -p "$work/m/small" "$work/m/many"
    echo tiny > "$work/m/small/a"
    python3 -c "print('x' * 150)" > "$work/m/small/b"
    for i in $(seq 1 200); do echo "$i" > "$work/m/many/file-with-a-long-name-$i"; done
    setfattr -n user.note -v short "$work/m/small/a"
    setfattr -n user.big -v "$(printf 'b%.0s' $(seq 1 2000))" "$work/m/small/b"
    setfacl -m u:1001:rwx -d -m g:1002:r-x "$work/m/small"
    ln -s "/$(printf 'abcdefghij/%.0s' $(seq 1 10))t" "$work/m/small/link"
    umount "$work/m"
    records "$work/ext" "corpus/ext/$features"
done
# guest_fs: a whole disk that is an MD RAID1 member (metadata 1.2: superblock 4 KiB in, data
# 1 MiB in) holding a small ext4 (mdadm cannot write one without the kernel's md driver; the
# superblock follows the kernel's layout, and mdadm --examine accepts it).
mkdir -p corpus/guest_fs
truncate -s 1M "$work/md-inner"
mkfs.ext4 -q -F -b 1024 -N 64 "$work/md-inner"
python3 -c "
import struct
sb = bytearray(4096)
def p32(a, v): sb[a:a + 4] = struct.pack('<I', v)
def p64(a, v): sb[a:a + 8] = struct.pack('<Q', v)
p32(0, 0xa92b4efc); p32(4, 1); sb[16:32] = b'Z' * 16; sb[32:40] = b'host:md0'; p32(72, 1)
p64(80, 2048); p32(92, 2); p64(128, 2048); p64(136, 2048); p64(144, 8); p32(220, 2)
sb[256:260] = b'\0\0\1\0'
s = sum(struct.unpack('<65I', bytes(sb[:260])))
p32(216, ((s & 0xffffffff) + (s >> 32)) & 0xffffffff)
inner = open('$work/md-inner', 'rb').read()
open('corpus/guest_fs/md-raid1', 'wb').write(bytes(4096) + bytes(sb) + bytes(1048576 - 8192) + inner)
"
# NTFS pieces: an LZNT1 chunk of literals (even first byte), a symlink reparse buffer (odd).
mkdir -p corpus/ntfs_parts
python3 -c "
import struct
lits = b'abcdefgh' * 8
chunk = b''.join(b'\0' + lits[i:i + 8] for i in range(0, len(lits), 8))
open('corpus/ntfs_parts/lznt1', 'wb').write(b'\0' + struct.pack('<H', 0xB000 | (len(chunk) - 1)) + chunk)
name = chr(92).join(['C:', 'Users', 'Ana']).encode('utf-16-le')
body = struct.pack('<HHHHI', 0, len(name), len(name), len(name), 0) + name + name
open('corpus/ntfs_parts/symlink', 'wb').write(b'\1' + struct.pack('<IHH', 0xA000000C, len(body), 0) + body)
"
ls -l corpus/luks corpus/btrfs corpus/ext corpus/ntfs_parts corpus/guest_fs
