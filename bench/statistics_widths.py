"""Interval widths and error rates of the three designs (fixed horizon, mSPRT, group-sequential) and the coverage
of Fieller's relative interval against the delta method's — the larger runs behind tests/scorecards/test_gst.py and
tests/scorecards/test_fieller.py (issue 16, items 1 and 2).

    python -m bench.statistics_widths [--reps 200000] [--seed 16]

Prints markdown tables (appended by hand to bench/RESULTS.md).  Sequential designs are simulated on the canonical
joint distribution of the z statistics — Z(t) = S(t)/√t with S a Brownian motion in the information fraction t,
drift θ = z_{1−α/2} + z_{1−β} at t = 1 for the fixed design's power (80 %) — which is what every look's statistic
converges to whatever the metric; Fieller's coverage uses the exact sampling distribution of the sufficient
statistics (normal means with χ² variances; binomial proportions).
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
from scipy import stats

from scorecards.fieller import fieller_relative_interval
from scorecards.gst import gst_bounds
from scorecards.inference import difference_inference, relative_inference
from scorecards.sequential import msprt, optimal_mixture_ratio

ALPHA, POWER = 0.05, 0.8
EQUAL5 = [0.2, 0.4, 0.6, 0.8, 1.0]


def _paths(rng: np.random.Generator, t: np.ndarray, drift: float, reps: int) -> np.ndarray:
    steps = np.diff(np.concatenate([[0.0], t]))
    s = np.cumsum(rng.normal(drift * steps, np.sqrt(steps), (reps, t.size)), axis=1)
    return np.asarray(s / np.sqrt(t))


def _msprt_reject(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """mSPRT tuned to the horizon (t = 1): τ² = u*·V(1), V(t) = V(1)/t, so τ²/V(t) = u*·t."""
    u = optimal_mixture_ratio(ALPHA) * t
    p = msprt(z, 1.0, u, ALPHA).p_value  # scale-free: Δ̂ = z with V = 1 and τ² = u
    return np.asarray(p < ALPHA)


def widths() -> list[str]:
    z = stats.norm.isf(ALPHA / 2)
    u = optimal_mixture_ratio(ALPHA)
    seq = msprt(0.0, 1.0, u, ALPHA)
    c_seq = float(seq.ci_high)
    lines = ["| design | critical value at the planned horizon | width vs fixed |", "|---|---:|---:|",
             f"| fixed horizon (z) | {z:.4f} | 1.000 |",
             f"| mSPRT (always valid, tuned to the horizon) | {c_seq:.4f} | {c_seq / z:.3f} |"]
    for k in (2, 3, 5, 10):
        t = [j / k for j in range(1, k + 1)]
        for spending in ("obrien_fleming", "pocock"):
            c = gst_bounds(t, ALPHA, spending)  # type: ignore[arg-type]
            lines.append(f"| GST {spending}, {k} equal looks (final look) | {c[-1]:.4f} | {c[-1] / z:.3f} |")
    return lines


def error_rates(rng: np.random.Generator, reps: int) -> list[str]:
    theta = stats.norm.isf(ALPHA / 2) + stats.norm.isf(1 - POWER)
    t = np.array(EQUAL5)
    lines = ["| design (5 looks) | type I error | power (θ for 80 % fixed) | E[t at stop] under θ |",
             "|---|---:|---:|---:|"]
    null, alt = _paths(rng, t, 0.0, reps), _paths(rng, t, theta, reps)
    z = stats.norm.isf(ALPHA / 2)
    fixed_null, fixed_alt = np.abs(null[:, -1]) >= z, np.abs(alt[:, -1]) >= z
    lines.append(f"| fixed horizon (final look only) | {fixed_null.mean():.4f} | {fixed_alt.mean():.4f} | 1.000 |")

    def stop_time(reject: np.ndarray) -> float:
        first = np.where(reject.any(axis=1), reject.argmax(axis=1), t.size - 1)
        return float(t[first].mean())

    for spending in ("obrien_fleming", "pocock"):
        c = np.array(gst_bounds(EQUAL5, ALPHA, spending))  # type: ignore[arg-type]
        r0, r1 = np.abs(null) >= c, np.abs(alt) >= c
        lines.append(f"| GST {spending} | {r0.any(axis=1).mean():.4f} | {r1.any(axis=1).mean():.4f} | "
                     f"{stop_time(r1):.3f} |")
    m0, m1 = _msprt_reject(null, t), _msprt_reject(alt, t)
    lines.append(f"| mSPRT read at the 5 looks | {m0.any(axis=1).mean():.4f} | {m1.any(axis=1).mean():.4f} | "
                 f"{stop_time(m1):.3f} |")
    # unplanned looks: 20 random schedules of 5 looks (some ending short of the horizon), boundaries recomputed
    hits, total = 0, 0
    for _ in range(20):
        sched = np.unique(np.round(np.sort(rng.uniform(0.05, 1.0, 5)), 3))
        c = np.array(gst_bounds(list(sched), ALPHA))
        hits += int((np.abs(_paths(rng, sched, 0.0, reps // 20)) >= c).any(axis=1).sum())
        total += reps // 20
    lines.append(f"| GST obrien_fleming, 5 unplanned looks (20 random schedules) | {hits / total:.4f} | — | — |")
    mc = math.sqrt(0.05 * 0.95 / reps)
    lines.append(f"\nMonte Carlo s.e. of a 0.05 rate: {mc:.4f} ({reps:,} paths per row).")
    return lines


def _coverage(rng: np.random.Generator, kind: str, n: int, reps: int) -> tuple[float, float, float, float]:
    if kind == "mean":
        mu_c, mu_t, sd = 1.0, 1.1, 2.0
        mc, mt = rng.normal(mu_c, sd / math.sqrt(n), reps), rng.normal(mu_t, sd / math.sqrt(n), reps)
        vc = sd**2 * rng.chisquare(n - 1, reps) / (n - 1) / n
        vt = sd**2 * rng.chisquare(n - 1, reps) / (n - 1) / n
        dof = np.full(reps, n - 1.0)
    else:
        mu_c, mu_t = 0.10, 0.12
        mc, mt = rng.binomial(n, mu_c, reps) / n, rng.binomial(n, mu_t, reps) / n
        vc, vt = mc * (1 - mc) / (n - 1), mt * (1 - mt) / (n - 1)
        dof = np.full(reps, np.inf)
    d = difference_inference(mc, vc, dof, mt, vt, dof, ALPHA)
    finite = np.isfinite(d.df)
    q = np.where(finite, stats.t.isf(ALPHA / 2, np.where(finite, d.df, 1.0)), stats.norm.isf(ALPHA / 2))
    f = fieller_relative_interval(mc, vc, mt, vt, q)
    r = relative_inference(mc, vc, mt, vt, ALPHA)
    truth = mu_t / mu_c - 1
    significant = d.p_value < ALPHA
    delta_disagrees = float(np.mean(significant == ((r.ci_low <= 0) & (0 <= r.ci_high))))
    return (float(np.mean((f.ci_low <= truth) & (truth <= f.ci_high))),
            float(np.mean((r.ci_low <= truth) & (truth <= r.ci_high))), float(np.mean(~f.bounded)), delta_disagrees)


def coverage(rng: np.random.Generator, reps: int) -> list[str]:
    lines = ["| metric | n per arm | Fieller coverage | delta coverage | Fieller unbounded "
             "| delta CI contradicts the test |", "|---|---:|---:|---:|---:|---:|"]
    for kind, label in (("mean", "mean 1 → 1.1, sd 2 (normal)"), ("proportion", "conversion 10 % → 12 %")):
        for n in (30, 50, 100, 200, 500, 1000, 5000):
            fc, dc, unb, dis = _coverage(rng, kind, n, reps)
            lines.append(f"| {label} | {n:,} | {fc:.4f} | {dc:.4f} | {unb:.4f} | {dis:.4f} |")
    se = math.sqrt(0.95 * 0.05 / reps)
    lines.append(f"\nMonte Carlo s.e. of a 0.95 coverage: {se:.4f} ({reps:,} replications per row). Fieller's "
                 "interval contradicts the test in 0 replications by construction.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(f"Machine: `{platform.machine()}`, Python {platform.python_version()}, numpy {np.__version__}; "
          f"seed {args.seed}.\n")
    print("**Interval width at the planned horizon** (two-sided α = 0.05; the width is critical value × se):\n")
    print("\n".join(widths()))
    print("\n**Error rates with 5 equally spaced looks** (canonical Brownian-motion simulation):\n")
    print("\n".join(error_rates(rng, args.reps)))
    print("\n**Coverage of the relative lift μt/μc − 1** (nominal 0.95; an unbounded Fieller set covers):\n")
    print("\n".join(coverage(rng, args.reps)))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
