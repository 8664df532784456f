#!/usr/bin/env python3
"""The table of an alternating comparison (make bench-tls, make bench-ab): for each round, ops/s
and p50 / p99 of side A and side B from RESULTS/<a>-<round>.json and RESULTS/<b>-<round>.json
(`kvctl bench --json` reports), the B/A ratio per round, and B/A over all rounds. Markdown on
stdout.

Usage: bench-alternate-report.py RESULTS ROUNDS A B "A label" "B label" "ratio label"
"""

import json
import os
import sys


def main():
    results, rounds, a, b, a_label, b_label, ratio_label = sys.argv[1:8]
    rounds = int(rounds)
    print(f"| round | {a_label} ops/s | {a_label} p50 / p99 ms | {b_label} ops/s "
          f"| {b_label} p50 / p99 ms | {ratio_label} |")
    print("|---|---|---|---|---|---|")
    totals = {a: 0.0, b: 0.0}
    for r in range(1, rounds + 1):
        row, got = [str(r)], {}
        for side in (a, b):
            with open(os.path.join(results, f"{side}-{r}.json"), encoding="utf-8") as f:
                rep = json.load(f)
            ops = rep["throughput_ops_per_second"]
            lat = rep["latency_ms"]["all"]
            got[side] = ops
            totals[side] += ops
            row += [f"{ops:,.0f}", f"{lat['p50']:.2f} / {lat['p99']:.2f}"]
        row.append(f"{got[b] / got[a]:.2f}×" if got[a] else "–")
        print("| " + " | ".join(row) + " |")
    if totals[a]:
        print(f"\nOver all rounds, {ratio_label} = {totals[b] / totals[a]:.2f}×.")


if __name__ == "__main__":
    main()
