"""Fixed-horizon comparison of a treatment arm with control: ``compare(control, treatment, ...)``.

Conventions fixed by DESIGN.md ("Python API of scorecards"):

* ``p_value`` tests the difference in means, H0: μt = μc, two-sided.
  - ``kind="mean"``: Welch's unequal-variance t test, Welch–Satterthwaite df (Welch 1947).
  - ``kind="proportion"``: z test with *unpooled* variance (the Wald test of p_t − p_c).
  - ``kind="ratio"``: z test on R_t − R_c, each R = Σy/Σx with delta-method variance
    (Deng, Knoblich & Lu 2018).
* ``abs_ci`` is the interval of that same test, so ``significant`` (p < α) ⇔ 0 ∉ ``abs_ci``.
* ``rel_ci`` is Fieller's interval for μt/μc − 1 (:mod:`scorecards.fieller`) with the same variances
  and quantile as the test (z, or Welch t with its df), so ``significant`` ⇔ 0 ∉ ``rel_ci`` whenever
  ``rel_ci`` is bounded; when the control mean is not significantly different from 0 (g ≥ 1) the
  Fieller set is unbounded: ``rel_ci = (−inf, inf)`` and ``rel_ci_reason`` says so.  The
  delta-method interval (normal quantile; it can disagree with the test at small n) is kept as
  ``rel_ci_delta``.
* Per-unit variances use the n − 1 denominator everywhere.  For proportions that is
  p̂(1 − p̂)·n/(n − 1) — it reproduces statsmodels ``CompareMeans.ztest_ind(usevar="unequal")`` on the
  raw 0/1 data exactly, and is larger than the textbook Wald p̂(1 − p̂)/n
  (``test_proportions_2indep(method="wald")``) by the factor n/(n − 1).
* ``chance_to_beat`` / ``expected_loss``: the posterior of the difference on the test's reference
  (t with the Welch df for means, normal for ratios), exact Beta posteriors for proportions up to
  ``EXACT_BETA_MAX_N`` units per arm (see :mod:`scorecards.bayesian`), oriented by ``direction``.

Degenerate data never raises: the result carries NaN in what could not be computed and a
:class:`~scorecards.reasons.Reason`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

import numpy as np
from scipy import stats

from scorecards.bayesian import chance_to_beat
from scorecards.fieller import FiellerInterval, fieller_relative_interval
from scorecards.inference import DifferenceInference, difference_inference, relative_inference
from scorecards.kinds import Direction, MetricKind, check_direction, check_kind
from scorecards.ratio import ratio_difference, ratio_estimate
from scorecards.reasons import Reason
from scorecards.sample_stats import RatioStats, SampleStats, variance_of


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treatment vs control on one metric (field names match the REST scorecard)."""

    kind: str
    test: str  # "welch_t" | "z" | "msprt" — the test behind p_value and abs_ci
    alpha: float
    direction: str
    control_n: int
    treatment_n: int
    control_mean: float
    treatment_mean: float
    abs_lift: float
    abs_ci: tuple[float, float]
    rel_lift: float
    rel_ci: tuple[float, float]
    p_value: float
    significant: bool
    chance_to_beat: float
    expected_loss: float
    std_error: float  # standard error of abs_lift
    rel_std_error: float  # delta-method standard error of rel_lift
    statistic: float  # t or z
    df: float  # inf for z tests
    reason: Reason
    #: the delta-method interval of rel_lift (normal quantile), beside Fieller's ``rel_ci``
    rel_ci_delta: tuple[float, float] = (math.nan, math.nan)
    #: OK when ``rel_ci`` is a finite interval; UNBOUNDED_RELATIVE_CI / ZERO_CONTROL_MEAN / … otherwise
    rel_ci_reason: Reason = Reason.OK
    #: the test's two-sided critical value q behind abs_ci and rel_ci (abs_ci = abs_lift ± q·std_error)
    critical_value: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict: NaN/inf become ``None``, enums their value, tuples lists."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class ArmEstimate:
    """One arm reduced to what inference needs.

    Attributes:
        n: units in the arm.
        estimate: the arm's mean (or ratio) estimate.
        var_estimate: variance of ``estimate`` (e.g. s²/n).
        dof: degrees of freedom of ``var_estimate`` (n − 1 for t, inf for z).
        reason: why the estimate is unusable, else OK.
    """

    n: int
    estimate: float
    var_estimate: float
    dof: float
    reason: Reason = Reason.OK


def arm_estimate(stats_: SampleStats | RatioStats, kind: MetricKind) -> ArmEstimate:
    """Reduce one arm's sufficient statistics to (estimate, variance of estimate, dof)."""
    check_kind(kind)
    if kind == "ratio":
        if not isinstance(stats_, RatioStats):
            raise TypeError("kind='ratio' needs RatioStats")
        ratio, var_ratio = ratio_estimate(
            stats_.n,
            stats_.sum_y,
            stats_.sum_squares_y,
            stats_.sum_x,
            stats_.sum_squares_x,
            stats_.sum_xy,
            centred=None if stats_.centred is None else stats_.centred.fields(),
        )
        if stats_.n < 2:
            reason = Reason.TOO_FEW_UNITS
        elif stats_.sum_x == 0:
            reason = Reason.ZERO_DENOMINATOR
        else:
            reason = Reason.OK
        # why: the delta method is asymptotic; a z reference (dof = inf) is the standard choice.
        return ArmEstimate(stats_.n, float(ratio), float(var_ratio), math.inf, reason)
    if not isinstance(stats_, SampleStats):
        raise TypeError(f"kind={kind!r} needs SampleStats")
    n = stats_.n
    mean = stats_.mean
    if kind == "proportion":
        if n > 0 and not -1e-12 <= mean <= 1.0 + 1e-12:
            raise ValueError(f"a proportion's mean must lie in [0, 1], got {mean}")
        # why: for 0/1 data the n − 1 variance is p(1 − p)·n/(n − 1) whatever sum_squares says, so a
        # SQL aggregation that leaves sum_squares at 0 for binary metrics still gives the right answer.
        # (max(…, 0) absorbs a mean a few ulps outside [0, 1] from float sums.)
        unit_var = max(mean * (1.0 - mean), 0.0) * n / (n - 1) if n >= 2 else math.nan
        # why: DESIGN.md fixes a z test (normal reference) for proportions.
        dof = math.inf
    else:
        unit_var = stats_.variance
        dof = float(n - 1) if n >= 2 else math.nan
    var_est = unit_var / n if n >= 2 else math.nan
    reason = Reason.TOO_FEW_UNITS if n < 2 else Reason.OK
    return ArmEstimate(n, mean, var_est, dof, reason)


def critical_value(df: float, alpha: float) -> float:
    """The two-sided critical value of the test: t_{1−α/2, df}, or z_{1−α/2} for ``df = inf`` (NaN df → NaN)."""
    if math.isnan(df):
        return math.nan
    return float(stats.norm.isf(alpha / 2.0) if math.isinf(df) else stats.t.isf(alpha / 2.0, df))


def relative_interval(
    control: ArmEstimate,
    treatment: ArmEstimate,
    quantile: float,
    fieller_moments: tuple[float, float, float] | None = None,
) -> tuple[tuple[float, float], Reason]:
    """Fieller's ``rel_ci`` at critical value ``quantile`` and why it may not be a finite interval.

    ``fieller_moments = (Var θ̂_c, Var θ̂_t, Cov)`` replaces the arms' independent variances when the
    estimates are correlated (CUPED); by default the arms' ``var_estimate`` with covariance 0.
    """
    vc, vt, cov = fieller_moments or (control.var_estimate, treatment.var_estimate, 0.0)
    f: FiellerInterval = fieller_relative_interval(control.estimate, vc, treatment.estimate, vt, quantile, cov)
    lo, hi = float(f.ci_low), float(f.ci_high)
    if bool(f.bounded):
        return (lo, hi), Reason.OK
    if math.isinf(lo) and math.isinf(hi):
        return (lo, hi), Reason.UNBOUNDED_RELATIVE_CI
    return (lo, hi), Reason.ZERO_CONTROL_MEAN if control.estimate == 0 else Reason.ZERO_VARIANCE


def build_comparison(
    control: ArmEstimate,
    treatment: ArmEstimate,
    *,
    kind: MetricKind,
    alpha: float,
    direction: Direction,
    test: str,
    var_rel: float | None = None,
    fieller_moments: tuple[float, float, float] | None = None,
    exact_posterior: bool = True,
    difference: float | None = None,
) -> Comparison:
    """Assemble a :class:`Comparison` from two arm estimates (shared by compare, CUPED, sequential).

    ``difference`` overrides ``treatment.estimate − control.estimate`` in the test and ``abs_ci`` (the exact
    difference from shifted sums, :func:`shifted_difference`). ``var_rel`` overrides the delta-method variance of
    the relative lift, and ``fieller_moments``
    (Var θ̂_c, Var θ̂_t, Cov) the moments behind Fieller's ``rel_ci``, when the arms' estimates are
    not independent (CUPED's pooled covariate mean).  ``exact_posterior=False`` keeps
    ``chance_to_beat`` on the normal/t posterior (CUPED: adjusted proportions are not counts).
    """
    # why: ``difference`` (θ̂_t − θ̂_c computed from shifted sums) replaces the difference of the rounded estimates,
    # which at |mean|/sd = 1e8 is off by an ulp of the mean (1e-6 of a 0.01 difference); the test only needs Δ.
    inf: DifferenceInference = difference_inference(
        0.0 if difference is not None else control.estimate,
        control.var_estimate,
        control.dof,
        difference if difference is not None else treatment.estimate,
        treatment.var_estimate,
        treatment.dof,
        alpha,
    )
    rel = relative_inference(
        control.estimate, control.var_estimate, treatment.estimate, treatment.var_estimate, alpha, var_rel
    )
    se = float(inf.std_error)
    df = float(inf.df)
    bayes = chance_to_beat(
        kind if exact_posterior else "mean", control.n, control.estimate, treatment.n, treatment.estimate,
        float(inf.diff), se, df, direction)
    q = critical_value(df, alpha)
    rel_ci, rel_reason = relative_interval(control, treatment, q, fieller_moments)

    reason = Reason.OK
    for arm in (control, treatment):
        if arm.reason is not Reason.OK and reason is Reason.OK:
            reason = arm.reason
    if reason is Reason.OK and not se > 0:
        reason = Reason.ZERO_VARIANCE
    if reason is Reason.OK and control.estimate == 0:
        reason = Reason.ZERO_CONTROL_MEAN

    p_value = float(inf.p_value)
    return Comparison(
        kind=kind,
        test=test,
        alpha=alpha,
        direction=direction,
        control_n=control.n,
        treatment_n=treatment.n,
        control_mean=control.estimate,
        treatment_mean=treatment.estimate,
        abs_lift=float(inf.diff),
        abs_ci=(float(inf.ci_low), float(inf.ci_high)),
        rel_lift=float(rel.rel),
        rel_ci=rel_ci,
        p_value=p_value,
        # why: NaN < alpha is False, so an uncomputable p-value is never "significant".
        significant=bool(p_value < alpha),
        chance_to_beat=float(bayes.chance_to_beat),
        expected_loss=float(bayes.expected_loss),
        std_error=se,
        rel_std_error=float(rel.std_error),
        statistic=float(inf.statistic),
        df=df,
        reason=reason,
        rel_ci_delta=(float(rel.ci_low), float(rel.ci_high)),
        rel_ci_reason=rel_reason if reason is Reason.OK or rel_reason is Reason.OK else reason,
        critical_value=q,
    )


def compare(
    control: SampleStats | RatioStats,
    treatment: SampleStats | RatioStats,
    kind: MetricKind = "mean",
    alpha: float = 0.05,
    *,
    direction: Direction = "higher_is_better",
) -> Comparison:
    """Fixed-horizon test of treatment vs control from sufficient statistics.

    Args:
        control, treatment: per-arm :class:`SampleStats` (``kind`` "mean" / "proportion") or
            :class:`RatioStats` (``kind="ratio"``).
        kind: "proportion" (unpooled z), "mean" (Welch t) or "ratio" (delta-method z).
        alpha: two-sided significance level; intervals have coverage 1 − α.
        direction: only orients ``chance_to_beat`` / ``expected_loss`` ("beat" = better);
            every other field is direction-free.

    Returns:
        :class:`Comparison`; ``abs_lift = treatment_mean − control_mean``,
        ``rel_lift = treatment_mean / control_mean − 1``.
    """
    check_kind(kind)
    check_direction(direction)
    c = arm_estimate(control, kind)
    t = arm_estimate(treatment, kind)
    test = "welch_t" if kind == "mean" else "z"
    return build_comparison(c, t, kind=kind, alpha=alpha, direction=direction, test=test,
                            difference=shifted_difference(control, treatment) if kind != "proportion" else None)


def shifted_difference(control: SampleStats | RatioStats, treatment: SampleStats | RatioStats) -> float | None:
    """Δ = (c_t − c_c) + (Σ(y − c_t)/n_t − Σ(y − c_c)/n_c) when both arms carry shifted sums (else None).

    ``c_t − c_c`` is exact in floating point when the shifts are within a factor 2 of each other (Sterbenz), so Δ
    keeps its relative precision whatever |mean|/sd is; the difference of the two rounded means does not.
    Ratio metrics with centred sums: :func:`scorecards.ratio.ratio_difference`."""
    if isinstance(control, RatioStats) and isinstance(treatment, RatioStats):
        return ratio_difference(control, treatment)
    if not (isinstance(control, SampleStats) and isinstance(treatment, SampleStats)):
        return None
    if control.sum_shifted is None or treatment.sum_shifted is None or control.n < 1 or treatment.n < 1:
        return None
    return (treatment.shift - control.shift) + (treatment.sum_shifted / treatment.n
                                                - control.sum_shifted / control.n)


def compare_arrays(
    control_n: np.ndarray,
    control_sum: np.ndarray,
    control_sum_squares: np.ndarray,
    treatment_n: np.ndarray,
    treatment_sum: np.ndarray,
    treatment_sum_squares: np.ndarray,
    kind: MetricKind = "mean",
    alpha: float = 0.05,
) -> DifferenceInference:
    """Vectorised :func:`compare` for many experiments at once (means / proportions only).

    Same arithmetic as :func:`arm_estimate` + :func:`difference_inference`; used for simulation
    studies where building thousands of dataclasses would dominate the cost.
    """
    check_kind(kind, ("proportion", "mean"))

    def arm(n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = np.asarray(n, dtype=float)
        mean = np.asarray(s, dtype=float) / n
        if kind == "proportion":
            unit_var = mean * (1.0 - mean) * n / (n - 1.0)
            dof = np.full_like(n, np.inf)
        else:
            unit_var = np.asarray(variance_of(n, s, ss))
            dof = n - 1.0
        return mean, unit_var / n, dof

    mc, vc, dc = arm(control_n, control_sum, control_sum_squares)
    mt, vt, dt = arm(treatment_n, treatment_sum, treatment_sum_squares)
    return difference_inference(mc, vc, dc, mt, vt, dt, alpha)
