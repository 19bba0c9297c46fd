"""Bandit inference calibration: A/A coverage and false-positive rate of the lift intervals under Thompson allocation,
and the power cost against the fixed split (``bench.sim.bandit_inference``).

Run: ``python -m bench.bench_bandit_inference [--reps 1000]``; prints the Markdown tables of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np

from bench.sim.bandit_inference import Environment, calibrate

SHARES = (0.5, 0.3, 0.2)
AA = {
    "proportion 0.10": Environment(((0.10,) * 3,)),
    "proportion 0.02": Environment(((0.02,) * 3,)),
    "proportion 0.10, base rate ×2 over the run": Environment(((0.10,) * 3,), drift=2.0),
    "mean (10, sd 3)": Environment(((10.0,) * 3,), kind="mean", sd=3.0),
    "ratio (40 ms/request, sd 10)": Environment(((40.0,) * 3,), kind="ratio", sd=10.0),
    "contextual proportion 0.10": Environment(((0.10,) * 3,) * 3, shares=SHARES),
    "contextual mean": Environment(((10.0,) * 3,) * 3, shares=SHARES, kind="mean", sd=3.0),
    "contextual ratio": Environment(((40.0,) * 3,) * 3, shares=SHARES, kind="ratio", sd=10.0),
}
POWER = {
    "proportion 0.10 → 0.11 (+10 %)": Environment(((0.10, 0.10, 0.11),)),
    "mean 10 → 10.15 (+1.5 %, sd 3)": Environment(((10.0, 10.0, 10.15),), kind="mean", sd=3.0),
    "ratio 40 → 40.4 ms (+1 %)": Environment(((40.0, 40.0, 40.4),), kind="ratio", sd=10.0),
}


def main() -> None:
    """Print the calibration and power tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--power-only", action="store_true")
    args = parser.parse_args()
    seeds = range(args.reps)
    print(f"Machine: {platform.machine()}, nproc {os.cpu_count()}, Python {platform.python_version()}, numpy "
          f"{np.__version__}; load average at start {os.getloadavg()[0]:.2f}. {args.reps} replications, 20 versions "
          "× 1,000 units, 3 arms, Thompson (500 draws) at the default floor (1 %/K).\n")
    se = math.sqrt(0.05 * 0.95 / (2 * args.reps))
    print(f"A/A (2 treatment intervals per replication; binomial SE of a 5 % rate ≈ {se:.4f}):\n")
    print("| scenario | adaptive-weighted coverage | FPR | stratified coverage | FPR | naive coverage | FPR | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, env in ({} if args.power_only else AA).items():
        t0 = time.perf_counter()
        r = calibrate(env, "thompson", seeds=seeds, draws=500)
        cells = " | ".join(f"{r[e].coverage:.3f} | {r[e].rejection:.3f}" for e in ("adaptive_weighted", "stratified",
                                                                               "naive"))
        print(f"| {name} | {cells} | {time.perf_counter() - t0:.0f} |", flush=True)
    print("\nPower (arm 2 vs control, α = 0.05; the fixed split is uniform 1/3 with the pooled z interval):\n")
    print("| scenario | allocation | power | vs fixed | half-width | vs fixed |")
    print("|---|---|---:|---:|---:|---:|")
    for name, env in POWER.items():
        fixed = calibrate(env, "uniform", seeds=seeds, draws=500)["naive"]
        bandit = calibrate(env, "thompson", seeds=seeds, draws=500)["adaptive_weighted"]
        # the control pinned at a third (floor = cap = 1/3), the treatments competing for the rest above 5 % each
        held = calibrate(env, "thompson", seeds=seeds, draws=500, floor=[1 / 3, 0.05, 0.05],
                         cap=[1 / 3, 1.0, 1.0])["adaptive_weighted"]
        p0, w0 = fixed.rejection_by_arm[1], fixed.half_width_by_arm[1]
        for label, c in (("fixed split 1/3 each (pooled z)", fixed), ("Thompson, default floor", bandit),
                         ("Thompson, control held at 1/3", held)):
            p, w = c.rejection_by_arm[1], c.half_width_by_arm[1]
            print(f"| {name} | {label} | {p:.3f} | {p / p0:.2f} | {w:.4g} | {w / w0:.2f} |", flush=True)


if __name__ == "__main__":
    main()
