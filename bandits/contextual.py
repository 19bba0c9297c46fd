"""Contextual Thompson sampling over one categorical attribute: a posterior per (context value, arm).

Policy stage of the bandit pipeline for experiments whose best arm may differ by segment (platform,
country): the units of each declared value ``c`` of the context attribute get their own weights

    p_{c,k} = P(θ_{c,k} = max_j θ_{c,j} | data of context c)

from ``bandits.thompson.thompson_allocation`` on that context's statistics alone (independent
per-segment posteriors — the "disjoint" model of Li et al. 2010, *A contextual-bandit approach to
personalized news article recommendation*, §3.1, with one indicator feature per value), each with its
own floor so no arm starves in any context.  Units whose value is missing or not declared get the
*pooled* weights, computed the same way from all units together.  Arms excluded by a guardrail are
excluded in every context.

Randomness: one seed drives everything; the pooled allocation and then each context, in the declared
order, draw child seeds from ``default_rng(seed)``, so ``contextual_thompson_allocation(..., rng=seed)``
reproduces every weight vector bit for bit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bandits.posteriors import ArmStats, MeanStatsLike, MetricKind, Prior, RatioArmStats, RatioStatsLike
from bandits.thompson import Allocation, Direction, resolve_rng, thompson_allocation

StatsPerArm = Sequence[MeanStatsLike] | Sequence[RatioStatsLike]


@dataclass(frozen=True, slots=True)
class ContextualAllocation:
    """Per-context allocations plus the pooled one used for units outside the declared values.

    Attributes:
        values: the declared context values, in order (the order of ``by_value``).
        pooled: the allocation from every unit's data (units whose value is missing or undeclared).
        by_value: one allocation per declared value.
        seed: the seed of all draws; pass it back as ``rng`` to reproduce every weight vector.
    """

    values: tuple[str, ...]
    pooled: Allocation
    by_value: tuple[Allocation, ...]
    seed: int

    def weights_by_value(self) -> dict[str, tuple[float, ...]]:
        """Context value → weights (arm order of the input)."""
        return {value: alloc.weights for value, alloc in zip(self.values, self.by_value, strict=True)}


def contextual_thompson_allocation(
    pooled_stats: StatsPerArm,
    stats_by_value: Mapping[str, StatsPerArm],
    kind: MetricKind,
    rng: np.random.Generator | int,
    *,
    values: Sequence[str],
    draws: int = 10_000,
    floor: float | Sequence[float] | None = None,
    top_two: bool = False,
    direction: Direction = "higher_is_better",
    excluded: Collection[int] = (),
    prior: Prior | None = None,
) -> ContextualAllocation:
    """Thompson weights per declared context value, and pooled weights for every other unit.

    Args:
        pooled_stats: K per-arm statistics over all units.
        stats_by_value: context value → K per-arm statistics of the units with that value; a declared value
            missing here has no data yet (its posterior is the prior: an equal split until data arrive).
        kind, draws, floor, top_two, direction, excluded, prior: as ``thompson_allocation`` (per context).
        rng: Generator (a child seed is drawn) or int seed; the seed used is returned.
        values: the declared context values (unique).

    Returns:
        A frozen ``ContextualAllocation``.
    """
    if len(set(values)) != len(values):
        raise ValueError("context values must be unique")
    k = len(pooled_stats)
    for value, stats in stats_by_value.items():
        if len(stats) != k:
            raise ValueError(f"context {value!r} has {len(stats)} arms, the pooled statistics {k}")
    generator, seed = resolve_rng(rng)
    common = {"draws": draws, "floor": floor, "top_two": top_two, "direction": direction, "excluded": excluded,
              "prior": prior}
    pooled = thompson_allocation(pooled_stats, kind, generator, **common)  # type: ignore[arg-type]
    empty = _empty_stats(pooled_stats, kind)
    by_value = tuple(
        thompson_allocation(stats_by_value.get(value, empty), kind, generator, **common)  # type: ignore[arg-type]
        for value in values
    )
    return ContextualAllocation(values=tuple(values), pooled=pooled, by_value=by_value, seed=seed)


def _empty_stats(template: StatsPerArm, kind: MetricKind) -> StatsPerArm:
    """K arms without data, of the template's statistics type."""
    if kind == "ratio":
        return [RatioArmStats(0, 0.0, 0.0, 0.0, 0.0, 0.0) for _ in template]
    return [ArmStats(0, 0.0, 0.0) for _ in template]
