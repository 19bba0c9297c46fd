"""Chance to beat control and expected loss.

Method (documented choice): a normal approximation of the posterior of the difference
Δ = μt − μc under a flat prior, Δ ~ N(Δ̂, se²) with se the same unpooled standard error as the
frequentist test — the approach of GrowthBook's ``EffectBayesian`` with an uninformative prior and of
Stucchio (2015) in the large-sample limit.  It makes "chance to beat" agree with the one-sided
p-value (CTB = 1 − p/2 when Δ̂ > 0) and needs nothing beyond the sufficient statistics.

    chance_to_beat = P(sΔ > 0) = Φ(s·Δ̂ / se)
    expected_loss  = E[max(0, −sΔ)] = se·φ(Δ̂/se) − s·Δ̂·Φ(−s·Δ̂/se)

where s = +1 for higher-is-better metrics and −1 otherwise.  Expected loss is in the metric's
absolute units (what is given up, per unit, by shipping the treatment if it is in fact worse).

For proportions an exact Beta–Binomial alternative is provided (:func:`beta_chance_to_beat`,
Evan Miller's closed form), useful at small n where the normal approximation is poor.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import special, stats

from scorecards.kinds import Direction, check_direction, sign_of
from scorecards.sample_stats import ArrayLike, FloatArray


class BayesianSummary(NamedTuple):
    """Posterior summaries of the treatment − control difference (arrays broadcast from inputs)."""

    chance_to_beat: FloatArray
    expected_loss: FloatArray


def normal_chance_to_beat(
    diff: ArrayLike, std_error: ArrayLike, direction: Direction = "higher_is_better"
) -> BayesianSummary:
    """Chance to beat control and expected loss under Δ ~ N(diff, std_error²) (vectorised).

    NaN where ``std_error`` is 0 or NaN: a point-mass posterior is an artefact of degenerate data,
    not certainty.
    """
    check_direction(direction)
    s = sign_of(direction)
    d = s * np.asarray(diff, dtype=float)
    se = np.asarray(std_error, dtype=float)
    positive = se > 0
    safe_se = np.where(positive, se, 1.0)
    # why: |z| beyond ~1e154 squares to inf inside the normal pdf; the limits (CTB 0/1, pdf 0)
    # are the right answers, so overflow there is expected rather than an error.
    with np.errstate(over="ignore"):
        z = d / safe_se
        ctb = np.where(positive, stats.norm.cdf(z), np.nan)
        # why: closed form of E[max(0, −X)] for X ~ N(d, se²); avoids Monte Carlo noise entirely.
        loss = np.where(positive, safe_se * stats.norm.pdf(z) - d * stats.norm.cdf(-z), np.nan)
    return BayesianSummary(np.asarray(ctb, dtype=float), np.maximum(loss, 0.0))


def beta_chance_to_beat(
    control_successes: int,
    control_n: int,
    treatment_successes: int,
    treatment_n: int,
    prior_alpha: int = 1,
    prior_beta: int = 1,
) -> float:
    """Exact P(p_t > p_c) for independent Beta posteriors (conjugate Beta(a, b) prior).

    Evan Miller (2015), "Formulas for Bayesian A/B Testing": with posteriors Beta(a_c, b_c) and
    Beta(a_t, b_t) and integer a_t,

        P(p_t > p_c) = Σ_{i=0}^{a_t−1} B(a_c + i, b_c + b_t) / ((b_t + i) · B(1 + i, b_t) · B(a_c, b_c)).

    Evaluated in log space (``betaln``) because the Beta functions underflow for n ≳ 1000.
    Integer prior parameters are required by the closed form.  Cost is O(a_t).
    """
    if min(control_n, treatment_n, prior_alpha, prior_beta) < 0 or prior_alpha < 1 or prior_beta < 1:
        raise ValueError("counts must be >= 0 and prior parameters >= 1")
    if not (0 <= control_successes <= control_n and 0 <= treatment_successes <= treatment_n):
        raise ValueError("need 0 <= successes <= n in each arm")
    a_c = control_successes + prior_alpha
    b_c = control_n - control_successes + prior_beta
    a_t = treatment_successes + prior_alpha
    b_t = treatment_n - treatment_successes + prior_beta
    i = np.arange(a_t, dtype=float)
    log_terms = (
        special.betaln(a_c + i, b_c + b_t)
        - np.log(b_t + i)
        - special.betaln(1.0 + i, b_t)
        - special.betaln(a_c, b_c)
    )
    # why: logsumexp keeps the sum of thousands of tiny terms accurate without underflow.
    return float(min(1.0, np.exp(special.logsumexp(log_terms))))
