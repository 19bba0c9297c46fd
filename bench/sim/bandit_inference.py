"""Seeded calibration of bandit inference: A/A coverage, false-positive rate and power of the lift intervals.

Environment: K arms, C contexts arriving with shares s_c (C = 1: a plain bandit), arm means μ_{c,k} that may drift
multiplicatively over the run (block b of B has means μ · drift^((b + 1/2)/B), as ``bench.sim.simulation``).  Every
block of ``batch_size`` units is one allocation version: the contexts are drawn (multinomial), each context's units
are split over the arms by its weights (multinomial), and the cell's sufficient statistics are drawn:

* ``proportion`` — Σy = Σy² ~ Binomial(n, μ);
* ``mean`` — Gaussian units, the exact pair ȳ ~ N(μ, σ²/n), (n − 1)s²/σ² ~ χ²_{n−1};
* ``ratio`` — per unit x = 1 + Poisson(2) requests and y = Σ over them of N(μ, σ²) latencies, i.e.
  y | x ~ N(μ x, σ² x): the six sums (n, Σy, Σy², Σx, Σx², Σxy) of the drawn units.

Policies: ``"uniform"`` (the fixed split, equal weights), ``"thompson"`` (``bandits.thompson.thompson_allocation``
on all data so far, or with C > 1 ``bandits.contextual.contextual_thompson_allocation``: weights per context), with
the service's default floor (1 %/K per arm) unless ``floor`` is given.

:func:`calibrate` runs the policy and scores three estimators of each treatment's lift vs control: the adaptively
weighted one (``scorecards.bandit_inference``), the population-weighted post-stratified one
(``scorecards.stratified``, strata = allocation version × context) and the naive pooled z interval.  Seeding:
``numpy.random.default_rng(seed)`` per replication.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bandits.contextual import contextual_thompson_allocation
from bandits.posteriors import ArmStats, RatioArmStats
from bandits.thompson import thompson_allocation
from scorecards.bandit_inference import adaptive_estimates, adaptive_ratio_estimates
from scorecards.stratified import (
    ArmEstimates,
    naive_estimates,
    naive_ratio_estimates,
    stratified_estimates,
    stratified_ratio_estimates,
)

FloatArray = npt.NDArray[np.float64]
Kind = Literal["proportion", "mean", "ratio"]
Policy = Literal["uniform", "thompson"]
ESTIMATORS = ("adaptive_weighted", "stratified", "naive")
#: a floor or cap: one value for every arm, one per arm, or None (the service's default)
Bound = float | Sequence[float] | None
#: Poisson mean of the extra requests per unit in ratio environments (x = 1 + Poisson(2)).
REQUESTS = 2.0


@dataclass(frozen=True, slots=True)
class Environment:
    """Arms per context, context shares, metric kind and drift.

    Args:
        means: arm means per context, C rows of K values (success probabilities, unit means, or latency per
            request for ratios).
        shares: arrival share of each context (sums to 1); default one context.
        kind: ``"proportion" | "mean" | "ratio"``.
        sd: per-unit (mean) or per-request (ratio) standard deviation.
        drift: total multiplicative change of every mean over the run (1 = stationary).
    """

    means: tuple[tuple[float, ...], ...]
    shares: tuple[float, ...] = (1.0,)
    kind: Kind = "proportion"
    sd: float = 1.0
    drift: float = 1.0

    def __post_init__(self) -> None:
        if len(self.means) != len(self.shares) or abs(sum(self.shares) - 1.0) > 1e-9:
            raise ValueError("need one row of means per context share, shares summing to 1")
        if len({len(row) for row in self.means}) != 1 or len(self.means[0]) < 2:
            raise ValueError("every context needs the same number (>= 2) of arms")
        if self.kind not in ("proportion", "mean", "ratio"):
            raise ValueError(f"kind must be proportion, mean or ratio, got {self.kind!r}")
        if self.kind == "proportion" and max(max(r) for r in self.means) * max(1.0, self.drift) > 1.0:
            raise ValueError("success probabilities times drift must stay within [0, 1]")

    @property
    def contexts(self) -> int:
        """C, the number of contexts."""
        return len(self.shares)

    @property
    def arms(self) -> int:
        """K, the number of arms."""
        return len(self.means[0])

    def block_means(self, n_blocks: int) -> FloatArray:
        """Means per (block, context, arm), shape (B, C, K)."""
        factor = self.drift ** ((np.arange(n_blocks) + 0.5) / n_blocks)
        return factor[:, None, None] * np.asarray(self.means, dtype=np.float64)[None]

    def target_lift(self, n_blocks: int) -> FloatArray:
        """Population lift of each arm vs arm 0, averaged over blocks and contexts (shares), shape (K,)."""
        mu = self.block_means(n_blocks)
        return np.einsum("c,bck->k", np.asarray(self.shares), mu - mu[..., :1]) / n_blocks


@dataclass(frozen=True, slots=True, eq=False)
class Sums:
    """Per (replication, block × context, arm) sums, shape (S, B·C, K); ``x`` fields are zero except for ratios.

    ``groups`` gives each of the B·C strata its context index (block-major order).
    """

    n: FloatArray
    sum_y: FloatArray
    sum_squares_y: FloatArray
    sum_x: FloatArray
    sum_squares_x: FloatArray
    sum_xy: FloatArray
    groups: npt.NDArray[np.int64]


def _draw_cell(env: Environment, rng: np.random.Generator, n: npt.NDArray[np.int64],
               mu: FloatArray) -> tuple[FloatArray, ...]:
    """The six sums of ``n`` units per cell with means ``mu`` (arrays of n's shape)."""
    zero = np.zeros(n.shape)
    if env.kind == "proportion":
        s = rng.binomial(n, mu).astype(np.float64)
        return s, s, zero, zero, zero
    if env.kind == "mean":
        nf = n.astype(np.float64)
        has = nf > 0
        ybar = mu + env.sd / np.sqrt(np.where(has, nf, 1.0)) * rng.standard_normal(n.shape)
        # why: for Normal data ȳ and (n−1)s² are independent, (n−1)s²/σ² ~ χ²_{n−1}: exact sums without units.
        centred = env.sd**2 * 2.0 * rng.standard_gamma(np.maximum(nf - 1.0, 1.0) / 2.0) * (nf >= 2)
        total = np.where(has, nf * ybar, 0.0)
        return total, np.where(has, centred + nf * ybar**2, 0.0), zero, zero, zero
    out = [np.zeros(n.shape) for _ in range(5)]
    for index in np.ndindex(n.shape):
        x = 1.0 + rng.poisson(REQUESTS, int(n[index]))
        y = rng.normal(mu[index] * x, env.sd * np.sqrt(x))
        for array, value in zip(out, (y.sum(), y @ y, x.sum(), x @ x, x @ y), strict=True):
            array[index] = value
    return tuple(out)


def _stats(env: Environment, cum: FloatArray) -> list[ArmStats] | list[RatioArmStats]:
    """Per-arm stats objects from cumulative sums of shape (6, K)."""
    if env.kind == "ratio":
        return [RatioArmStats(int(cum[0, k]), *(float(v) for v in cum[1:, k])) for k in range(cum.shape[1])]
    return [ArmStats(int(cum[0, k]), float(cum[1, k]), float(cum[2, k])) for k in range(cum.shape[1])]


def _weights(env: Environment, policy: Policy, cum: FloatArray, rng: np.random.Generator, draws: int,
             floor: Bound, cap: Bound = None) -> FloatArray:
    """(C, K) weights of the next block from the cumulative sums (6, C, K)."""
    c, k = env.contexts, env.arms
    if policy == "uniform":
        return np.full((c, k), 1.0 / k)
    pooled = _stats(env, cum.sum(axis=1))
    if c == 1:
        return np.asarray([thompson_allocation(pooled, env.kind, rng, draws=draws, floor=floor, cap=cap).weights])
    values = [str(i) for i in range(c)]
    result = contextual_thompson_allocation(pooled, {v: _stats(env, cum[:, i]) for i, v in enumerate(values)},
                                            env.kind, rng, values=values, draws=draws, floor=floor)
    return np.asarray([a.weights for a in result.by_value])


def _replicate(env: Environment, policy: Policy, n_blocks: int, batch_size: int, seed: int, draws: int,
               floor: Bound, cap: Bound) -> FloatArray:
    """One run: sums of shape (6, B, C, K)."""
    rng = np.random.default_rng(seed)
    mus = env.block_means(n_blocks)
    out = np.zeros((6, n_blocks, env.contexts, env.arms))
    cum = np.zeros((6, env.contexts, env.arms))
    for b in range(n_blocks):
        weights = _weights(env, policy, cum, rng, draws, floor, cap)
        arrivals = rng.multinomial(batch_size, env.shares)
        counts = np.stack([rng.multinomial(arrivals[i], weights[i]) for i in range(env.contexts)])
        out[0, b] = counts
        out[1:, b] = np.stack(_draw_cell(env, rng, counts, mus[b]))
        cum += out[:, b]
    return out


def simulate_sums(env: Environment, policy: Policy, *, n_blocks: int, batch_size: int, seeds: Sequence[int],
                  draws: int = 1_000, floor: Bound = None, cap: Bound = None) -> Sums:
    """Run ``policy`` on every seed: ``n_blocks`` allocation versions of ``batch_size`` units each (``floor`` and
    ``cap`` as ``thompson_allocation``'s; a cap needs a plain bandit)."""
    if n_blocks < 1 or batch_size < 1 or len(seeds) == 0:
        raise ValueError("need at least one block, one unit per block and one seed")
    runs = np.stack([_replicate(env, policy, n_blocks, batch_size, s, draws, floor, cap) for s in seeds])
    flat = runs.reshape(len(seeds), 6, n_blocks * env.contexts, env.arms)
    groups = np.tile(np.arange(env.contexts), n_blocks)
    return Sums(flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3], flat[:, 4], flat[:, 5], groups)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Per estimator: share of (replication, treatment) intervals covering the target lift, share rejecting
    H0: lift = 0 at ``alpha``, mean interval half-width, and the empirical sd of the estimate."""

    estimator: str
    coverage: float
    rejection: float
    half_width: float
    estimate_sd: float
    replications: int
    #: per treatment (arms 1..K−1): share of replications rejecting H0, mean half-width
    rejection_by_arm: tuple[float, ...] = ()
    half_width_by_arm: tuple[float, ...] = ()


def estimates(sums: Sums, kind: Kind, alpha: float = 0.05, contextual: bool = False) -> dict[str, ArmEstimates]:
    """The three estimators' lift estimates from simulated sums (arrays (S, K))."""
    groups = sums.groups if contextual else None
    s = sums
    if kind == "ratio":
        six = (s.n, s.sum_y, s.sum_squares_y, s.sum_x, s.sum_squares_x, s.sum_xy)
        return {"adaptive_weighted": adaptive_ratio_estimates(*six, alpha=alpha, groups=groups).pooled,
                "stratified": stratified_ratio_estimates(*six, alpha=alpha),
                "naive": naive_ratio_estimates(*six, alpha=alpha)}
    three = (s.n, s.sum_y, s.sum_squares_y)
    return {"adaptive_weighted": adaptive_estimates(*three, alpha=alpha, groups=groups).pooled,
            "stratified": stratified_estimates(*three, alpha=alpha),
            "naive": naive_estimates(*three, alpha=alpha)}


def score(est: ArmEstimates, target: FloatArray, alpha: float = 0.05) -> Calibration:
    """Coverage of ``target`` (K,), rejection rate of H0: lift = 0, over every replication and treatment."""
    low, high = est.abs_ci_low[:, 1:], est.abs_ci_high[:, 1:]
    t = target[None, 1:]
    covered = (low <= t) & (t <= high)
    reject = est.p_value[:, 1:] < alpha
    return Calibration(est.method, float(covered.mean()), float(reject.mean()),
                       float(np.nanmean((high - low) / 2.0)), float(np.nanstd(est.abs_lift[:, 1:], axis=0).mean()),
                       int(low.shape[0]), tuple(float(r) for r in reject.mean(axis=0)),
                       tuple(float(w) for w in np.nanmean((high - low) / 2.0, axis=0)))


def calibrate(env: Environment, policy: Policy, *, n_blocks: int = 20, batch_size: int = 1_000,
              seeds: Sequence[int] = range(400), draws: int = 1_000, floor: Bound = None, cap: Bound = None,
              alpha: float = 0.05) -> dict[str, Calibration]:
    """Simulate and score every estimator (contextual strata when the environment has several contexts)."""
    sums = simulate_sums(env, policy, n_blocks=n_blocks, batch_size=batch_size, seeds=seeds, draws=draws,
                         floor=floor, cap=cap)
    target = env.target_lift(n_blocks)
    return {name: score(est, target, alpha)
            for name, est in estimates(sums, env.kind, alpha, env.contexts > 1).items()}
