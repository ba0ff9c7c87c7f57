#!/usr/bin/env python3
"""Write 1 GiB of log-like text (seeded, so every run writes the same bytes) to the file named
on the command line: the compressible, dedup-poor part of the benchmarks' data disks."""
import random
import sys

random.seed(7)
words = "GET POST PUT /api/v1/orders /static/app.js 200 201 304 404 500 user session cache miss hit db query slow ok".split()
with open(sys.argv[1], "w") as f:
    n = 0
    while n < 1 << 30:
        line = f"2026-11-{random.randint(1,28):02d}T{random.randint(0,23):02d}:{random.randint(0,59):02d}:{random.randint(0,59):02d}Z " \
               + " ".join(random.choice(words) for _ in range(8)) + f" id={random.getrandbits(32):08x}\n"
        f.write(line)
        n += len(line)
    f.truncate(1 << 30)
