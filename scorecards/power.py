"""Sample size, minimum detectable effect and power for a two-arm test.

Closed-form unpooled two-sample normal formula (DESIGN.md; e.g. Chow, Shao & Wang, *Sample Size
Calculations in Clinical Research*, §4.2), with a relative MDE:

    μ_c = baseline,  μ_t = baseline · (1 + mde)
    n per arm = ⌈ (z_{1−α/2} + z_{1−β})² · (σ²_c + σ²_t) / (μ_t − μ_c)² ⌉

with σ² = p(1 − p) for proportions (σ²_t uses p_t — unpooled) and σ_c = σ_t = ``sd`` for means.

Where it differs from statsmodels: ``NormalIndPower().solve_power(proportion_effectsize(p_t, p_c))``
uses Cohen's arcsine effect size h = 2·asin√p_t − 2·asin√p_c, i.e. a variance-stabilised scale on
which both arms have variance 1, so n_sm = (z_{1−α/2} + z_{1−β})² · 2 / h².  Since
d(2·asin√p)/dp = 1/√(p(1 − p)), h² ≈ Δ²/p̄(1 − p̄) and the two agree to first order: at baselines 1–50 % they differ by
< 0.2 % of n for |mde| ≤ 10 % and < 1 % for |mde| ≤ 20 % (pinned by the tests), the gap growing
with the MDE.  statsmodels also counts the (negligible) opposite
tail in its power; for means with a common sd the two coincide up to that tail.

**Quantile metrics** (``scorecards.quantile``) are sized with the same closed form for means, baseline = the control
quantile Q and the per-unit standard deviation replaced by σ_Q, the standard deviation of √n (Q̂ − Q):

* from planning inputs, :func:`quantile_sd_from_density`: σ_Q = √(q(1 − q)) / f(Q), the asymptotic variance of a
  sample quantile of n i.i.d. values with density f at Q (Bahadur's representation; Serfling 1980, *Approximation
  Theorems of Mathematical Statistics*, §2.3.3) — per-unit quantiles, or per-event ones with one event per unit;
* from a running experiment, :func:`quantile_sd_from_se`: σ_Q = SE(Q̂) · √n, the Woodruff SE at the current n
  scaled as 1/√n to the planned n. This also holds for per-event quantiles with many correlated events per unit:
  F̂ is a ratio of per-unit means (Liu et al. 2019), so its clustered variance — and the quantile's — is O(1/n) in
  units with the units' event-count distribution held fixed. n counts exposed units (those without events included)
  as long as the share of units with events does not drift.

A relative change of a quantile is planned as a change of scale of the values near it, which scales σ_Q too: the
treatment's is (1 + mde)·σ_Q, so the closed form's σ²_c + σ²_t is σ²_Q (1 + (1 + mde)²) — :func:`quantile_sd_for`
returns the common sd with that sum, and :func:`quantile_mde_at_n` solves the MDE with it (fixed point). With equal
SDs a +10 % p95 planned at power 0.80 was detected at 0.75 in simulation (400 runs); with the scaled one at 0.80.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize, stats

from scorecards.inference import check_alpha
from scorecards.kinds import PowerKind, check_kind

# why: floating error in the closed form can land a hair above an exact integer (e.g.
# 3841.0000000000005); shaving this relative amount before ceil avoids charging an extra unit.
_CEIL_SLACK = 1e-12


@dataclass(frozen=True, slots=True)
class Design:
    """Planned experiment size (REST ``POST /v1/design`` response)."""

    n_per_variant: int
    total_units: int
    days: int


def _check(kind: PowerKind, baseline: float, alpha: float, power: float, sd: float | None) -> None:
    check_kind(kind, ("proportion", "mean"))
    check_alpha(alpha)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if kind == "proportion":
        if not 0.0 < baseline < 1.0:
            raise ValueError(f"a proportion baseline must be in (0, 1), got {baseline}")
    else:
        if sd is None or not sd > 0:
            raise ValueError("kind='mean' needs sd > 0")
        if baseline == 0:
            raise ValueError("a relative MDE needs a nonzero baseline")


def _variances(kind: PowerKind, baseline: float, mde: float, sd: float | None) -> tuple[float, float, float]:
    """Return (σ²_c, σ²_t, Δ) for the relative MDE."""
    mu_t = baseline * (1.0 + mde)
    if kind == "proportion":
        if not 0.0 < mu_t < 1.0:
            raise ValueError(f"baseline·(1 + mde) = {mu_t} is not a valid proportion")
        return baseline * (1.0 - baseline), mu_t * (1.0 - mu_t), mu_t - baseline
    assert sd is not None
    return sd * sd, sd * sd, mu_t - baseline


def sample_size_per_arm(
    kind: PowerKind,
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    sd: float | None = None,
) -> int:
    """Units per arm to detect a relative change ``mde`` with a two-sided level-α test.

    Args:
        kind: "proportion" or "mean".
        baseline: control mean (a rate in (0, 1) for proportions).
        mde: relative minimum detectable effect, e.g. 0.05 for +5 % (negative for a decrease).
        alpha: two-sided significance level.
        power: 1 − β.
        sd: per-unit standard deviation (means only; assumed equal in both arms).

    Returns:
        n = ⌈(z_{1−α/2} + z_{1−β})² (σ²_c + σ²_t) / (μ_t − μ_c)²⌉ (see module docstring).
    """
    _check(kind, baseline, alpha, power, sd)
    if mde == 0:
        raise ValueError("mde must be nonzero")
    var_c, var_t, delta = _variances(kind, baseline, mde, sd)
    z = stats.norm.isf(alpha / 2.0) + stats.norm.isf(1.0 - power)
    n = z * z * (var_c + var_t) / (delta * delta)
    return max(2, math.ceil(n * (1.0 - _CEIL_SLACK)))


def achieved_power(
    kind: PowerKind,
    baseline: float,
    mde: float,
    n_per_arm: float,
    alpha: float = 0.05,
    sd: float | None = None,
) -> float:
    """Power of the two-sided unpooled z test at ``n_per_arm`` units per arm.

    power = Φ(|Δ|/se − z_{1−α/2}) + Φ(−|Δ|/se − z_{1−α/2}), se = √((σ²_c + σ²_t)/n) — both
    rejection tails counted (the second is negligible unless the effect is tiny).
    """
    _check(kind, baseline, alpha, 0.5, sd)
    if not n_per_arm > 0:
        raise ValueError("n_per_arm must be > 0")
    var_c, var_t, delta = _variances(kind, baseline, mde, sd)
    se = math.sqrt((var_c + var_t) / n_per_arm)
    z_a = stats.norm.isf(alpha / 2.0)
    shift = abs(delta) / se
    return float(stats.norm.cdf(shift - z_a) + stats.norm.cdf(-shift - z_a))


def mde_at_n(
    kind: PowerKind,
    baseline: float,
    n_per_arm: float,
    alpha: float = 0.05,
    power: float = 0.8,
    sd: float | None = None,
) -> float:
    """Smallest positive relative MDE detectable at ``n_per_arm`` with the given power.

    Inverts the same closed form as :func:`sample_size_per_arm` (without rounding):
    means: mde = (z_{1−α/2} + z_{1−β}) · sd · √(2/n) / |baseline|;
    proportions: root in m of (z)²(p(1 − p) + p_t(1 − p_t)) = n·(p·m)², p_t = p(1 + m), found with
    Brent's method on (0, 1/p − 1).  NaN when even p_t → 1 is not detectable at this n.
    """
    _check(kind, baseline, alpha, power, sd)
    if not n_per_arm > 0:
        raise ValueError("n_per_arm must be > 0")
    z = stats.norm.isf(alpha / 2.0) + stats.norm.isf(1.0 - power)
    if kind == "mean":
        assert sd is not None
        return float(z * sd * math.sqrt(2.0 / n_per_arm) / abs(baseline))
    p = baseline

    def gap(m: float) -> float:
        pt = p * (1.0 + m)
        return n_per_arm * (p * m) ** 2 - z * z * (p * (1.0 - p) + pt * (1.0 - pt))

    hi = 1.0 / p - 1.0  # p_t = 1
    # why: gap is negative near m = 0 and increasing on (0, hi]; no sign change → not detectable.
    if gap(hi) < 0:
        return math.nan
    return float(optimize.brentq(gap, 1e-15, hi, xtol=1e-14, rtol=1e-12))


def design(
    kind: PowerKind,
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    variants: int = 2,
    daily_units: float = 1.0,
    sd: float | None = None,
) -> Design:
    """Size an experiment (REST ``POST /v1/design``).

    ``variants`` counts every arm including control; n_per_variant is the two-arm
    :func:`sample_size_per_arm` (no multiplicity correction — pass α/(variants − 1) for a
    Bonferroni-style design); total_units = n_per_variant × variants; days = ⌈total / daily_units⌉.
    """
    if variants < 2:
        raise ValueError("an experiment needs at least 2 variants")
    if not daily_units > 0:
        raise ValueError("daily_units must be > 0")
    n = sample_size_per_arm(kind, baseline, mde, alpha, power, sd)
    total = n * variants
    return Design(n_per_variant=n, total_units=total, days=math.ceil(total / daily_units))


def quantile_sd_from_density(q: float, density: float) -> float:
    """σ_Q = √(q(1 − q)) / f(Q): the standard deviation of √n (Q̂ − Q) for the q-quantile of i.i.d. values with
    density ``density`` = f(Q) > 0 at the quantile (module docstring); use it as ``sd`` with kind "mean" and
    baseline Q in :func:`sample_size_per_arm`, :func:`mde_at_n` and :func:`achieved_power`."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if not (math.isfinite(density) and density > 0):
        raise ValueError(f"the density at the quantile must be positive and finite, got {density}")
    return math.sqrt(q * (1.0 - q)) / density


def quantile_sd_from_se(std_error: float, n: float) -> float:
    """σ_Q = SE(Q̂) · √n: the observed (Woodruff, clustered for per-event quantiles) standard error at ``n`` units
    as a per-unit standard deviation, to size the planned n with kind "mean" (module docstring). NaN when the SE is
    not a positive finite number or n < 2."""
    if not (math.isfinite(std_error) and std_error > 0 and n >= 2):
        return math.nan
    return std_error * math.sqrt(n)


def quantile_sd_for(sd: float, mde: float) -> float:
    """The common ``sd`` to give the closed form for means when the control's σ_Q is ``sd`` and the treatment's is
    (1 + mde)·σ_Q (module docstring): √((1 + (1 + mde)²) / 2) · σ_Q."""
    return sd * math.sqrt((1.0 + (1.0 + mde) ** 2) / 2.0)


def quantile_mde_at_n(baseline: float, n_per_arm: float, alpha: float = 0.05, power: float = 0.8,
                      sd: float | None = None) -> float:
    """Smallest positive relative change of the quantile ``baseline`` detectable at ``n_per_arm`` with the given
    power, the treatment's σ_Q scaled by (1 + mde): the root of m = (z_{1−α/2} + z_{1−β}) σ_Q √((1 + (1 + m)²)/n) /
    |Q| by fixed-point iteration from the equal-SD MDE (a contraction: the right side grows by less than m does)."""
    m = mde_at_n("mean", baseline, n_per_arm, alpha, power, sd)
    assert sd is not None
    for _ in range(50):
        nxt = mde_at_n("mean", baseline, n_per_arm, alpha, power, quantile_sd_for(sd, m))
        if abs(nxt - m) <= 1e-12 * max(1.0, abs(m)):
            return nxt
        m = nxt
    return m
