"""Seeded simulation of contextual vs pooled batched Thompson sampling (one categorical attribute).

Environment: C contexts (values of one attribute, e.g. platform) arriving with shares s_c, and K
Bernoulli arms whose success probability μ_{c,k} depends on the context.  Every block of
``batch_size`` units: the contexts are drawn (multinomial with s), each context's units are split
over the arms by that context's weights (multinomial), and rewards are drawn per (context, arm) cell
(binomial) — the same exact sufficient-statistic draws as ``bench.sim.simulation``.

Policies:

* ``"uniform"`` — equal weights everywhere (the A/B baseline).
* ``"thompson_pooled"`` — the non-contextual service policy: one allocation from all units' data,
  served to every context.
* ``"thompson_contextual"`` — ``bandits.contextual.contextual_thompson_allocation``: a posterior and
  weights per context.

Regret is measured against each context's own best arm, Σ_t (max_k μ_{c_t,k} − μ_{c_t,a_t}), so a
policy that plays the best arm *on average* still pays in the contexts where another arm wins.  The
per-(block × context × arm) statistics are the strata of ``scorecards.stratified``: with the blocks as
allocation versions and the contexts as segments, the stratified estimate targets the population
lift Σ_c s_c (μ_{c,k} − μ_{c,0}).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bandits.contextual import contextual_thompson_allocation
from bandits.posteriors import ArmStats
from bandits.thompson import thompson_allocation
from scorecards.stratified import ArmEstimates, stratified_estimates

FloatArray = npt.NDArray[np.float64]
ContextualPolicy = Literal["uniform", "thompson_pooled", "thompson_contextual"]
CONTEXTUAL_POLICIES: tuple[ContextualPolicy, ...] = ("uniform", "thompson_pooled", "thompson_contextual")


@dataclass(frozen=True, slots=True)
class ContextualEnvironment:
    """Contexts with arrival shares and Bernoulli arms whose means depend on the context.

    Args:
        shares: arrival share of each context (sums to 1), length C.
        means: success probability per (context, arm), C rows of K values.
        control: index of the control arm for lift estimates.
    """

    shares: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]
    control: int = 0

    def __post_init__(self) -> None:
        if len(self.shares) != len(self.means) or not self.shares:
            raise ValueError("need one row of arm means per context share")
        if any(s < 0 for s in self.shares) or abs(sum(self.shares) - 1.0) > 1e-9:
            raise ValueError("context shares must be non-negative and sum to 1")
        k = len(self.means[0])
        if k < 2 or any(len(row) != k for row in self.means):
            raise ValueError("every context needs the same number (≥ 2) of arms")
        if any(not 0.0 <= m <= 1.0 for row in self.means for m in row):
            raise ValueError("Bernoulli means must lie in [0, 1]")
        if not 0 <= self.control < k:
            raise ValueError("control index out of range")

    @property
    def mean_matrix(self) -> FloatArray:
        """μ as an array of shape (C, K)."""
        return np.asarray(self.means, dtype=np.float64)

    @property
    def target_lift(self) -> FloatArray:
        """Population lift of each arm vs control, Σ_c s_c (μ_{c,k} − μ_{c,control}), shape (K,)."""
        mu = self.mean_matrix
        return np.asarray(self.shares) @ (mu - mu[:, self.control : self.control + 1])


@dataclass(frozen=True, slots=True, eq=False)
class ContextualSimulationResult:
    """Outcome of ``simulate_contextual`` over S seeds, B blocks, C contexts and K arms.

    Attributes:
        policy, environment, horizon, batch_size, seeds: the inputs.
        cumulative_regret: regret against each context's best arm, shape (S, B).
        best_arm_share: share of units that got their context's best arm, shape (S,).
        n, sums: per (seed, block, context, arm) sufficient statistics, shape (S, B, C, K).
        stratified: lift estimates stratified by (block, context), arrays of shape (S, K).
    """

    policy: ContextualPolicy
    environment: ContextualEnvironment
    horizon: int
    batch_size: int
    seeds: tuple[int, ...]
    cumulative_regret: FloatArray
    best_arm_share: FloatArray
    n: FloatArray
    sums: FloatArray
    stratified: ArmEstimates

    @property
    def mean_regret(self) -> float:
        """Cumulative regret at the horizon, averaged over seeds."""
        return float(self.cumulative_regret[:, -1].mean())

    def lift_coverage(self) -> FloatArray:
        """Share of seeds whose stratified lift interval contains the population lift, shape (K,)."""
        target = self.environment.target_lift
        est = self.stratified
        return ((est.abs_ci_low <= target) & (target <= est.abs_ci_high)).mean(axis=0)


def _weights(policy: ContextualPolicy, n: FloatArray, s: FloatArray, rng: np.random.Generator,
             draws: int, floor: float | None) -> FloatArray:
    """(C, K) weights of the next block from the statistics so far (n, s of shape (C, K))."""
    c, k = n.shape
    if policy == "uniform":
        return np.full((c, k), 1.0 / k)

    def stats(nn: FloatArray, ss: FloatArray) -> list[ArmStats]:
        return [ArmStats(int(a), float(b), float(b)) for a, b in zip(nn, ss, strict=True)]

    if policy == "thompson_pooled":
        pooled = thompson_allocation(stats(n.sum(axis=0), s.sum(axis=0)), "proportion", rng, draws=draws, floor=floor)
        return np.tile(np.asarray(pooled.weights), (c, 1))
    values = [str(i) for i in range(c)]
    result = contextual_thompson_allocation(
        stats(n.sum(axis=0), s.sum(axis=0)), {v: stats(n[i], s[i]) for i, v in enumerate(values)}, "proportion",
        rng, values=values, draws=draws, floor=floor)
    return np.asarray([a.weights for a in result.by_value])


def _simulate_seed(env: ContextualEnvironment, policy: ContextualPolicy, n_blocks: int, batch_size: int, seed: int,
                   draws: int, floor: float | None) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    rng = np.random.default_rng(seed)
    mu = env.mean_matrix
    c, k = mu.shape
    gap = mu.max(axis=1, keepdims=True) - mu
    best = mu.argmax(axis=1)
    n = np.zeros((n_blocks, c, k))
    sums = np.zeros((n_blocks, c, k))
    regret = np.zeros(n_blocks)
    best_units = 0.0
    for b in range(n_blocks):
        weights = _weights(policy, n[:b].sum(axis=0), sums[:b].sum(axis=0), rng, draws, floor)
        arrivals = rng.multinomial(batch_size, env.shares)
        counts = np.stack([rng.multinomial(arrivals[i], weights[i]) for i in range(c)])
        n[b] = counts
        sums[b] = rng.binomial(counts, mu)
        regret[b] = float((counts * gap).sum())
        best_units += float(counts[np.arange(c), best].sum())
    return n, sums, regret, best_units


def simulate_contextual(env: ContextualEnvironment, policy: ContextualPolicy, *, horizon: int, batch_size: int,
                        seeds: Sequence[int], draws: int = 2_000, floor: float | None = None,
                        alpha: float = 0.05) -> ContextualSimulationResult:
    """Run ``policy`` for ``horizon`` units in blocks of ``batch_size`` on every seed.

    Args:
        env: contexts and arms (``ContextualEnvironment``).
        policy: ``"uniform" | "thompson_pooled" | "thompson_contextual"``.
        horizon: units per run; a multiple of ``batch_size``.
        batch_size: units per allocation version.
        seeds: one run per seed (``numpy.random.default_rng(seed)`` each).
        draws: Monte Carlo draws per allocation (the service uses 10 000).
        floor: per-arm floor (default 1 %/K, as the service).
        alpha: 1 − confidence level of the stratified lift intervals.
    """
    if policy not in CONTEXTUAL_POLICIES:
        raise ValueError(f"policy must be one of {CONTEXTUAL_POLICIES}, got {policy!r}")
    if batch_size < 1 or horizon < batch_size or horizon % batch_size:
        raise ValueError("horizon must be a positive multiple of batch_size")
    if len(seeds) == 0:
        raise ValueError("need at least one seed")
    n_blocks = horizon // batch_size
    runs = [_simulate_seed(env, policy, n_blocks, batch_size, s, draws, floor) for s in seeds]
    n = np.stack([r[0] for r in runs])
    sums = np.stack([r[1] for r in runs])
    s_count, _, c, k = n.shape
    # why: strata are (block, context) cells — within one the weights were fixed — flattened to (S, B·C, K).
    flat_n, flat_s = n.reshape(s_count, n_blocks * c, k), sums.reshape(s_count, n_blocks * c, k)
    return ContextualSimulationResult(
        policy=policy, environment=env, horizon=horizon, batch_size=batch_size, seeds=tuple(int(s) for s in seeds),
        cumulative_regret=np.cumsum(np.stack([r[2] for r in runs]), axis=1),
        best_arm_share=np.asarray([r[3] for r in runs]) / horizon,
        n=n, sums=sums, stratified=stratified_estimates(flat_n, flat_s, flat_s, env.control, alpha),
    )
