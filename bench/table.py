#!/usr/bin/env python3
"""The benchmarks' table: `table.py LOGICAL_BYTES ROW...`, each row `tool|phase|seconds|stored`;
every other tool is compared with the rows of tool `vmvault` of the same phase."""
import sys
logical = int(sys.argv[1])
rows = [r.split("|") for r in sys.argv[2:]]
ref = {(t, p): float(s) for t, p, s, _ in rows}
stored_ref = {p: st for t, p, s, st in rows if t == "vmvault"}
def human(n):
    if n == "-": return "-"
    n = int(n)
    for u in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or u == "GiB": return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
        n /= 1024
print(f"{'tool':<16} {'phase':<12} {'seconds':>8} {'MB/s':>8} {'stored':>11}   vmvault is")
for t, p, s, st in rows:
    s = float(s)
    mbps = logical / s / 1e6 if s > 0 and not p.startswith("files") else float("nan")
    if t == "vmvault":
        cmp = ""
    else:
        speed = s / ref[("vmvault", p)] if ref.get(("vmvault", p)) else float("nan")
        cmp = f"{speed:.1f}x faster"
        if st not in ("-", "0") and stored_ref.get(p, "-") != "-":
            cmp += f", stores {int(stored_ref[p]) / int(st):.2f}x the bytes"
    print(f"{t:<16} {p:<12} {s:>8.2f} {mbps:>8.0f} {human(st):>11}   {cmp}")
