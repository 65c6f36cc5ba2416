#!/usr/bin/env python3
"""Sum an `ncu --csv --metrics gpu__time_duration.sum` log by kernel name.

Usage: tools/ncu_summary.py LOG [LOG ...]
Prints, per log, each kernel's launch count and total microseconds (largest first) and the sum.
"""
import csv
import io
import sys
from collections import defaultdict


def summarize(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        print(f"{path}: no ncu CSV table found")
        return
    total = defaultdict(float)
    count = defaultdict(int)
    for row in csv.DictReader(io.StringIO(text[start:])):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = row["Kernel Name"].split("(")[0][:90]
        value = float(row["Metric Value"].replace(",", ""))
        unit = row.get("Metric Unit", "ns")
        scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}.get(unit, 1e-3)
        total[name] += value * scale
        count[name] += 1
    print(f"== {path}: {sum(count.values())} kernels, {sum(total.values()):.1f} us")
    for name, us in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"{us:10.1f} us  {count[name]:4d}x  {name}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for p in sys.argv[1:]:
        summarize(p)
