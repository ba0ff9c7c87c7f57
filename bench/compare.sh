#!/usr/bin/env bash
# vmvault against its peers, side by side, on the same VM disks, in one run.
#
# It installs nothing. What it uses, and how to get it:
#   apt-get install -y qemu-utils e2fsprogs fdisk restic borgbackup   # restic 0.14, borg 1.2
#   cargo install --locked rustic-rs                                  # optional, ~13 min on 2 cores
#   cargo build --release                                             # vmvault itself
# Peers that are not installed are skipped.
#
# The VM: two qcow2 disks, 8 GiB logical in all.
#   os.qcow2   4 GiB: a GPT with one partition holding ext4, made by mkfs.ext4 -d from ~500 MB
#              of real files (/usr/bin, /usr/share/doc, /usr/lib/python3).
#   data.qcow2 4 GiB: 512 MiB of random bytes, 1 GiB of log-like text, 256 MiB of written zeros,
#              the rest never written.
# The change between the two backups: 1 % of the logical size (82 MiB) written with qemu-io as
# 64 KiB writes in 41 bursts of 2 MiB at random places (seed fixed), like a guest that updates a
# few files, a database and its logs.
#
# Every tool backs up the same two image files, then again after the change, then restores the
# latest backup; each restore is checked with qemu-img compare. Page caches are dropped before each
# timed step when the kernel allows it, and each timed step ends with `sync`, so every tool is
# timed until what it wrote is on disk (vmvault fsyncs as it goes; restic does not). MB/s is
# logical size (8 GiB) per second.
#
# vmvault's full backup is also timed through a vault server on loopback (TLS, a local vault
# behind it) and into an S3 bucket (moto_server on loopback, in memory; needs `pip install
# 'moto[server]'`): the rows vmvault-server and vmvault-s3. Each vault then also takes the full
# backup of a clone (a second VM with copies of the same two disks): the clone-full rows, whose
# "stored" is what that backup added.
#
# Usage: bench/compare.sh            (work directory: $BENCH_DIR, default /var/tmp/vmvault-bench)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/vmvault-bench}
VMVAULT=${VMVAULT:-${CARGO_TARGET_DIR:-$here/target}/release/vmvault}
PASS=bench-passphrase
[ -x "$VMVAULT" ] || { echo "no vmvault at $VMVAULT: run cargo build --release (or set VMVAULT)" >&2; exit 1; }
for tool in qemu-img qemu-io mkfs.ext4 sfdisk python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y qemu-utils e2fsprogs fdisk" >&2; exit 1; }
done

now() { date +%s.%N; }
since() { sync; python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
bytes_of() { du -sb "$1" | cut -f1; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

# ---------------------------------------------------------------- the disks (built once, reused)
base=$WORK/base
build_disks() {
    rm -rf "$base" && mkdir -p "$base/files"
    echo "building the VM disks in $base ..." >&2
    cp -a /usr/bin "$base/files/bin"
    cp -a /etc "$base/files/etc"
    mkdir -p "$base/files/usr/share" "$base/files/usr/lib"
    cp -a /usr/share/doc "$base/files/usr/share/doc"
    cp -a /usr/lib/python3 "$base/files/usr/lib/python3" 2>/dev/null || true
    truncate -s 4G "$base/os.raw"
    printf 'label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' | sfdisk -q "$base/os.raw"
    mkfs.ext4 -q -F -L root -E offset=1048576 -d "$base/files" "$base/os.raw" 4000M
    qemu-img convert -f raw -O qcow2 "$base/os.raw" "$base/os.qcow2"
    rm -rf "$base/os.raw" "$base/files"

    qemu-img create -q -f qcow2 "$base/data.qcow2" 4G
    head -c 512M /dev/urandom >"$base/random.bin"
    python3 "$here/bench/logtext.py" "$base/text.bin"
    qemu-io -f qcow2 -c "write -s $base/random.bin 256M 512M" -c "write -s $base/text.bin 1G 1G" \
        -c "write -P 0 2560M 256M" "$base/data.qcow2" >/dev/null
    rm -f "$base/random.bin" "$base/text.bin"

    python3 - "$base" <<'EOF'
import random, sys
random.seed(42)
for disk in ("os", "data"):
    cmds = []
    for burst in range(41 if disk == "os" else 0, 82 if disk == "os" else 41):
        start = random.randrange(0, (4 << 30) - (2 << 20), 64 << 10)
        for i in range(32):
            cmds.append(f"write -P 0x{(burst * 7 + i) % 255 + 1:x} {start + i * (64 << 10)} 64k")
    open(f"{sys.argv[1]}/writes-{disk}.txt", "w").write("\n".join(cmds) + "\n")
EOF
    touch "$base/.complete-v2"
}
[ -f "$base/.complete-v2" ] || build_disks
LOGICAL=$((8 << 30))
ACTUAL=$(( $(stat -c %s "$base/os.qcow2") + $(stat -c %s "$base/data.qcow2") ))

run=$WORK/run
fresh_disks() {
    rm -rf "$run" && mkdir -p "$run"
    cp --sparse=always "$base/os.qcow2" "$base/data.qcow2" "$run/"
}
apply_change() {
    for disk in os data; do
        args=()
        while read -r c; do args+=(-c "$c"); done <"$base/writes-$disk.txt"
        qemu-io -f qcow2 "${args[@]}" "$run/$disk.qcow2" >/dev/null
    done
}
snapshot_expected() { cp --sparse=always "$run/os.qcow2" "$WORK/expected-os.qcow2"; cp --sparse=always "$run/data.qcow2" "$WORK/expected-data.qcow2"; }
check_restore() { # DIR-or-files os data
    qemu-img compare -q "$WORK/expected-os.qcow2" "$1" && qemu-img compare -q "$WORK/expected-data.qcow2" "$2" \
        || { echo "RESTORE MISMATCH for $3" >&2; exit 1; }
}

results=()   # "tool|phase|seconds|stored"
record() { results+=("$1|$2|$3|$4"); printf '  %-16s %-12s %8s s  stored %s\n' "$1" "$2" "$3" "$4" >&2; }

# ---------------------------------------------------------------- vmvault
clone_backup() { # label: back up a clone of the VM's original disks into the same vault
    local t
    cp --sparse=always "$base/os.qcow2" "$run/clone-os.qcow2"; cp --sparse=always "$base/data.qcow2" "$run/clone-data.qcow2"
    "$VMVAULT" vm add clone --disk "vda=$run/clone-os.qcow2" --disk "vdb=$run/clone-data.qcow2" >/dev/null
    drop_caches; t=$(now); "$VMVAULT" backup clone --json >"$WORK/$1-clone.json"
    record "$1" clone-full "$(since "$t")" "$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['bytes_new'])" "$WORK/$1-clone.json")"
}

bench_vmvault() { # label, unlocked(1/0)
    local label=$1 unlocked=$2 t
    fresh_disks
    export VMVAULT_VAULT=$run/vault VMVAULT_PASSPHRASE=$PASS
    "$VMVAULT" vault init >/dev/null
    "$VMVAULT" vm add bench --disk "vda=$run/os.qcow2" --disk "vdb=$run/data.qcow2" >/dev/null
    if [ "$unlocked" = 1 ]; then "$VMVAULT" key unlock --timeout 1h >/dev/null; unset VMVAULT_PASSPHRASE; fi
    drop_caches; t=$(now); "$VMVAULT" backup bench --json >"$WORK/$label-full.json"; record "$label" full "$(since "$t")" "$(bytes_of "$run/vault")"
    clone_backup "$label"
    apply_change; snapshot_expected
    drop_caches; t=$(now); "$VMVAULT" backup bench --json >"$WORK/$label-incr.json"; record "$label" incremental "$(since "$t")" "$(bytes_of "$run/vault")"
    drop_caches; t=$(now); "$VMVAULT" restore vm bench --point latest --as restored --to "$run/restored" >/dev/null; record "$label" restore "$(since "$t")" "-"
    drop_caches; t=$(now); "$VMVAULT" files ls bench /etc >/dev/null; record "$label" "files-ls-etc" "$(since "$t")" "-"
    check_restore "$run/restored/restored-vda.qcow2" "$run/restored/restored-vdb.qcow2" "$label"
    [ "$unlocked" = 1 ] && VMVAULT_PASSPHRASE=$PASS "$VMVAULT" key lock >/dev/null
    unset VMVAULT_VAULT VMVAULT_PASSPHRASE
}

# ------------------------------------------- vmvault through a vault server, and into S3 (full only)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench_vmvault_server() { # the same full backup, through `vmvault server` on loopback (TLS) into a local vault
    local label=vmvault-server t pid
    fresh_disks
    VMVAULT_PASSPHRASE=$PASS "$VMVAULT" --vault "$run/server-vault" vault init >/dev/null
    local token; token=$("$VMVAULT" server token create bench --role admin --state "$run/server-state" 2>/dev/null)
    "$VMVAULT" --vault "$run/server-vault" server --listen 127.0.0.1:0 --state "$run/server-state" >"$run/server.out" 2>"$run/server.err" &
    pid=$!
    for _ in $(seq 100); do grep -q fingerprint "$run/server.out" 2>/dev/null && break; sleep 0.1; done
    export VMVAULT_VAULT=$(awk '/server on/ {print $4}' "$run/server.out") VMVAULT_TOKEN=$token
    export VMVAULT_FINGERPRINT=$(awk '/fingerprint/ {print $4}' "$run/server.out") VMVAULT_PASSPHRASE=$PASS
    "$VMVAULT" vm add bench --disk "vda=$run/os.qcow2" --disk "vdb=$run/data.qcow2" >/dev/null
    drop_caches; t=$(now); "$VMVAULT" backup bench --json >"$WORK/$label-full.json"; record "$label" full "$(since "$t")" "$(bytes_of "$run/server-vault")"
    clone_backup "$label"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    unset VMVAULT_VAULT VMVAULT_TOKEN VMVAULT_FINGERPRINT VMVAULT_PASSPHRASE
}

bench_vmvault_s3() { # the same full backup into an S3 bucket (moto_server on loopback, in memory)
    local label=vmvault-s3 t pid port
    command -v moto_server >/dev/null || { echo "  (moto_server missing: pip install 'moto[server]'; S3 row skipped)" >&2; return; }
    fresh_disks
    port=$(free_port)
    moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break; sleep 0.1; done
    python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$port/bench', method='PUT'))"
    export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
    export VMVAULT_VAULT=s3://bench/vault VMVAULT_PASSPHRASE=$PASS
    "$VMVAULT" vault init >/dev/null
    "$VMVAULT" vm add bench --disk "vda=$run/os.qcow2" --disk "vdb=$run/data.qcow2" >/dev/null
    drop_caches; t=$(now); "$VMVAULT" backup bench --json >"$WORK/$label-full.json"; record "$label" full "$(since "$t")" "$(python3 -c "import json; print(json.load(open('$WORK/$label-full.json'))['bytes_new'])")"
    clone_backup "$label"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    unset AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY VMVAULT_VAULT VMVAULT_PASSPHRASE
}

# ---------------------------------------------------------------- restic / rustic (same CLI shape)
bench_restic_like() { # name, command...
    local name=$1; shift
    local t
    fresh_disks
    export RESTIC_REPOSITORY=$run/repo RESTIC_PASSWORD=$PASS RUSTIC_REPOSITORY=$run/repo RUSTIC_PASSWORD=$PASS
    "$@" init >/dev/null 2>&1
    cd "$run"
    drop_caches; t=$(now); "$@" backup os.qcow2 data.qcow2 >/dev/null 2>&1; record "$name" full "$(since "$t")" "$(bytes_of "$run/repo")"
    apply_change; snapshot_expected
    drop_caches; t=$(now); "$@" backup os.qcow2 data.qcow2 >/dev/null 2>&1; record "$name" incremental "$(since "$t")" "$(bytes_of "$run/repo")"
    drop_caches; t=$(now)
    if [ "$name" = restic ]; then "$@" restore latest --target "$run/restored" >/dev/null 2>&1
    else "$@" restore latest "$run/restored" >/dev/null 2>&1; fi
    record "$name" restore "$(since "$t")" "-"
    local os data
    os=$(find "$run/restored" -name os.qcow2 | head -1); data=$(find "$run/restored" -name data.qcow2 | head -1)
    check_restore "$os" "$data" "$name"
    cd "$here"
    unset RESTIC_REPOSITORY RESTIC_PASSWORD RUSTIC_REPOSITORY RUSTIC_PASSWORD
}

# ---------------------------------------------------------------- borg
bench_borg() {
    local t
    fresh_disks
    export BORG_REPO=$run/repo BORG_PASSPHRASE=$PASS BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
    borg init -e repokey-blake2 >/dev/null 2>&1
    cd "$run"
    drop_caches; t=$(now); borg create ::full os.qcow2 data.qcow2 >/dev/null 2>&1; record borg full "$(since "$t")" "$(bytes_of "$run/repo")"
    apply_change; snapshot_expected
    drop_caches; t=$(now); borg create ::incr os.qcow2 data.qcow2 >/dev/null 2>&1; record borg incremental "$(since "$t")" "$(bytes_of "$run/repo")"
    mkdir -p "$run/restored" && cd "$run/restored"
    drop_caches; t=$(now); borg extract ::incr >/dev/null 2>&1; record borg restore "$(since "$t")" "-"
    check_restore "$run/restored/os.qcow2" "$run/restored/data.qcow2" borg
    cd "$here"
    unset BORG_REPO BORG_PASSPHRASE
}

# ---------------------------------------------------------------- qemu-img convert -c
bench_qemu_img() {
    local t
    fresh_disks
    mkdir -p "$run/copies"
    drop_caches; t=$(now)
    for d in os data; do qemu-img convert -c -O qcow2 "$run/$d.qcow2" "$run/copies/$d-full.qcow2"; done
    record "qemu-img -c" full "$(since "$t")" "$(bytes_of "$run/copies")"
    apply_change; snapshot_expected
    drop_caches; t=$(now)
    for d in os data; do qemu-img convert -c -O qcow2 "$run/$d.qcow2" "$run/copies/$d-incr.qcow2"; done
    record "qemu-img -c" incremental "$(since "$t")" "$(bytes_of "$run/copies")"
    mkdir -p "$run/restored"
    drop_caches; t=$(now)
    for d in os data; do qemu-img convert -O qcow2 "$run/copies/$d-incr.qcow2" "$run/restored/$d.qcow2"; done
    record "qemu-img -c" restore "$(since "$t")" "-"
    check_restore "$run/restored/os.qcow2" "$run/restored/data.qcow2" qemu-img
}

echo "vmvault benchmark: 8 GiB logical, $((ACTUAL >> 20)) MiB in the image files; $(nproc) cores; $(date -u +%FT%TZ)" >&2
bench_vmvault vmvault 1
bench_vmvault "vmvault-locked" 0
bench_vmvault_server
bench_vmvault_s3
command -v restic >/dev/null && bench_restic_like restic restic
command -v rustic >/dev/null && bench_restic_like rustic rustic
command -v borg >/dev/null && bench_borg
bench_qemu_img
rm -rf "$run"

# ---------------------------------------------------------------- the table
python3 "$here/bench/table.py" "$LOGICAL" "${results[@]}"

# ---------------------------------------------------------------- a running libvirt domain
# vmvault against virtnbdbackup on the same running domain (bench/libvirt.sh; skipped when
# libvirt or virtnbdbackup is missing, or with BENCH_LIBVIRT=0).
if [ "${BENCH_LIBVIRT:-1}" = 1 ] && command -v virtnbdbackup >/dev/null && command -v virsh >/dev/null; then
    echo >&2
    VMVAULT=$VMVAULT bash "$here/bench/libvirt.sh"
fi

# ---------------------------------------------------------------- single files
# `files get` of a 10 000-file folder on ext4, XFS, btrfs and NTFS beside the kernel's own
# reader (bench/files.sh; BENCH_FILES=0 skips it).
if [ "${BENCH_FILES:-1}" = 1 ]; then
    echo >&2
    VMVAULT=$VMVAULT bash "$here/bench/files.sh"
fi
