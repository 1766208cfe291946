#!/usr/bin/env python3
"""Time moocore (and pygmo, if installed) on the hypervolume fronts of the Rust criterion bench.

The fronts are generated with the same SplitMix64 generator as `crates/panacea-eval/src/bench_fronts.rs`
(`sphere_front`), bit for bit, so both sides time identical points. The script also writes the
values it computed to `benches/data/hv_reference.json`; the Rust bench checks its own values
against them (relative 1e-12) before timing.

Usage (single thread, as the Rust side is timed):
    pip install moocore pygmo
    OMP_NUM_THREADS=1 python3 scripts/moocore_bench.py [--out benches/data/hv_reference.json]
    OMP_NUM_THREADS=1 python3 scripts/moocore_bench.py --sizes 4x1000,5x1000 --out none

`--sizes` times a subset (d x n, comma-separated) and `--out none` writes nothing. On a shared
machine, interleave the sides front by front instead of timing them one after the other:
    cargo build --release -p panacea-eval --example hv_timing
    OMP_NUM_THREADS=1 python3 scripts/moocore_bench.py --rounds 3 \
        --rust now=target/release/examples/hv_timing [--rust before=/path/to/older/hv_timing]

Prints a Markdown table of median wall times per call (Python call overhead included).
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

MASK = (1 << 64) - 1
SIZES = [(2, 1000), (2, 10000), (3, 1000), (3, 10000), (4, 1000), (5, 1000),
         (6, 100), (6, 300), (7, 100), (7, 300), (8, 100), (8, 300)]
# moocore's FPL takes ~105 s at d = 8, n = 300 (metrics.md §3): skip it there.
SKIP_MOOCORE = {(8, 300)}


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def unit(self):
        return ((self.next_u64() >> 12) * 2 + 1) / 9007199254740992.0


def sphere_front(n, d):
    g = SplitMix64(d * 100000 + n)
    pts = []
    for _ in range(n):
        v = [g.unit() for _ in range(d)]
        ss = 0.0
        for x in v:
            ss += x * x
        norm = math.sqrt(ss)
        pts.append([x / norm for x in v])
    return pts


def median_time(fn, budget_s=2.0, max_reps=200):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def fmt(t):
    if t is None:
        return "–"
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def time_peers(d, n, moocore, pygmo, np):
    """Times moocore and pygmo on one front; returns (moocore s, pygmo s, reference entry)."""
    pts = np.array(sphere_front(n, d))
    ref = np.full(d, 1.1)
    entry = {"d": d, "n": n, "ref": 1.1}
    t_moo = t_pg = None
    if (d, n) not in SKIP_MOOCORE:
        entry["hv"] = float(moocore.hypervolume(pts, ref=ref))
        entry["source"] = f"moocore {moocore.__version__}"
        t_moo, _ = median_time(lambda: moocore.hypervolume(pts, ref=ref))
    if pygmo is not None:
        hv_pg = pygmo.hypervolume(pts).compute(ref)
        entry["hv_pygmo"] = float(hv_pg)
        if "hv" not in entry:
            entry["hv"] = float(hv_pg)
            entry["source"] = f"pygmo {pygmo.__version__}"
        t_pg, _ = median_time(lambda: pygmo.hypervolume(pts).compute(ref))
    entry["moocore_s"] = t_moo
    entry["pygmo_s"] = t_pg
    return t_moo, t_pg, entry


def time_rust(binary, d, n):
    """Median seconds per call that `hv_timing d n` reports."""
    out = subprocess.run([binary, str(d), str(n)], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"median ([0-9.]+) µs", out).group(1)) * 1e-6


def interleaved(sizes, binaries, rounds, moocore, pygmo, np):
    """Per front: each Rust binary, then the peers; `rounds` times over. Prints medians over the
    rounds, the range of the first binary, and its per-round ratio to the goal peer (moocore for
    d ≤ 5, pygmo's WFG above, metrics.md §3)."""
    times = {(d, n): {label: [] for label, _ in binaries} | {"moocore": [], "pygmo": [], "load": []}
             for d, n in sizes}
    for _ in range(rounds):
        for d, n in sizes:
            t = times[(d, n)]
            t["load"].append(os.getloadavg()[0])
            for label, binary in binaries:
                t[label].append(time_rust(binary, d, n))
            t_moo, t_pg, _ = time_peers(d, n, moocore, pygmo, np)
            t["moocore"].append(t_moo)
            t["pygmo"].append(t_pg)
    main_label = binaries[0][0]
    labels = [label for label, _ in binaries]
    print("| front | " + " | ".join(labels) + f" | moocore | pygmo | {main_label} / goal peer (per round) | load |")
    print("|---|" + "---|" * (len(labels) + 4))
    for (d, n), t in times.items():
        med = lambda xs: statistics.median(xs) if xs and None not in xs else None
        peer = "moocore" if d <= 5 else "pygmo"
        cells = [fmt(med(t[label])) for label in labels]
        cells[0] += f" ({fmt(min(t[main_label]))}–{fmt(max(t[main_label]))})"
        ratio = "–"
        if med(t[peer]) is not None:
            per_round = [a / b for a, b in zip(t[main_label], t[peer])]
            ratio = f"{med(t[main_label]) / med(t[peer]):.2f}× {peer} ({min(per_round):.2f}–{max(per_round):.2f})"
        print(f"| d{d} n{n} | " + " | ".join(cells)
              + f" | {fmt(med(t['moocore']))} | {fmt(med(t['pygmo']))} | {ratio} | {min(t['load']):.1f}–{max(t['load']):.1f} |",
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "benches", "data", "hv_reference.json"))
    ap.add_argument("--sizes", default=None, help="comma-separated d x n, e.g. 4x1000,5x1000 (default: all)")
    ap.add_argument("--rust", action="append", default=[], metavar="LABEL=BINARY",
                    help="an hv_timing binary to interleave with the peers, front by front (repeatable; "
                         "the first one is compared with the goal peer); writes no reference values")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all fronts with --rust (default 3)")
    args = ap.parse_args()
    sizes = SIZES
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    import numpy as np
    import moocore
    try:
        import pygmo
    except ImportError:
        pygmo = None
    print(f"moocore {moocore.__version__}" + (f", pygmo {pygmo.__version__}" if pygmo else ", pygmo not installed"),
          f", numpy {np.__version__}, Python {sys.version.split()[0]}")
    print()
    if args.rust:
        binaries = [tuple(b.split("=", 1)) if "=" in b else (b, b) for b in args.rust]
        interleaved(sizes, binaries, args.rounds, moocore, pygmo, np)
        return
    results = {}
    print("| front | moocore | pygmo |")
    print("|---|---|---|")
    for d, n in sizes:
        t_moo, t_pg, entry = time_peers(d, n, moocore, pygmo, np)
        results[f"sphere_d{d}_n{n}"] = entry
        print(f"| sphere_d{d}_n{n} | {fmt(t_moo)} | {fmt(t_pg)} |", flush=True)
    if args.out == "none":
        return
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
