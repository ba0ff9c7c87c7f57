#!/usr/bin/env bash
# The benchmark's data disk: a 2 GiB qcow2 holding 512 MiB of random bytes at 0 and 1 GiB of
# log-like text (bench/logtext.py) at 768 MiB; the rest unallocated.
# Usage: bench/data-disk.sh PATH.qcow2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
tmp=$(dirname "$out")
qemu-img create -q -f qcow2 "$out" 2G
head -c 512M /dev/urandom >"$tmp/random.bin"
python3 "$here/logtext.py" "$tmp/text.bin"
qemu-io -f qcow2 -c "write -s $tmp/random.bin 0 512M" -c "write -s $tmp/text.bin 768M 1G" "$out" >/dev/null
rm -f "$tmp/random.bin" "$tmp/text.bin"
