"""An index over many running experiments so one unit is assigned to all of them in O(layers), not O(experiments).

Within a layer at most one experiment owns any bucket (spec/bucketing.md §3.3), so the layer's hash is
computed once per unit and a binary search finds the only experiment that can include the unit. The result
is exactly ``[assign(c, unit, attrs) for c in configs]`` without the ``None``s — the spec is unchanged.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bandits.bucketing import Assignment, ExperimentConfig, assign, bucket, layer_seed


@dataclass(frozen=True, slots=True)
class _Layer:
    seed: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    configs: tuple[ExperimentConfig, ...]


@dataclass(frozen=True, slots=True)
class ExperimentIndex:
    """Experiments grouped for fast all-experiment assignment: running layered ones by layer, the rest flat."""

    layers: tuple[_Layer, ...]
    others: tuple[ExperimentConfig, ...]


def build_index(configs: Iterable[ExperimentConfig]) -> ExperimentIndex:
    """Group configs: running experiments with a layer range go to their layer, everything else is evaluated
    one by one (unlayered, shipped, rolled back)."""
    by_layer: dict[str, list[ExperimentConfig]] = {}
    others: list[ExperimentConfig] = []
    for config in configs:
        if (config.status == "running" and config.layer is not None and config.layer_start is not None
                and config.layer_end is not None):
            by_layer.setdefault(config.layer, []).append(config)
        else:
            others.append(config)
    layers = []
    for name, members in sorted(by_layer.items()):
        members.sort(key=lambda c: c.layer_start or 0)
        layers.append(_Layer(
            seed=layer_seed(name),
            starts=tuple(c.layer_start or 0 for c in members),
            ends=tuple(c.layer_end or 0 for c in members),
            configs=tuple(members),
        ))
    return ExperimentIndex(layers=tuple(layers), others=tuple(others))


def assign_all(index: ExperimentIndex, unit_id: str, attributes: Mapping[str, Any]) -> list[Assignment]:
    """Every assignment of ``unit_id`` across the indexed experiments (spec/bucketing.md §3)."""
    results: list[Assignment] = []
    for layer in index.layers:
        layer_bucket = bucket(layer.seed, unit_id)
        position = bisect.bisect_right(layer.starts, layer_bucket) - 1
        if position >= 0 and layer_bucket < layer.ends[position]:
            result = assign(layer.configs[position], unit_id, attributes)
            if result is not None:
                results.append(result)
    for config in index.others:
        result = assign(config, unit_id, attributes)
        if result is not None:
            results.append(result)
    return results
