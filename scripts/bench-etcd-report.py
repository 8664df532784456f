#!/usr/bin/env python3
"""Turns the `kvctl bench --json` results of scripts/bench-etcd.sh into its markdown section of
docs/benchmarks.md: the side-by-side table with raftkv/etcd ratios, issue 12's goals measured
against the same run, the plots, the machine and the command that reproduces it.

Every figure printed comes from a result file; a missing or failed cell says so instead.
"""

import argparse
import json
import os
import sys

WORKLOAD_NAMES = {
    "put": "put",
    "get-linearizable": "linearizable get",
    "get-lease": "LEASE get (etcd: serializable)",
}


def load(results, name):
    """The JSON report of one run, or None when it is missing, unreadable or an error."""
    try:
        with open(os.path.join(results, name + ".json"), encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    if "error" in report or not report.get("ops"):
        return None
    return report


def latency(report, field):
    return report["latency_ms"]["all"][field]


def fmt_ops(report):
    text = f"{report['throughput_ops_per_second']:,.0f}"
    errors = report["errors"]["total"]
    return text + (f" ({errors} err)" if errors else "")


def fmt_ms(value):
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if b else "–"


def table(args, results):
    lines = [
        "| workload | value | clients | raftkv ops/s | raftkv p50 / p99 ms | etcd ops/s "
        "| etcd p50 / p99 ms | ops/s raftkv/etcd | p99 raftkv/etcd |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in args.sizes.split():
        for workload in args.workloads.split():
            for clients in args.clients.split():
                cell = f"{workload}-{size}-{clients}"
                kv, etcd = load(results, cell + "-raftkv"), load(results, cell + "-etcd")
                row = [WORKLOAD_NAMES.get(workload, workload), f"{size} B", clients]
                for report in (kv, etcd):
                    if report is None:
                        row += ["failed", "–"]
                    else:
                        row += [
                            fmt_ops(report),
                            f"{fmt_ms(latency(report, 'p50'))} / {fmt_ms(latency(report, 'p99'))}",
                        ]
                if kv and etcd:
                    row += [
                        ratio(kv["throughput_ops_per_second"], etcd["throughput_ops_per_second"]),
                        ratio(latency(kv, "p99"), latency(etcd, "p99")),
                    ]
                else:
                    row += ["–", "–"]
                lines.append("| " + " | ".join(row) + " |")
    return lines


def goals(results):
    """Issue 12's goals, for 256-byte values, judged on this run's figures."""
    rows = []

    def pair(cell):
        return load(results, cell + "-raftkv"), load(results, cell + "-etcd")

    kv, etcd = pair("put-256-128")
    if kv and etcd:
        r = kv["throughput_ops_per_second"] / etcd["throughput_ops_per_second"]
        rows.append(("put/s at 128 clients ≥ 2.5× etcd's", f"{r:.2f}×", r >= 2.5))
        p_kv, p_etcd = latency(kv, "p99"), latency(etcd, "p99")
        rows.append(
            ("put p99 at 128 clients ≤ etcd's", f"{fmt_ms(p_kv)} vs {fmt_ms(p_etcd)} ms", p_kv <= p_etcd)
        )
    kv, etcd = pair("put-256-1")
    if kv and etcd:
        r = latency(kv, "p50") / latency(etcd, "p50")
        rows.append(("1-client put p50 ≤ 0.8× etcd's", f"{r:.2f}×", r <= 0.8))
    kv, etcd = pair("get-linearizable-256-128")
    if kv and etcd:
        r = kv["throughput_ops_per_second"] / etcd["throughput_ops_per_second"]
        rows.append(("linearizable get/s at 128 clients ≥ 2× etcd's", f"{r:.2f}×", r >= 2.0))
    kv, _ = pair("get-lease-256-1")
    if kv:
        p50 = latency(kv, "p50")
        rows.append(("1-client LEASE get p50 < 0.3 ms", f"{p50:.3f} ms", p50 < 0.3))
    if not rows:
        return []
    lines = ["| goal (256 B values) | this run | met |", "|---|---|---|"]
    lines += [f"| {goal} | {value} | {'yes' if met else '**no**'} |" for goal, value, met in rows]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("results", "plots", "doc-dir", "machine", "seconds", "keys", "connections",
                 "clients", "sizes", "workloads", "note"):
        parser.add_argument("--" + flag, default="")
    args = parser.parse_args()

    out = ["## raftkv vs etcd (issue 12, `make bench-etcd`)", ""]
    if args.note:
        out += [f"**{args.note}**", ""]
    out += [
        f"Measured {args.machine}",
        "",
        "Method: a 3-node raftkv (release `kvnode`) and a 3-member etcd (Debian's `etcd-server`) "
        "on 127.0.0.1, both fsyncing every log write, running at the same time (idle while the "
        "other is measured). One tool, `kvctl bench` (release, `--features etcd`): closed-loop "
        f"clients, each with one request in flight, sharing at most {args.connections} "
        f"connections; {args.seconds} s per cell; keys drawn uniformly from {args.keys} "
        "preloaded keys. raftkv's client sends to the leader it learns from redirects; etcd's "
        "balances over all three members (which forward writes and linearizable reads to the "
        "leader). LEASE reads on raftkv are compared with etcd's serializable reads, which any "
        "member answers from its own state. Each cell runs raftkv then etcd back to back, so "
        "compare ratios within this run, not absolute figures across runs. p50 / p99 are over "
        "successful requests; errors are counted apart.",
        "",
    ]
    out += table(args, args.results)
    goal_lines = goals(args.results)
    if goal_lines:
        out += ["", "Issue 12's goals on this run:", ""] + goal_lines
    plots = sorted(p for p in os.listdir(args.plots) if p.startswith("etcd-") and p.endswith(".svg")) \
        if os.path.isdir(args.plots) else []
    if plots:
        out += ["", "Latency distributions, raftkv and etcd on the same axes (log–log; x: "
                "percentile, y: ms):", ""]
        rel = os.path.relpath(args.plots, args.doc_dir)
        out += [f"![{p[len('etcd-'):-len('.svg')]}]({rel}/{p})" for p in plots]
    env = [f"BENCH_SECONDS={args.seconds}"]
    if args.clients != "1 8 32 128 512":
        env.append(f"BENCH_CLIENTS='{args.clients}'")
    if args.sizes != "256 4096":
        env.append(f"BENCH_VALUE_SIZES='{args.sizes}'")
    if args.keys != "1000":
        env.append(f"BENCH_KEYS={args.keys}")
    if args.connections != "8":
        env.append(f"BENCH_CONNECTIONS={args.connections}")
    out += ["", f"Reproduce: `{' '.join(env)} make bench-etcd`"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
