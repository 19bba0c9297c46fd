"""Seeded simulation harness for allocation policies: regret, traffic share, estimate bias/coverage.

Environment: K arms with Bernoulli or Gaussian rewards whose means may drift multiplicatively over
time (the base rate of block b of ``batch_size`` units is ``means · drift^((b + 1/2)/B)`` for B
blocks — constant within a block, so every policy faces the same environment).

Policies:

* ``"uniform"`` — equal weights throughout (the A/B baseline).
* ``"thompson_batched"`` — the service's policy: every ``batch_size`` units a new allocation
  version from ``bandits.thompson.thompson_allocation`` (with its floor), served by a multinomial
  draw of the batch's arm counts; rewards are drawn per arm in one call (binomial, or for Gaussian
  arms the exact pair ȳ ~ N(μ, σ²/n), (n−1)s²/σ² ~ χ²_{n−1}).
* ``"thompson_per_unit"`` — textbook Thompson sampling (Beta(1, 1) priors, one posterior draw per
  arm per unit, update after every unit), Bernoulli only: the reference the batched policy is
  compared with.  It is inherently sequential; the loop runs over units but is vectorised across
  seeds (one (S, K) Beta draw per step), ~10 µs per unit for all seeds together.

Reported per seed: cumulative (pseudo-)regret Σ_t (μ*_t − μ_{a_t,t}) at the end of every block,
share of traffic to the best arm, and the per-(block × arm) sufficient statistics, from which the
stratified and naive lift estimates (``scorecards.stratified``) are compared with the true lift
averaged over the experiment's population.  For the per-unit policy the blocks play the role of
allocation versions (an approximation: its weights also move within a block).

Seeding: batched policies use ``numpy.random.default_rng(seed)`` per seed; the per-unit policy,
vectorised across seeds, uses one generator seeded with the whole seed list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bandits.posteriors import ArmStats, MetricKind
from bandits.thompson import thompson_allocation
from scorecards.stratified import ArmEstimates, EstimateMethod, naive_estimates, stratified_estimates

FloatArray = npt.NDArray[np.float64]
PolicyName = Literal["uniform", "thompson_batched", "thompson_per_unit"]
RewardKind = Literal["bernoulli", "gaussian"]
POLICIES: tuple[PolicyName, ...] = ("uniform", "thompson_batched", "thompson_per_unit")


@dataclass(frozen=True, slots=True)
class BanditEnvironment:
    """Arms and their (possibly drifting) reward distributions.

    Args:
        means: per-arm mean at drift factor 1 (success probabilities for Bernoulli arms).
        kind: ``"bernoulli"`` or ``"gaussian"``.
        sd: per-unit standard deviation of Gaussian rewards.
        drift: total multiplicative change of every arm's mean over the horizon (1 = stationary).
        control: index of the control arm for lift estimates.
    """

    means: tuple[float, ...]
    kind: RewardKind = "bernoulli"
    sd: float = 1.0
    drift: float = 1.0
    control: int = 0

    def __post_init__(self) -> None:
        if len(self.means) < 2:
            raise ValueError("need at least two arms")
        if self.kind not in ("bernoulli", "gaussian"):
            raise ValueError(f"kind must be bernoulli or gaussian, got {self.kind!r}")
        if self.drift <= 0 or self.sd <= 0:
            raise ValueError("drift and sd must be positive")
        if not 0 <= self.control < len(self.means):
            raise ValueError("control index out of range")
        if self.kind == "bernoulli":
            top = max(self.means) * max(1.0, self.drift)
            if min(self.means) < 0 or top > 1:
                raise ValueError("Bernoulli means times drift must stay within [0, 1]")

    def block_means(self, n_blocks: int) -> FloatArray:
        """Per-block arm means, shape (n_blocks, K): means · drift^((b + 1/2)/n_blocks)."""
        factor = self.drift ** ((np.arange(n_blocks) + 0.5) / n_blocks)
        return factor[:, None] * np.asarray(self.means, dtype=np.float64)[None, :]


@dataclass(frozen=True, slots=True, eq=False)
class SimulationResult:
    """Outcome of ``simulate`` over S seeds, B blocks and K arms.

    Attributes:
        policy, environment, horizon, batch_size, seeds: the inputs.
        checkpoints: units served at the end of each block, shape (B,).
        cumulative_regret: shape (S, B).
        counts: units per arm over the whole run, shape (S, K).
        best_arm_share: share of units sent to the best arm (argmax of ``means``), shape (S,).
        n, sums, sum_squares: per (seed, block, arm) sufficient statistics, shape (S, B, K).
        target_lift: true lift of each arm vs control averaged over blocks (B weights), shape (K,).
        stratified, naive: lift estimates with arrays of shape (S, K).
    """

    policy: PolicyName
    environment: BanditEnvironment
    horizon: int
    batch_size: int
    seeds: tuple[int, ...]
    checkpoints: npt.NDArray[np.int64]
    cumulative_regret: FloatArray
    counts: FloatArray
    best_arm_share: FloatArray
    n: FloatArray
    sums: FloatArray
    sum_squares: FloatArray
    target_lift: FloatArray
    stratified: ArmEstimates
    naive: ArmEstimates

    @property
    def mean_regret(self) -> float:
        """Cumulative regret at the horizon, averaged over seeds."""
        return float(self.cumulative_regret[:, -1].mean())

    def estimates(self, method: EstimateMethod) -> ArmEstimates:
        """The ``"stratified"`` or ``"naive"`` estimates."""
        return self.stratified if method == "stratified" else self.naive

    def lift_error(self, method: EstimateMethod) -> FloatArray:
        """Estimated minus true absolute lift, shape (S, K)."""
        return self.estimates(method).abs_lift - self.target_lift[None, :]

    def lift_coverage(self, method: EstimateMethod) -> FloatArray:
        """Share of seeds whose lift interval contains the true lift, shape (K,)."""
        est = self.estimates(method)
        hit = (est.abs_ci_low <= self.target_lift) & (self.target_lift <= est.abs_ci_high)
        return hit.mean(axis=0)


def lai_robbins_bound(means: Sequence[float], horizon: int) -> float:
    """Asymptotic regret lower bound for Bernoulli arms, Σ_{i: Δ_i>0} Δ_i / KL(p_i, p*) · ln T.

    Lai & Robbins (1985), "Asymptotically efficient adaptive allocation rules", Thm 2, with the
    Bernoulli KL divergence KL(p, q) = p ln(p/q) + (1 − p) ln((1 − p)/(1 − q)).
    """
    p = np.asarray(means, dtype=np.float64)
    best = float(p.max())
    if not (0 < best < 1) or np.any(p <= 0):
        raise ValueError("Bernoulli means must be in (0, 1)")
    total = 0.0
    for pi in p[p < best]:
        kl = pi * math.log(pi / best) + (1 - pi) * math.log((1 - pi) / (1 - best))
        total += (best - pi) / kl
    return total * math.log(horizon)


def _draw_rewards(env: BanditEnvironment, rng: np.random.Generator, counts: npt.NDArray[np.int64],
                  mu: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Σy and Σy² of ``counts`` units per arm with means ``mu`` (exact sufficient-statistic draws)."""
    if env.kind == "bernoulli":
        successes = rng.binomial(counts, mu).astype(np.float64)
        return successes, successes
    n = counts.astype(np.float64)
    has = n > 0
    safe_n = np.where(has, n, 1.0)
    ybar = mu + env.sd / np.sqrt(safe_n) * rng.standard_normal(n.shape)
    # why: for Normal data ȳ and (n−1)s² are independent with (n−1)s²/σ² ~ χ²_{n−1}, so the pair
    # reproduces Σy and Σy² exactly without drawing each unit.
    centred_ss = env.sd**2 * 2.0 * rng.standard_gamma(np.maximum(n - 1.0, 1.0) / 2.0) * (n >= 2)
    total = np.where(has, n * ybar, 0.0)
    return total, np.where(has, centred_ss + n * ybar**2, 0.0)


def _simulate_batched(env: BanditEnvironment, policy: PolicyName, n_blocks: int, batch_size: int,
                      seed: int, floor: float | Sequence[float] | None, cap: float | Sequence[float] | None,
                      draws: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    k = len(env.means)
    mus = env.block_means(n_blocks)
    kind: MetricKind = "proportion" if env.kind == "bernoulli" else "mean"
    n = np.zeros((n_blocks, k))
    sums = np.zeros((n_blocks, k))
    sq = np.zeros((n_blocks, k))
    regret = np.zeros(n_blocks)
    tot_n, tot_s, tot_sq = np.zeros(k), np.zeros(k), np.zeros(k)
    for b in range(n_blocks):
        if policy == "uniform":
            weights = np.full(k, 1.0 / k)
        else:
            stats = [ArmStats(int(tot_n[i]), float(tot_s[i]), float(tot_sq[i])) for i in range(k)]
            alloc = thompson_allocation(stats, kind, rng, draws=draws, floor=floor, cap=cap)
            weights = np.asarray(alloc.weights)
        counts = rng.multinomial(batch_size, weights)
        s, ss = _draw_rewards(env, rng, counts, mus[b])
        n[b], sums[b], sq[b] = counts, s, ss
        tot_n += counts
        tot_s += s
        tot_sq += ss
        regret[b] = float(np.dot(counts, mus[b].max() - mus[b]))
    return n, sums, sq, regret


def _simulate_per_unit(env: BanditEnvironment, n_blocks: int, batch_size: int,
                       seeds: Sequence[int]) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    if env.kind != "bernoulli":
        raise ValueError("thompson_per_unit is implemented for Bernoulli arms only")
    rng = np.random.default_rng(list(seeds))
    s_count, k = len(seeds), len(env.means)
    mus = env.block_means(n_blocks)
    alpha = np.ones((s_count, k))
    beta = np.ones((s_count, k))
    rows = np.arange(s_count)
    n = np.zeros((s_count, n_blocks, k))
    sums = np.zeros((s_count, n_blocks, k))
    regret = np.zeros((s_count, n_blocks))
    arms = np.empty((s_count, batch_size), dtype=np.intp)
    offsets = (rows * k)[:, None]
    for b in range(n_blocks):
        mu = mus[b]
        uniforms = rng.random((s_count, batch_size))
        wins = np.empty((s_count, batch_size), dtype=bool)
        for j in range(batch_size):
            arm = rng.beta(alpha, beta).argmax(axis=1)
            win = uniforms[:, j] < mu[arm]
            alpha[rows, arm] += win
            beta[rows, arm] += ~win
            arms[:, j] = arm
            wins[:, j] = win
        flat = (offsets + arms).ravel()
        n[:, b] = np.bincount(flat, minlength=s_count * k).reshape(s_count, k)
        sums[:, b] = np.bincount(flat, weights=wins.ravel(), minlength=s_count * k).reshape(s_count, k)
        regret[:, b] = n[:, b] @ (mu.max() - mu)
    return n, sums, sums.copy(), regret


def simulate(
    env: BanditEnvironment,
    policy: PolicyName,
    *,
    horizon: int,
    batch_size: int,
    seeds: Sequence[int],
    floor: float | Sequence[float] | None = None,
    cap: float | Sequence[float] | None = None,
    draws: int = 2_000,
    alpha: float = 0.05,
) -> SimulationResult:
    """Run ``policy`` for ``horizon`` units in blocks of ``batch_size`` on every seed.

    Args:
        env: the arms (``BanditEnvironment``).
        policy: ``"uniform" | "thompson_batched" | "thompson_per_unit"``.
        horizon: units per run; a multiple of ``batch_size``.
        batch_size: units per allocation version (batched policies) / per reporting block.
        seeds: one run per seed.
        floor, cap: passed to ``thompson_allocation`` (default floor 1 %/K per arm).
        draws: Monte Carlo draws per allocation update (2 000 keeps P(best) within ~±0.01 and the
            simulation fast; the service default is 10 000).
        alpha: 1 − confidence level of the lift intervals.

    Returns:
        A ``SimulationResult`` (arrays shaped (S, B) / (S, K) / (S, B, K)).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if batch_size < 1 or horizon < batch_size or horizon % batch_size:
        raise ValueError("horizon must be a positive multiple of batch_size")
    if len(seeds) == 0:
        raise ValueError("need at least one seed")
    n_blocks = horizon // batch_size
    if policy == "thompson_per_unit":
        n, sums, sq, regret = _simulate_per_unit(env, n_blocks, batch_size, seeds)
    else:
        runs = [_simulate_batched(env, policy, n_blocks, batch_size, s, floor, cap, draws) for s in seeds]
        n, sums, sq, regret = (np.stack(parts) for parts in zip(*runs, strict=True))
    mus = env.block_means(n_blocks)
    counts = n.sum(axis=1)
    best = int(np.argmax(env.means))
    return SimulationResult(
        policy=policy,
        environment=env,
        horizon=horizon,
        batch_size=batch_size,
        seeds=tuple(int(s) for s in seeds),
        checkpoints=np.arange(1, n_blocks + 1, dtype=np.int64) * batch_size,
        cumulative_regret=np.cumsum(regret, axis=1),
        counts=counts,
        best_arm_share=counts[:, best] / horizon,
        n=n,
        sums=sums,
        sum_squares=sq,
        target_lift=(mus - mus[:, env.control : env.control + 1]).mean(axis=0),
        stratified=stratified_estimates(n, sums, sq, env.control, alpha),
        naive=naive_estimates(n, sums, sq, env.control, alpha),
    )
