#!/usr/bin/env bash
# vmvault against virtnbdbackup on the same running libvirt domain, side by side, in one run.
#
# It installs nothing. What it uses, and how to get it:
#   apt-get install -y libvirt-daemon-system virtnbdbackup debootstrap extlinux   # virtnbdbackup 1.9.15
#   cargo build --release                                                         # vmvault itself
#   sh .ci/guest-image                                                            # the booted guest (cached)
# It runs as root and starts libvirtd (and virtlogd) if none answers.
#
# The domain: the test guest (Debian 12, qemu-guest-agent, a writer appending a synced line
# every 100 ms) booted under TCG from a qcow2 overlay of the cached image (2 GiB, ~600 MB
# used), plus a 2 GiB qcow2 data disk holding 512 MiB of random bytes and 1 GiB of log-like
# text. The change between the two backups: 1 % of the logical size (41 MiB) written by the
# guest itself, as 64 KiB direct writes in 20 bursts of 2 MiB at random places of its data disk.
#
# Both tools back up the running domain through libvirt's backup API (pull mode, checkpoints,
# freeze through libvirt's agent), fully, then incrementally after the change, then restore the
# latest backup of both disks; each restored data disk is compared with the guest's own
# checksum of it at that backup (the guest does not touch that disk after the change). Each
# timed step ends with `sync`. virtnbdbackup refuses a domain holding checkpoints it did not
# make, so the tools take turns on the same running domain (virtnbdbackup first).
#
# Usage: bench/libvirt.sh            (work directory: $BENCH_DIR/libvirt, default /var/tmp/vmvault-bench/libvirt)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/vmvault-bench}/libvirt
VMVAULT=${VMVAULT:-${CARGO_TARGET_DIR:-$here/target}/release/vmvault}
DOM=vmvault-bench
[ -x "$VMVAULT" ] || { echo "no vmvault at $VMVAULT: run cargo build --release (or set VMVAULT)" >&2; exit 1; }
for tool in virsh virtnbdbackup virtnbdrestore qemu-img qemu-io python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y libvirt-daemon-system virtnbdbackup" >&2; exit 1; }
done
virsh -c qemu:///system version >/dev/null 2>&1 || { virtlogd -d; libvirtd -d; sleep 2; }
image=$(sh "$here/.ci/guest-image")

now() { date +%s.%N; }
since() { sync; python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
bytes_of() { du -sb "$1" | cut -f1; }
agent() { virsh qemu-agent-command "$DOM" "$1"; }
guest_sh() { # run a shell command in the guest, wait for it, print its stdout
    local pid out
    pid=$(agent "{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"/bin/sh\",\"arg\":[\"-c\",\"$1\"],\"capture-output\":true}}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["return"]["pid"])')
    while :; do
        out=$(agent "{\"execute\":\"guest-exec-status\",\"arguments\":{\"pid\":$pid}}")
        if echo "$out" | grep -q '"exited":true'; then
            echo "$out" | python3 -c 'import base64,json,sys; r=json.load(sys.stdin)["return"]; print(base64.b64decode(r.get("out-data","")).decode(), end="")'
            return
        fi
        sleep 0.2
    done
}
cleanup() { virsh destroy "$DOM" >/dev/null 2>&1 || true; virsh undefine --checkpoints-metadata "$DOM" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# ---------------------------------------------------------------- the domain
cleanup
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 755 "$WORK"
qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$WORK/root.qcow2"
bash "$here/bench/data-disk.sh" "$WORK/data.qcow2"
cat >"$WORK/dom.xml" <<EOF
<domain type='qemu'>
  <name>$DOM</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <cpu mode='custom'><model>qemu64</model></cpu>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$WORK/root.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$WORK/data.qcow2'/><target dev='vdb' bus='virtio'/></disk>
    <serial type='pty'><target port='0'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>
EOF
virsh define "$WORK/dom.xml" >/dev/null
virsh start "$DOM" >/dev/null
until agent '{"execute":"guest-ping"}' >/dev/null 2>&1; do sleep 1; done
LOGICAL=$((4 << 30))

# The guest's own 1 % change: 20 bursts of 32 × 64 KiB at random 64 KiB-aligned places.
change_script=$(python3 - <<'EOF'
import random
random.seed(42)
cmds = []
for burst in range(20):
    start = random.randrange(0, (2 << 30) // (64 << 10) - 32)
    cmds.append(f"dd if=/dev/urandom of=/dev/vdb bs=64k seek={start} count=32 oflag=direct 2>/dev/null")
print("; ".join(cmds))
EOF
)

results=()   # "tool|phase|seconds|stored"
record() { results+=("$1|$2|$3|$4"); printf '  %-16s %-12s %8s s  stored %s\n' "$1" "$2" "$3" "$4" >&2; }

export VMVAULT_VAULT=$WORK/vault VMVAULT_PASSPHRASE=bench-passphrase
"$VMVAULT" vault init >/dev/null
"$VMVAULT" vm import-libvirt "$DOM" >/dev/null
"$VMVAULT" key unlock --timeout 1h >/dev/null
mkdir -p "$WORK/scratch"

echo "libvirt benchmark: domain $DOM running under TCG, 4 GiB logical; $(nproc) cores; $(date -u +%FT%TZ)" >&2
# virtnbdbackup refuses a domain with checkpoints it did not make, so the tools take turns:
# virtnbdbackup's chain first (full, the change, incremental, restore), its checkpoints then
# deleted, then vmvault's (full, the same change again at the same places, incremental, restore).
t=$(now); virtnbdbackup -d "$DOM" -l full -o "$WORK/virtnbd" >"$WORK/virtnbd-full.log" 2>&1; record virtnbdbackup live-full "$(since "$t")" "$(bytes_of "$WORK/virtnbd")"
guest_sh "$change_script"
want_virtnbd=$(guest_sh "md5sum < /dev/vdb" | cut -d' ' -f1)
t=$(now); virtnbdbackup -d "$DOM" -l inc -o "$WORK/virtnbd" >"$WORK/virtnbd-incr.log" 2>&1; record virtnbdbackup live-incr "$(since "$t")" "$(bytes_of "$WORK/virtnbd")"
t=$(now); virtnbdrestore -i "$WORK/virtnbd" -o "$WORK/r-virtnbd" >"$WORK/virtnbd-restore.log" 2>&1; record virtnbdbackup restore "$(since "$t")" "-"
for cp in $(virsh checkpoint-list "$DOM" --name); do virsh checkpoint-delete "$DOM" "$cp" >/dev/null; done

t=$(now); "$VMVAULT" backup "$DOM" --scratch "$WORK/scratch" --json >"$WORK/vmvault-full.json"; record vmvault live-full "$(since "$t")" "$(bytes_of "$WORK/vault")"
guest_sh "$change_script"
want_vmvault=$(guest_sh "md5sum < /dev/vdb" | cut -d' ' -f1)
t=$(now); "$VMVAULT" backup "$DOM" --scratch "$WORK/scratch" --json >"$WORK/vmvault-incr.json"; record vmvault live-incr "$(since "$t")" "$(bytes_of "$WORK/vault")"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert [x['mode'] for x in d['disks']]==['incremental','incremental'], d" "$WORK/vmvault-incr.json"
mkdir -p "$WORK/r-vmvault"
t=$(now)
"$VMVAULT" restore disk "$DOM" --point latest --disk vda --to "$WORK/r-vmvault/vda.qcow2" >/dev/null
"$VMVAULT" restore disk "$DOM" --point latest --disk vdb --to "$WORK/r-vmvault/vdb.qcow2" >/dev/null
record vmvault restore "$(since "$t")" "-"
"$VMVAULT" key lock >/dev/null

# Both restored data disks hold what the guest wrote.
raw_md5() { qemu-img convert -O raw "$1" "$WORK/check.raw" && md5sum "$WORK/check.raw" | cut -d' ' -f1; rm -f "$WORK/check.raw"; }
got_vmvault=$(raw_md5 "$WORK/r-vmvault/vdb.qcow2")
got_virtnbd=$(raw_md5 "$(find "$WORK/r-virtnbd" -name 'vdb*' -o -name 'data*' | head -1)")
[ "$got_vmvault" = "$want_vmvault" ] || { echo "RESTORE MISMATCH for vmvault ($got_vmvault, guest $want_vmvault)" >&2; exit 1; }
[ "$got_virtnbd" = "$want_virtnbd" ] || { echo "RESTORE MISMATCH for virtnbdbackup ($got_virtnbd, guest $want_virtnbd)" >&2; exit 1; }

python3 "$here/bench/table.py" "$LOGICAL" "${results[@]}"
rm -rf "$WORK/r-vmvault" "$WORK/r-virtnbd"
