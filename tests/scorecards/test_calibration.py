"""Seeded calibration simulations: false-positive rate, interval coverage, and power at the MDE.

Each experiment is drawn as sufficient statistics (see conftest.py), so thousands cost milliseconds,
and goes through the same vectorised arithmetic as compare() (checked element-wise below).
Tolerances: with 4,000 experiments the binomial SE of a 5 % rate is 0.0034, so ±0.015 is ≈ 4.4 SE.
"""

from __future__ import annotations

import numpy as np
import pytest

from scorecards import (
    RatioStats,
    SampleStats,
    compare,
    compare_arrays,
    difference_inference,
    relative_inference,
    sample_size_per_arm,
)
from scorecards.ratio import ratio_estimate

N_SIM = 4000
ALPHA = 0.05


def _rates(significant: np.ndarray, covered_abs: np.ndarray, covered_rel: np.ndarray) -> tuple[float, ...]:
    return float(significant.mean()), float(covered_abs.mean()), float(covered_rel.mean())


def _check(kind: str, fpr: float, cov_abs: float, cov_rel: float) -> None:
    print(f"{kind}: FPR={fpr:.4f} abs coverage={cov_abs:.4f} rel coverage={cov_rel:.4f}")
    assert fpr == pytest.approx(0.05, abs=0.015)
    assert cov_abs == pytest.approx(0.95, abs=0.015)
    assert cov_rel == pytest.approx(0.95, abs=0.015)


def test_mean_welch_calibration(sim) -> None:
    # unequal n and variances: the pooled-variance t test would be miscalibrated here
    aa = compare_arrays(*sim.normal(800, 10.0, 1.0, N_SIM), *sim.normal(1200, 10.0, 2.0, N_SIM), kind="mean")
    c = sim.normal(800, 10.0, 1.0, N_SIM)
    t = sim.normal(1200, 10.3, 2.0, N_SIM)
    ab = compare_arrays(*c, *t, kind="mean")
    mc, mt = c[1] / c[0], t[1] / t[0]
    vc = (c[2] - c[1] ** 2 / c[0]) / (c[0] - 1) / c[0]
    vt = (t[2] - t[1] ** 2 / t[0]) / (t[0] - 1) / t[0]
    rel = relative_inference(mc, vc, mt, vt)
    fpr, cov_abs, cov_rel = _rates(
        aa.p_value < ALPHA,
        (ab.ci_low <= 0.3) & (0.3 <= ab.ci_high),
        (rel.ci_low <= 0.03) & (0.03 <= rel.ci_high),
    )
    _check("mean", fpr, cov_abs, cov_rel)


def test_proportion_z_calibration(sim) -> None:
    aa = compare_arrays(*sim.binary(2000, 0.1, N_SIM), *sim.binary(2000, 0.1, N_SIM), kind="proportion")
    c, t = sim.binary(2000, 0.1, N_SIM), sim.binary(2500, 0.12, N_SIM)
    ab = compare_arrays(*c, *t, kind="proportion")
    pc, pt = c[1] / c[0], t[1] / t[0]
    rel = relative_inference(pc, pc * (1 - pc) / (c[0] - 1), pt, pt * (1 - pt) / (t[0] - 1))
    fpr, cov_abs, cov_rel = _rates(
        aa.p_value < ALPHA,
        (ab.ci_low <= 0.02) & (0.02 <= ab.ci_high),
        (rel.ci_low <= 0.2) & (0.2 <= rel.ci_high),
    )
    _check("proportion", fpr, cov_abs, cov_rel)


def test_ratio_delta_method_calibration(sim) -> None:
    # per unit: x = requests (mean 5), y = summed latency (mean 2), correlated 0.6
    cov = np.array([[0.64, 0.6 * 0.8 * 1.0], [0.6 * 0.8 * 1.0, 1.0]])

    def run(mean_t: tuple[float, float]) -> tuple[object, object]:
        c = sim.bivariate(1500, (2.0, 5.0), cov, N_SIM)
        t = sim.bivariate(1500, mean_t, cov, N_SIM)
        rc, vc = ratio_estimate(*c)
        rt, vt = ratio_estimate(*t)
        inf = np.full_like(rc, np.inf)
        return difference_inference(rc, vc, inf, rt, vt, inf), relative_inference(rc, vc, rt, vt)

    aa, _ = run((2.0, 5.0))
    ab, rel = run((2.2, 5.0))  # ratio 0.40 → 0.44
    fpr, cov_abs, cov_rel = _rates(
        aa.p_value < ALPHA,
        (ab.ci_low <= 0.04) & (0.04 <= ab.ci_high),
        (rel.ci_low <= 0.1) & (0.1 <= rel.ci_high),
    )
    _check("ratio", fpr, cov_abs, cov_rel)


def test_vectorised_path_equals_compare(sim) -> None:
    """The simulations above measure compare() itself, not a look-alike."""
    c, t = sim.normal(50, 1.0, 1.0, 30), sim.normal(70, 1.2, 2.0, 30)
    arr = compare_arrays(*c, *t, kind="mean")
    for i in range(30):
        r = compare(SampleStats(int(c[0][i]), c[1][i], c[2][i]), SampleStats(int(t[0][i]), t[1][i], t[2][i]))
        assert r.p_value == pytest.approx(arr.p_value[i], rel=1e-12)
        assert r.abs_ci == pytest.approx((arr.ci_low[i], arr.ci_high[i]), rel=1e-12)
    cov = np.array([[1.0, 0.5], [0.5, 1.0]])
    rc, rt = sim.bivariate(100, (2.0, 5.0), cov, 5), sim.bivariate(100, (2.0, 5.0), cov, 5)
    r0, v0 = ratio_estimate(*rc)
    r1, v1 = ratio_estimate(*rt)
    inf = np.full(5, np.inf)
    arr = difference_inference(r0, v0, inf, r1, v1, inf)
    for i in range(5):
        got = compare(RatioStats(*(f[i] for f in rc)), RatioStats(*(f[i] for f in rt)), kind="ratio")
        assert got.p_value == pytest.approx(arr.p_value[i], rel=1e-12)


@pytest.mark.parametrize(
    ("kind", "baseline", "mde", "sd"),
    [("proportion", 0.10, 0.05, None), ("proportion", 0.30, -0.04, None), ("mean", 10.0, 0.03, 4.0)],
)
def test_power_at_the_mde_matches_the_design(sim, kind: str, baseline: float, mde: float, sd: float | None) -> None:
    n = sample_size_per_arm(kind, baseline, mde, alpha=0.05, power=0.8, sd=sd)
    if kind == "proportion":
        res = compare_arrays(*sim.binary(n, baseline, N_SIM), *sim.binary(n, baseline * (1 + mde), N_SIM),
                             kind="proportion")
    else:
        assert sd is not None
        res = compare_arrays(*sim.normal(n, baseline, sd, N_SIM), *sim.normal(n, baseline * (1 + mde), sd, N_SIM),
                             kind="mean")
    detected = (res.p_value < 0.05) & (np.sign(res.diff) == np.sign(mde))
    power = float(detected.mean())
    print(f"power {kind} baseline={baseline} mde={mde}: n={n} detected={power:.4f}")
    assert power == pytest.approx(0.8, abs=0.04)
