#!/usr/bin/env python3
"""Writes the bench-profile section of docs/benchmarks.md (markdown on stdout) from the results
of scripts/bench-profile.sh: for each system, the bench JSON, the pids' roles and the perf samples
of the whole machine (`perf record -a`, read here through `perf script`).

Every sample is one on-CPU moment of one core, idle included (the kernel's idle task, pid 0), so
shares of samples are shares of the machine's two cores, and samples / frequency are CPU seconds.
"""

import argparse
import collections
import json
import re
import subprocess
import sys

FREQUENCY = 997
SAMPLE = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")
RUST_HASH = re.compile(r"::h[0-9a-f]{16}$")

# What a symbol does, by the crate or library it comes from; the first match wins.
LAYERS = [
    # virtio-blk: a write or fsync is a notification to the host (iowrite16), then its interrupt.
    ("kernel: storage (write, fsync, the virtio disk)", re.compile(r"ext4|jbd2|blk|fdatasync|fsync|iomap|xfs|vfs_write|filemap|nvme|virtio|iowrite|vring|virtqueue")),
    ("kernel: network (loopback TCP and its softirqs)", re.compile(r"tcp|skb|sock|net_|ip_|ipt_|nf_|inet|__dev_queue|loopback|sendmsg|recvmsg|softirq")),
    # Waking another thread and switching to it; in a VM, time spent with interrupts off shows up
    # when they are turned back on (the *_unlock_irq* and irqentry symbols).
    ("kernel: wake-ups, context switches, interrupts", re.compile(r"futex|schedule|sched|epoll|switch|wake|ttwu|enqueue|dequeue|finish_task|unlock_irq|irqentry|irq_|ipi|hrtimer|timer")),
]
USER_LAYERS = [
    ("gRPC and HTTP/2 (tonic, h2, hyper, tower)", re.compile(r"^(<)?(tonic|h2|hyper|tower|http|http_body)")),
    ("protobuf (prost)", re.compile(r"^(<)?prost|encode|decode|encoded_len|merge_field")),
    ("async runtime (tokio)", re.compile(r"^(<)?tokio")),
    ("raftkv (core, driver, storage, state machine, generated gRPC glue)", re.compile(r"raftkv")),
    ("memory (malloc, free, memcpy)", re.compile(r"malloc|free|realloc|memcpy|memmove|memset|_int_|cfree|alloc::")),
]


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--machine", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--clients", required=True)
    p.add_argument("--value-size", required=True)
    p.add_argument("--connections", required=True)
    return p.parse_args()


def samples(path):
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "comm,pid,tid,ip,sym,dso"],
        check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        m = SAMPLE.match(line)
        if m:
            comm, pid, _tid, _ip, sym, dso = m.groups()
            yield comm, int(pid), clean(sym), dso


def clean(sym):
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    return RUST_HASH.sub("", sym)


def layer(sym, dso):
    if "kernel" in dso:
        for name, pattern in LAYERS:
            if pattern.search(sym):
                return name
        return "kernel: other"
    if dso.endswith("/etcd") or dso == "etcd":
        # Debian's etcd binary is stripped: its samples have no function names.
        return "etcd's own code (Go; the binary is stripped, no function names)"
    for name, pattern in USER_LAYERS:
        if pattern.search(sym):
            return name
    if "libc" in dso:
        return "libc: other"
    return "other user code"


def roles(path):
    out = {}
    with open(path) as f:
        for line in f:
            pid, role = line.split()
            out[int(pid)] = role
    return out


def report(results, target):
    with open(f"{results}/{target}.json") as f:
        bench = json.load(f)
    role_of = roles(f"{results}/{target}.roles")
    by_role = collections.Counter()
    leader_threads = collections.Counter()
    leader_layers = collections.Counter()
    leader_syms = collections.Counter()
    total = 0
    for comm, pid, sym, dso in samples(f"{results}/{target}.perf"):
        total += 1
        role = "idle" if pid == 0 else role_of.get(pid, "rest of the machine")
        if role == "idle-cluster":
            role = "rest of the machine"
        by_role[role] += 1
        if role.endswith("leader"):
            # tokio names its workers tokio-runtime-w; Go's threads all carry the binary's name.
            leader_threads[comm] += 1
            leader_layers[layer(sym, dso)] += 1
            leader_syms[f"{sym} ({dso.rsplit('/', 1)[-1]})"] += 1
    return bench, by_role, leader_threads, leader_layers, leader_syms, total


def throughput(bench):
    return float(bench["throughput_ops_per_second"])


def p99_ms(bench):
    return float(bench["latency_ms"]["write"]["p99"])


def main():
    a = parse_args()
    systems = {t: report(a.results, t) for t in ("raftkv", "etcd")}
    role_order = ["leader", "follower", "bench-client", "rest of the machine", "idle"]
    # "rest of the machine": the other system's idle members, perf itself, the kernel's threads.
    print("## Where the CPU goes under puts (issue 12, `make bench-profile`)\n")
    print("Where the CPU goes with puts from "
          f"{a.clients} closed-loop clients on {a.connections} connections, {a.value_size} B "
          f"values: `perf record -a` (cpu-clock, {FREQUENCY} Hz per core, idle sampled too) over "
          f"{a.seconds:g} s of each system's run, after a warm-up; the other system idles beside "
          "it. Reproduce with `make bench-profile`.\n")
    print(f"Machine: {a.machine}\n")
    print("| | raftkv | etcd |\n|---|---|---|")
    tput = {t: throughput(s[0]) for t, s in systems.items()}
    print(f"| puts/s (whole run) | {tput['raftkv']:,.0f} | {tput['etcd']:,.0f} |")
    print(f"| p99 | {p99_ms(systems['raftkv'][0]):.1f} ms | {p99_ms(systems['etcd'][0]):.1f} ms |")
    for want in role_order:
        cells = []
        for t, (_, by_role, *_rest, total) in systems.items():
            n = sum(v for k, v in by_role.items() if want in k)
            share = 200.0 * n / total if total else 0.0
            cpu_ms = n / FREQUENCY * 1000.0
            per_k = cpu_ms / (tput[t] * a.seconds) * 1000.0 if tput[t] else float("nan")
            cells.append(f"{share:.0f}% of a core" + ("" if want == "idle"
                         else f", {per_k:.0f} CPU-ms per 1k puts"))
        label = {"follower": "followers (both)"}.get(want, want)
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    cells = []
    for t, (_, by_role, *_rest, total) in systems.items():
        busy = total - by_role.get("idle", 0)
        per_k = busy / FREQUENCY * 1000.0 / (tput[t] * a.seconds) * 1000.0 if tput[t] else 0.0
        cells.append(f"**{200.0 * busy / total if total else 0.0:.0f}% of a core, {per_k:.0f} "
                     "CPU-ms per 1k puts**")
    print(f"| **whole machine, busy** | {cells[0]} | {cells[1]} |")
    print()
    for t, (_, _, threads, layers, syms, _total) in systems.items():
        n = sum(threads.values()) or 1
        print(f"**{t} leader, by thread:** " + ", ".join(
            f"{c} {100.0 * v / n:.0f}%" for c, v in threads.most_common(6)) + ".\n")
        print(f"**{t} leader, by layer** (share of the leader's samples):\n")
        print("| layer | share |\n|---|---|")
        for name, v in layers.most_common():
            print(f"| {name} | {100.0 * v / n:.1f}% |")
        print(f"\n<details><summary>{t} leader: hottest functions, self time</summary>\n")
        print("```")
        for sym, v in syms.most_common(25):
            print(f"{100.0 * v / n:5.1f}%  {sym[:150]}")
        print("```\n</details>\n")


if __name__ == "__main__":
    sys.exit(main())
