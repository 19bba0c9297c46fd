"""Guardrail status of one metric for one variant: pass / fail / inconclusive.

A guardrail protects a metric that must not get (much) worse.  With s = +1 for
"higher_is_better" and −1 for "lower_is_better", r = μt/μc − 1 the relative lift and m ≥ 0 the
relative non-inferiority margin:

* **pass** — non-inferiority shown: a one-sided level-α test rejects H0: s·r ≤ −m ("worse than
  control by at least the margin"), z = (s·r̂ + m) / se(r̂) with the delta-method se
  (Deng et al. 2018; Schuirmann-style one-sided test).  Equivalently the one-sided (1 − α) bound of
  r lies on the good side of −s·m.  With ``sequential=True`` the bound and the p-value come from
  the always-valid mSPRT (see :mod:`scorecards.sequential`) on the relative scale, so a pass read at
  an interim look stays valid.
* **fail** — significantly worse than control: the always-valid mSPRT test of Δ = 0 rejects and the
  estimate is on the bad side.  It is always-valid so it may fire at any look (automatic rollback).
* **inconclusive** — neither.

Precedence: pass is checked first.  A regression that is statistically significant but proven
smaller than the margin is, by the definition of the margin, acceptable — so it passes; any other
significant regression fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from scipy import stats

from scorecards.frequentist import ArmEstimate, Comparison, arm_estimate, build_comparison
from scorecards.kinds import Direction, MetricKind, check_direction, check_kind, sign_of
from scorecards.reasons import Reason
from scorecards.sample_stats import RatioStats, SampleStats
from scorecards.sequential import DEFAULT_HORIZON_N_PER_ARM, mixture_variance, msprt


class GuardrailStatus(StrEnum):
    """Guardrail verdict."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class GuardrailResult:
    """Verdict plus every number it rests on (for the decision's reasons text)."""

    status: GuardrailStatus
    direction: str
    margin: float
    alpha: float
    rel_lift: float
    abs_lift: float
    non_inferiority_bound: float  # one-sided (1 − α) bound of rel_lift on the "worse" side
    non_inferiority_p_value: float  # H0: worse by at least the margin
    regression_p_value: float  # always-valid, H0: Δ = 0
    sequential: bool
    reason: Reason
    rel_std_error: float = math.nan  # delta-method standard error of rel_lift (fixed horizon)

    def describe(self, metric: str) -> str:
        """One human-readable sentence, e.g. for ``Decision.reasons``."""
        bound_side = "lower" if self.direction == "higher_is_better" else "upper"
        level = f"{1 - self.alpha:.0%}"
        head = (
            f"guardrail {metric}: {_pct(self.rel_lift)} vs control "
            f"({level} {bound_side} bound {_pct(self.non_inferiority_bound)}, margin {self.margin:.1%})"
        )
        if self.status is GuardrailStatus.PASS:
            return f"{head} — pass: not worse by the margin (p = {_p(self.non_inferiority_p_value)})"
        if self.status is GuardrailStatus.FAIL:
            return f"{head} — fail: significantly worse (always-valid p = {_p(self.regression_p_value)})"
        extra = "" if self.reason is Reason.OK else f"; {self.reason.value}"
        return (
            f"{head} — inconclusive: non-inferiority p = {_p(self.non_inferiority_p_value)}, "
            f"regression p = {_p(self.regression_p_value)}{extra}"
        )


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2%}"


def _p(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3g}"


def _non_inferiority(fixed: Comparison, s: float, margin: float, alpha: float, sequential: bool,
                     tau2: float) -> tuple[float, float]:
    """One-sided non-inferiority of the relative lift against ``-margin`` (in the metric's good direction ``s``):
    (p-value, bound on the relative lift). Fixed horizon: a z test; sequential: the always-valid confidence
    sequence (mSPRT with ``tau2`` mapped to the relative scale)."""
    shifted = s * fixed.rel_lift + margin  # > 0 means better than "worse by the margin"
    se_rel = fixed.rel_std_error
    if sequential:
        # why: map τ² to the relative scale with the same delta-method factor as the estimate.
        # (x * x rather than x ** 2: a Python float power raises OverflowError, a product gives inf.)
        scale = se_rel / fixed.std_error
        tau2_rel = tau2 * scale * scale
        seq = msprt(shifted, se_rel * se_rel, tau2_rel, alpha)
        # why: the CS is two-sided at α — conservative for a one-sided claim, but always valid.
        return (float(seq.p_value) if shifted > 0 else 1.0), -s * margin + s * float(seq.ci_low)
    z = shifted / se_rel
    return float(stats.norm.sf(z)), fixed.rel_lift - s * float(stats.norm.isf(alpha)) * se_rel


def guardrail_status(
    control: SampleStats | RatioStats,
    treatment: SampleStats | RatioStats,
    kind: MetricKind,
    direction: Direction,
    margin: float,
    alpha: float = 0.05,
    *,
    sequential: bool = False,
    horizon_n_per_arm: float = DEFAULT_HORIZON_N_PER_ARM,
) -> GuardrailResult:
    """Guardrail verdict for one variant vs control (see module docstring for the tests).

    Args:
        control, treatment: the two arms' sufficient statistics.
        kind: "proportion" | "mean" | "ratio".
        direction: "higher_is_better" | "lower_is_better".
        margin: relative non-inferiority margin m ≥ 0 (0.05 = may be at most 5 % worse).
        alpha: level of both the one-sided non-inferiority test and the always-valid regression test.
        sequential: read non-inferiority from the always-valid confidence sequence (interim looks).
        horizon_n_per_arm: mSPRT tuning (see :mod:`scorecards.sequential`); use the planned n.
    """
    check_kind(kind)
    c = arm_estimate(control, kind)
    t = arm_estimate(treatment, kind)
    test = "welch_t" if kind == "mean" else "z"
    return guardrail_from_estimates(c, t, kind, direction, margin, alpha, sequential=sequential,
                                    horizon_n_per_arm=horizon_n_per_arm, test=test)


def guardrail_from_estimates(c: ArmEstimate, t: ArmEstimate, kind: str, direction: Direction, margin: float,
                             alpha: float = 0.05, *, sequential: bool = False,
                             horizon_n_per_arm: float = DEFAULT_HORIZON_N_PER_ARM, test: str = "z") -> GuardrailResult:
    """:func:`guardrail_status` from two arm estimates (any estimator with a variance: a quantile's clustered
    Woodruff SE, ``scorecards.quantile.quantile_guardrail``); the same pass / fail / inconclusive rules."""
    check_direction(direction)
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    s = sign_of(direction)
    fixed = build_comparison(c, t, kind="mean" if kind == "quantile" else kind,  # type: ignore[arg-type]
                             alpha=alpha, direction=direction, test=test, exact_posterior=kind != "quantile")
    tau2 = float(mixture_variance(c.var_estimate * c.n, t.var_estimate * t.n, horizon_n_per_arm, alpha))

    # --- fail: always-valid two-sided test of Δ = 0, estimate on the bad side.
    regression_p = float(msprt(fixed.abs_lift, fixed.std_error * fixed.std_error, tau2, alpha).p_value)
    worse = s * fixed.abs_lift < 0
    failed = bool(regression_p < alpha) and worse

    # --- pass: one-sided non-inferiority on the relative scale.
    reason = fixed.reason
    if reason is Reason.OK and not c.estimate > 0:
        # why: with μc ≤ 0 the sign of μt/μc − 1 no longer says "better" or "worse".
        reason = Reason.NONPOSITIVE_CONTROL_MEAN
    se_rel = fixed.rel_std_error
    if reason is not Reason.OK or not se_rel > 0:
        ni_p, bound = math.nan, math.nan
    else:
        ni_p, bound = _non_inferiority(fixed, s, margin, alpha, sequential, tau2)
    passed = bool(ni_p < alpha)

    if passed:
        status = GuardrailStatus.PASS
    elif failed:
        status = GuardrailStatus.FAIL
    else:
        status = GuardrailStatus.INCONCLUSIVE
    return GuardrailResult(
        status=status,
        direction=direction,
        margin=margin,
        alpha=alpha,
        rel_lift=fixed.rel_lift,
        abs_lift=fixed.abs_lift,
        non_inferiority_bound=bound,
        non_inferiority_p_value=ni_p,
        regression_p_value=regression_p,
        sequential=sequential,
        reason=reason,
        rel_std_error=float(se_rel),
    )
