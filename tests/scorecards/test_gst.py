"""Group-sequential designs: boundaries against independent references, repeated p-values, seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from scorecards import SampleStats, compare
from scorecards.gst import alpha_spent, compare_gst, current_look, gst_bounds, repeated_p_value

EQUAL5 = [0.2, 0.4, 0.6, 0.8, 1.0]


def test_published_gsdesign_boundaries() -> None:
    """gsDesign::gsDesign(k = 5, test.type = 2, alpha = 0.025, sfu = sfLDOF / sfLDPocock) — printed to 4 decimals
    (e.g. Jennison & Turnbull 2000 Table 7.6 / the gsDesign manual); the brief's 4.877, 3.357, 2.680, 2.290, 2.031."""
    assert gst_bounds(EQUAL5, 0.05, "obrien_fleming") == pytest.approx([4.8769, 3.3570, 2.6803, 2.2898, 2.0310],
                                                                       abs=5e-5)
    assert gst_bounds(EQUAL5, 0.05, "pocock") == pytest.approx([2.4380, 2.4268, 2.4102, 2.3966, 2.3860], abs=5e-5)
    assert gst_bounds([0.5, 1.0], 0.05, "obrien_fleming") == pytest.approx([2.9626, 1.9686], abs=5e-5)
    assert gst_bounds([1.0], 0.05) == pytest.approx([stats.norm.isf(0.025)], rel=1e-12)


def _k2_reference(t1: float, t2: float, alpha: float, spending: str) -> float:
    """Independent: c_2 solving ∫_{−c1}^{c1} φ(u) Φ̄((c2 − ρu)/√(1 − ρ²)) du = α_s(t2) − α_s(t1), adaptive quadrature."""
    a1, a2 = alpha_spent(t1, alpha, spending) / 2, alpha_spent(t2, alpha, spending) / 2  # type: ignore[arg-type]
    c1 = stats.norm.isf(a1)
    rho = math.sqrt(t1 / t2)

    def crossing(c2: float) -> float:
        return integrate.quad(lambda u: stats.norm.pdf(u) * stats.norm.sf((c2 - rho * u) / math.sqrt(1 - rho**2)),
                              -c1, c1, epsabs=1e-15, epsrel=1e-13, limit=200)[0]

    return float(optimize.brentq(lambda c: crossing(c) - (a2 - a1), 0.0, 12.0, xtol=1e-13))


@pytest.mark.parametrize(("t1", "t2", "spending"), [(0.5, 1.0, "obrien_fleming"), (0.3, 0.75, "obrien_fleming"),
                                                     (0.5, 1.0, "pocock"), (0.1, 0.9, "pocock")])
def test_two_looks_match_adaptive_quadrature_to_1e6(t1: float, t2: float, spending: str) -> None:
    ours = gst_bounds([t1, t2], 0.05, spending)  # type: ignore[arg-type]
    assert ours[0] == pytest.approx(stats.norm.isf(alpha_spent(t1, 0.05, spending) / 2),  # type: ignore[arg-type]
                                    abs=1e-9)
    assert ours[1] == pytest.approx(_k2_reference(t1, t2, 0.05, spending), abs=1e-6)


def test_three_looks_match_nested_quadrature_to_1e6() -> None:
    """Independent 2-D integral for the third look: P(|Z1| < c1, |Z2| < c2, Z3 ≥ c3), Brownian increments."""
    t = [0.3, 0.6, 1.0]
    c1, c2, c3 = gst_bounds(t, 0.05, "obrien_fleming")
    target = (alpha_spent(1.0) - alpha_spent(0.6)) / 2

    def crossing(c: float) -> float:
        def inner(z2: float, z1: float) -> float:
            # Z2 | Z1 and Z3 | Z2 are Gaussian with the Brownian-motion covariances
            d2, d3 = t[1] - t[0], t[2] - t[1]
            p_z2 = stats.norm.pdf((z2 * math.sqrt(t[1]) - z1 * math.sqrt(t[0])) / math.sqrt(d2)) * math.sqrt(t[1] / d2)
            return float(p_z2 * stats.norm.sf((c * math.sqrt(t[2]) - z2 * math.sqrt(t[1])) / math.sqrt(d3)))

        return integrate.dblquad(lambda z2, z1: stats.norm.pdf(z1) * inner(z2, z1), -c1, c1, -c2, c2,
                                 epsabs=1e-12, epsrel=1e-10)[0]

    at = crossing(c3)
    # the boundary itself: one Newton step from ours (the crossing probability's slope there is −0.0075)
    slope = (crossing(c3 + 1e-3) - at) / 1e-3
    assert abs((at - target) / slope) < 1e-6


def test_unplanned_and_skipped_looks_spend_exactly_alpha() -> None:
    """Multivariate-normal (Genz) check: the probability of ever crossing equals α for irregular schedules."""
    for fractions in ([0.13, 0.5, 0.52, 1.0], [0.35, 1.0], [0.2, 0.4, 0.8, 1.0]):
        c = np.array(gst_bounds(fractions))
        t = np.array(fractions)
        cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
        never = stats.multivariate_normal.cdf(c, np.zeros(t.size), cov, lower_limit=-c, abseps=1e-9, releps=1e-9,
                                              maxpts=2_000_000, rng=np.random.default_rng(0))
        assert 1 - never == pytest.approx(0.05, abs=2e-6)


def test_looks_after_the_final_analysis_get_nothing_and_bad_input_is_refused() -> None:
    assert gst_bounds([0.5, 1.0, 1.3])[2] == math.inf
    assert gst_bounds([0.5, 1.2]) == pytest.approx(gst_bounds([0.5, 1.0]), rel=1e-12)
    with pytest.raises(ValueError, match="increasing"):
        gst_bounds([0.5, 0.4])
    with pytest.raises(ValueError, match="> 0"):
        gst_bounds([0.0, 1.0])
    with pytest.raises(ValueError, match="spending"):
        gst_bounds([1.0], spending="haybittle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        gst_bounds([1.0], alpha=1.5)


@pytest.mark.parametrize("fractions", [EQUAL5[:2], EQUAL5, [0.33, 0.71]])
def test_repeated_p_value_inverts_the_boundary(fractions: list[float]) -> None:
    for z in (0.5, 2.2, 3.1, 4.5):
        p = repeated_p_value(z, fractions)
        if p < 1:  # p = 1: even α → 1 does not reject (|z| below every boundary)
            assert gst_bounds(fractions, p)[-1] == pytest.approx(z, abs=1e-7)
        for alpha in (0.01, 0.05, 0.1):
            assert (p < alpha) == (z > gst_bounds(fractions, alpha)[-1])
    assert repeated_p_value(2.2, [1.0]) == pytest.approx(2 * stats.norm.sf(2.2), rel=1e-8)


def test_compare_gst_reads_the_boundary_and_agrees_with_its_intervals() -> None:
    rng = np.random.default_rng(3)
    yc, yt = rng.normal(10, 3, 800), rng.normal(10.45, 3, 800)
    c, t = SampleStats.from_values(yc), SampleStats.from_values(yt)
    fixed = compare(c, t, "mean")
    r = compare_gst(c, t, "mean", information_fractions=[0.2, 0.4])
    bound = gst_bounds([0.2, 0.4])[-1]
    assert r.test == "gst"
    assert r.critical_value == pytest.approx(bound, rel=1e-12)
    half = bound * fixed.std_error
    assert r.abs_ci == pytest.approx((fixed.abs_lift - half, fixed.abs_lift + half), rel=1e-12)
    assert r.statistic == pytest.approx(fixed.abs_lift / fixed.std_error, rel=1e-12)
    assert r.significant == (abs(r.statistic) > bound) == (r.p_value < 0.05)
    assert r.significant == (not r.rel_ci[0] <= 0 <= r.rel_ci[1])
    assert fixed.significant  # significant at a fixed horizon, …
    assert not r.significant  # … not at the second of five looks: early boundaries are strict
    final = compare_gst(c, t, "mean", information_fractions=EQUAL5)
    assert final.significant


def test_current_look_counts_planned_looks_and_ends_at_the_final_one() -> None:
    before = current_look(0.1, 5, 0.05, "obrien_fleming")
    assert before.look == 0
    assert before.alpha_spent == 0.0
    second = current_look(0.47, 5, 0.05, "obrien_fleming")
    assert second.look == 2
    assert second.fractions == pytest.approx((0.2, 0.47))
    assert second.boundary == pytest.approx(gst_bounds([0.2, 0.47])[-1], rel=1e-12)
    assert second.alpha_spent == pytest.approx(alpha_spent(0.47), rel=1e-12)
    last = current_look(1.3, 5, 0.05, "obrien_fleming")
    assert last.final
    assert last.look == 5
    assert last.alpha_spent == 0.05
    by_date = current_look(0.35, 4, 0.05, "pocock", looks_reached=3)  # three planned dates passed
    assert by_date.look == 3
    assert by_date.fractions == pytest.approx((0.35 / 3, 0.7 / 3, 0.35))


# --- seeded simulations on the canonical joint distribution of (Z_1, …, Z_K): Brownian motion in information ----

REPS = 40_000  # Monte Carlo s.e. of a 0.05 rate: 0.0011
MC = 3 * math.sqrt(0.05 * 0.95 / REPS)


def _z_paths(rng: np.random.Generator, fractions: np.ndarray, drift: float, reps: int) -> np.ndarray:
    """Z_k = S(t_k)/√t_k with S a Brownian motion with drift ``drift`` per unit information (drift θ = E Z at t = 1)."""
    steps = np.diff(np.concatenate([[0.0], fractions]))
    s = np.cumsum(rng.normal(drift * steps, np.sqrt(steps), (reps, fractions.size)), axis=1)
    return np.asarray(s / np.sqrt(fractions))


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_five_planned_looks_keep_the_false_positive_rate(spending: str) -> None:
    rng = np.random.default_rng(161)
    t = np.array(EQUAL5)
    c = np.array(gst_bounds(EQUAL5, 0.05, spending))  # type: ignore[arg-type]
    fpr = float(np.mean((np.abs(_z_paths(rng, t, 0.0, REPS)) >= c).any(axis=1)))
    assert fpr <= 0.05 + MC
    assert fpr >= 0.05 - MC  # and it spends what it may (not conservative)


def test_five_unplanned_looks_keep_the_false_positive_rate() -> None:
    """Irregular fractions, different per batch (boundaries recomputed on the observed fractions), one look skipped."""
    rng = np.random.default_rng(162)
    hits = 0
    batches = 8
    for _ in range(batches):
        t = np.sort(rng.uniform(0.05, 0.95, 5))
        t[-1] = 1.0 if rng.uniform() < 0.5 else t[-1]  # half the schedules end before the planned information
        t = np.unique(np.round(t, 3))
        c = np.array(gst_bounds(list(t)))
        hits += int((np.abs(_z_paths(rng, t, 0.0, REPS // batches)) >= c).any(axis=1).sum())
    assert hits / REPS <= 0.05 + MC


def test_power_and_final_width_against_the_fixed_design() -> None:
    """Same maximum n as the fixed design powered at 80 %: θ = z_0.975 + z_0.8 at t = 1."""
    rng = np.random.default_rng(163)
    theta = stats.norm.isf(0.025) + stats.norm.isf(0.2)
    t = np.array(EQUAL5)
    z = _z_paths(rng, t, theta, REPS)
    fixed_power = float(np.mean(np.abs(z[:, -1]) >= stats.norm.isf(0.025)))
    for spending, width_max in (("obrien_fleming", 1.05), ("pocock", 1.25)):
        c = np.array(gst_bounds(EQUAL5, 0.05, spending))  # type: ignore[arg-type]
        power = float(np.mean((np.abs(z) >= c).any(axis=1)))
        ratio = c[-1] / stats.norm.isf(0.025)  # final-look interval width vs the fixed-horizon one
        assert ratio <= width_max
        if spending == "obrien_fleming":
            assert abs(power - fixed_power) <= 0.03, (power, fixed_power)


# --- the scorecard with design.sequential = "gst" (hand-built sums, no database) --------------------------------------


def test_the_scorecard_reads_the_current_look() -> None:
    from tests.scorecards.test_scorecard import _build, _plan

    card = _build(_plan(sequential="gst", looks=5, spending="obrien_fleming", mde=0.5))
    g = card.gst
    assert g is not None
    planned = card.planned_n_per_variant
    assert g.information_fraction == pytest.approx(2000 / planned, rel=1e-12)
    assert g.look == min(5, math.floor(5 * 2000 / planned + 1e-12))
    assert g.look >= 1
    (v2,) = card.metrics[0].variants
    assert v2.comparison.test == "gst"
    assert v2.comparison.critical_value == pytest.approx(gst_bounds(list(g.fractions))[-1], rel=1e-12)
    assert g.boundary == pytest.approx(v2.comparison.critical_value, rel=1e-12)
    assert g.alpha_spent == pytest.approx(alpha_spent(g.fractions[-1]), rel=1e-12)
    assert any(r.startswith(f"group-sequential look {g.look} of 5") for r in card.decision.reasons)
    # 200 vs 280 conversions of 2000: z ≈ 4.2, beyond every O'Brien–Fleming boundary from look 1 on
    assert card.decision.decision == "ship"


def test_before_the_first_look_nothing_is_read_and_without_an_mde_it_is_the_final_look() -> None:
    from tests.scorecards.test_scorecard import _build, _plan

    early = _build(_plan(sequential="gst", looks=5, mde=0.02))
    assert early.gst is not None
    assert early.gst.look == 0
    assert early.decision.decision == "keep_running"
    assert any("first look is not reached" in r for r in early.decision.reasons)
    no_mde = _build(_plan(sequential="gst", looks=3, mde=None))
    assert no_mde.gst is not None
    assert no_mde.gst.final
    (v2,) = no_mde.metrics[0].variants
    assert no_mde.gst.fractions == pytest.approx((1 / 3, 2 / 3, 1.0))  # the final of the three planned looks
    fixed = compare(SampleStats(2000, 200.0, 200.0), SampleStats(2000, 280.0, 280.0), "proportion")
    half = gst_bounds([1 / 3, 2 / 3, 1.0])[-1] * fixed.std_error
    assert v2.comparison.abs_ci == pytest.approx((fixed.abs_lift - half, fixed.abs_lift + half), rel=1e-12)


def test_dated_looks_count_the_dates_reached() -> None:
    from tests.scorecards.test_scorecard import _build, _plan

    card = _build(_plan(sequential="gst", looks=["2026-11-01", "2026-11-20", "2026-12-30"], spending="pocock",
                        mde=0.5))
    assert card.gst is not None
    assert card.gst.look == 2  # AS_OF is 2026-11-30
    assert card.gst.spending == "pocock"
    assert card.plan.design.looks_planned == 3


def test_on_binary_data_five_looks_keep_the_false_positive_rate() -> None:
    """The same check on the statistic the scorecard computes: unpooled z of two 10 % conversion rates, cumulative
    sums at 400, 800, …, 2,000 units per arm (information fractions from n), seeded."""
    from scorecards import compare_arrays

    rng = np.random.default_rng(164)
    reps, looks, per_look = 20_000, 5, 400
    hits_c = np.cumsum(rng.binomial(per_look, 0.10, (reps, looks)), axis=1)
    hits_t = np.cumsum(rng.binomial(per_look, 0.10, (reps, looks)), axis=1)
    n = np.arange(1, looks + 1) * per_look
    inf = compare_arrays(np.broadcast_to(n, hits_c.shape), hits_c, hits_c, np.broadcast_to(n, hits_t.shape), hits_t,
                         hits_t, "proportion")
    c = np.array(gst_bounds(list(n / n[-1])))
    fpr = float(np.mean((np.abs(inf.statistic) >= c).any(axis=1)))
    assert fpr <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
