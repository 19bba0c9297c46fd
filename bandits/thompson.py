"""Batched Thompson sampling: new arm weights = posterior probability that each arm is best.

Policy stage of the bandit pipeline.  Between two allocation versions the service serves units at
fixed weights, so the per-unit Thompson rule ("draw one sample per arm, play the argmax") becomes,
in expectation over a batch, the weight vector

    p_k = P(θ_k = max_j θ_j | data)          (Thompson 1933; Scott 2010, "A modern Bayesian look at
                                             the multi-armed bandit", §3 — "randomized probability
                                             matching")

estimated by Monte Carlo over ``draws`` joint posterior draws (one vectorised argmax).  Optional
top-two Thompson sampling (Russo 2016, "Simple Bayesian algorithms for best-arm identification",
§3) replaces p by the TTTS play probabilities ψ (leader with probability β, otherwise a challenger;
see ``top_two_weights``), which keeps more traffic on the runner-up: better for *identifying* the
best arm, worse for regret.
Then ``floors.apply_floors`` applies the floor (default 1 %/K per live arm, so no arm starves and
its estimate stays valid) and caps; excluded arms (e.g. a failed guardrail) get exactly 0.

Randomness: ``rng`` is a Generator (a child seed is drawn from it) or an int seed; either way the
seed actually used is returned in ``Allocation.seed`` and ``thompson_allocation(..., rng=seed)``
reproduces the decision bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bandits.floors import apply_floors
from bandits.posteriors import (
    ArmPosteriors,
    MeanStatsLike,
    MetricKind,
    Prior,
    RatioStatsLike,
    posterior_from_stats,
)

FloatArray = npt.NDArray[np.float64]
Direction = Literal["higher_is_better", "lower_is_better"]
AllocationStatus = Literal["ok", "insufficient_data"]

#: Default total share reserved for floors, split evenly over the live arms (1 %/K each).
DEFAULT_FLOOR_TOTAL = 0.01
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ArmPosteriorSummary:
    """Posterior of one arm's metric: mean (location) and equal-tailed 95 % credible interval."""

    mean: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, slots=True)
class Allocation:
    """One allocation decision, ready to be stored as an allocation version.

    Attributes:
        weights: new traffic weights per arm (arm order of the input), ``math.fsum == 1.0``.
        prob_best: Monte Carlo P(arm is best), sums to 1 over live arms, 0 for excluded arms;
            NaN everywhere when ``status == "insufficient_data"``.
        posteriors: per-arm posterior mean and 95 % interval (NaN where the posterior is improper).
        seed: the seed of the draws; pass it back as ``rng`` to reproduce the decision.
        draws: Monte Carlo draws used.
        floor: the per-arm floors applied.
        excluded: indices of arms forced to weight 0.
        top_two: whether top-two Thompson weights were used.
        status: ``"ok"``, or ``"insufficient_data"`` when a live arm's posterior is improper
            (e.g. a ``mean`` arm with n < 2 under the reference prior): then every live arm gets
            an equal share until the data arrive (a burn-in, not an exception).
    """

    weights: tuple[float, ...]
    prob_best: tuple[float, ...]
    posteriors: tuple[ArmPosteriorSummary, ...]
    seed: int
    draws: int
    kind: MetricKind
    direction: Direction
    floor: tuple[float, ...]
    excluded: tuple[int, ...]
    top_two: bool
    status: AllocationStatus


def resolve_rng(rng: np.random.Generator | int) -> tuple[np.random.Generator, int]:
    """Return (generator, seed): an int is used as the seed; a Generator yields a fresh child seed."""
    if isinstance(rng, np.random.Generator):
        seed = int(rng.integers(0, _MAX_SEED))
    elif isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        seed = int(rng)
        if seed < 0:
            raise ValueError("seed must be non-negative")
    else:
        raise TypeError("rng must be a numpy.random.Generator or an int seed")
    return np.random.default_rng(seed), seed


def prob_best_from_draws(draws: FloatArray, live: npt.NDArray[np.bool_], direction: Direction) -> FloatArray:
    """P(arm is best) from joint draws (draws, K): share of rows in which each live arm wins.

    Excluded arms are masked with −inf (never the argmax); ``lower_is_better`` negates the draws.
    """
    signed = draws if direction == "higher_is_better" else -draws
    if not bool(np.all(live)):
        signed = np.where(live[None, :], signed, -np.inf)
    wins = np.bincount(np.argmax(signed, axis=1), minlength=draws.shape[1])
    return wins / draws.shape[0]


def top_two_weights(draws: FloatArray, direction: Direction = "higher_is_better",
                    beta: float = 0.5) -> FloatArray:
    """Top-two Thompson play probabilities ψ from joint draws (draws, K) of the live arms.

    TTTS (Russo 2016) plays the leader I ~ P(best) with probability β, otherwise a challenger.
    Russo re-draws θ until its argmax differs from I, i.e. P(J = i | I = j) = p_i / (1 − p_j); a
    Monte Carlo estimate of that ratio is unusable exactly when it matters (a clear leader: p_i and
    1 − p_j are both estimated as 0).  We take the challenger from the *same* draws as the best arm
    among those other than the leader — the row's argmax if that is not j, else its runner-up —

        q_{j→i} = P̂(top₁ = i) + P̂(top₁ = j, top₂ = i),   ψ_i = β·p_i + (1 − β)·Σ_{j≠i} p_j·q_{j→i}

    which equals Russo's rule for K = 2, names the runner-up reliably for any K, and costs one
    partial sort of the draws.  Σψ = 1 by construction.
    """
    if not 0.0 < beta < 1.0:
        raise ValueError("top_two_beta must be in (0, 1)")
    n_draws, k = draws.shape
    if k == 1:
        return np.ones(1)
    signed = -draws if direction == "higher_is_better" else draws
    # why: argpartition at kth=1 puts the best arm in column 0 and the runner-up in column 1 in
    # O(K) per row, instead of a full O(K log K) sort.
    top = np.argpartition(signed, 1, axis=1)[:, :2]
    first, second = top[:, 0], top[:, 1]
    p = np.bincount(first, minlength=k) / n_draws
    pair = np.bincount(first * k + second, minlength=k * k).reshape(k, k) / n_draws
    q = p[None, :] + pair
    np.fill_diagonal(q, 0.0)
    psi = beta * p + (1.0 - beta) * (p @ q)
    return psi / psi.sum()


def thompson_allocation(
    stats_per_arm: Sequence[MeanStatsLike] | Sequence[RatioStatsLike],
    kind: MetricKind,
    rng: np.random.Generator | int,
    draws: int = 10_000,
    floor: float | Sequence[float] | None = None,
    top_two: bool = False,
    direction: Direction = "higher_is_better",
    *,
    excluded: Collection[int] = (),
    cap: float | Sequence[float] | None = None,
    top_two_beta: float = 0.5,
    prior: Prior | None = None,
    level: float = 0.95,
) -> Allocation:
    """Thompson-sampling allocation weights from per-arm sufficient statistics.

    Args:
        stats_per_arm: K per-arm statistics (``n, sum, sum_squares``; ratio fields for ``ratio``).
        kind: ``"proportion" | "mean" | "ratio"`` (posterior family, see ``bandits.posteriors``).
        rng: Generator (a child seed is drawn) or int seed; the seed used is returned.
        draws: Monte Carlo draws; the standard error of each prob_best is ≤ 0.5/√draws (0.005 at 10k).
        floor: minimum weight per live arm, scalar or per-arm (K,); default 0.01/K_live.
        top_two: use top-two Thompson weights (Russo 2016) instead of P(best).
        direction: ``"higher_is_better"`` or ``"lower_is_better"``.
        excluded: arm indices forced to weight 0 and never counted as best (guardrail failure).
        cap: maximum weight per arm, scalar or (K,), default 1.
        top_two_beta: TTTS leader probability β.
        prior: optional ``BetaPrior`` / ``NormalInverseGammaPrior``.
        level: credible level of the per-arm posterior intervals.

    Returns:
        A frozen ``Allocation`` (weights, prob_best, posterior summaries, seed, draws, ...).
    """
    if direction not in ("higher_is_better", "lower_is_better"):
        raise ValueError(f"direction must be higher_is_better or lower_is_better, got {direction!r}")
    if int(draws) != draws or draws < 1:
        raise ValueError("draws must be a positive integer")
    k = len(stats_per_arm)
    posterior = posterior_from_stats(stats_per_arm, kind, prior)
    live = np.ones(k, dtype=bool)
    for i in excluded:
        if not 0 <= int(i) < k:
            raise ValueError(f"excluded arm index {i} out of range for {k} arms")
        live[int(i)] = False
    k_live = int(live.sum())
    if k_live == 0:
        raise ValueError("every arm is excluded; an allocation needs at least one live arm")

    # why: floors/caps apply to live arms only; an excluded arm is pinned to 0 (floor = cap = 0).
    floor_arr = np.full(k, DEFAULT_FLOOR_TOTAL / k_live) if floor is None else np.broadcast_to(
        np.asarray(floor, dtype=np.float64), (k,)).copy()
    cap_arr = np.ones(k) if cap is None else np.broadcast_to(np.asarray(cap, dtype=np.float64), (k,)).copy()
    floor_arr[~live] = 0.0
    cap_arr[~live] = 0.0

    generator, seed = resolve_rng(rng)
    low, high = posterior.interval(level)
    means = posterior.mean()
    summaries = tuple(
        ArmPosteriorSummary(float(m), float(lo_), float(hi_)) for m, lo_, hi_ in zip(means, low, high, strict=True)
    )

    if not bool(np.all(posterior.proper[live])):
        weights = apply_floors(live.astype(np.float64), floor_arr, cap_arr)
        prob_best = np.full(k, np.nan)
        status: AllocationStatus = "insufficient_data"
    else:
        # why: draw only the live arms — an excluded arm may have an improper posterior and its
        # draws would be discarded anyway.
        live_idx = np.flatnonzero(live)
        live_draws = _subset(posterior, live_idx).sample(generator, int(draws)) if k_live < k else (
            posterior.sample(generator, int(draws)))
        prob_best = np.zeros(k)
        prob_best[live_idx] = prob_best_from_draws(live_draws, np.ones(k_live, dtype=bool), direction)
        raw = prob_best
        if top_two:
            raw = np.zeros(k)
            raw[live_idx] = top_two_weights(live_draws, direction, top_two_beta)
        weights = apply_floors(raw, floor_arr, cap_arr)
        status = "ok"

    return Allocation(
        weights=tuple(float(w) for w in weights),
        prob_best=tuple(float(p) for p in prob_best),
        posteriors=summaries,
        seed=seed,
        draws=int(draws),
        kind=kind,
        direction=direction,
        floor=tuple(float(f) for f in floor_arr),
        excluded=tuple(sorted(int(i) for i in excluded)),
        top_two=top_two,
        status=status,
    )


def _subset(posterior: ArmPosteriors, idx: npt.NDArray[np.intp]) -> ArmPosteriors:
    """The same posterior family restricted to arms ``idx``."""
    subset = {f.name: getattr(posterior, f.name)[idx] for f in dataclasses.fields(posterior)}
    return dataclasses.replace(posterior, **subset)
