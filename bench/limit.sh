#!/usr/bin/env bash
# The machine's limit beside the benchmark: each stage of a backup and a restore timed alone on
# every core over the libvirt benchmark's two disks (the booted guest's root image and the data
# disk of bench/data-disk.sh), with vmvault's own libraries and parameters
# (crates/engine/examples/limit.rs). Nothing else runs meanwhile — no guest under TCG — so the
# limit is what vmvault could reach on an idle machine.
#
# Usage: bench/limit.sh        (as root, so the first read is from a cold page cache;
#                               work directory $BENCH_DIR/limit, default /var/tmp/vmvault-bench/limit)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/vmvault-bench}/limit
LIMIT=${LIMIT:-${CARGO_TARGET_DIR:-$here/target}/release/examples/limit}
[ -x "$LIMIT" ] || { echo "no limit tool at $LIMIT: run cargo build --release -p engine --example limit" >&2; exit 1; }
image=$(sh "$here/.ci/guest-image")
rm -rf "$WORK" && mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
bash "$here/bench/data-disk.sh" "$WORK/data.qcow2"
LIMIT_DIR=$WORK "$LIMIT" "$image" "$WORK/data.qcow2"
