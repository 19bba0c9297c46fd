"""The all-experiments index gives exactly the per-experiment answers of the spec."""

from __future__ import annotations

import random

from bandits.bucketing import BUCKETS, ExperimentConfig, VariantConfig, assign
from bandits.index import assign_all, build_index
from bandits.targeting import Condition


def _bunsen_scale(layers: int = 20, per_layer: int = 35) -> list[ExperimentConfig]:
    """700 running experiments in 20 layers, plus a few unlayered, shipped and targeted ones."""
    rng = random.Random(7)
    configs = []
    width = BUCKETS // per_layer
    for layer in range(layers):
        for slot in range(per_layer):
            key = f"l{layer}-e{slot}"
            configs.append(ExperimentConfig(
                key=key, salt=key, status="running", control="c",
                variants=(VariantConfig("c", 0.5), VariantConfig("t", 0.5)),
                layer=f"layer-{layer}", layer_start=slot * width, layer_end=(slot + 1) * width,
                targeting=(Condition("country", "in", ("US",)),) if slot % 5 == 0 else (),
            ))
    for i in range(5):
        configs.append(ExperimentConfig(
            key=f"flat-{i}", salt=f"flat-{i}", status=rng.choice(["running", "shipped", "rolled_back"]),
            control="c", variants=(VariantConfig("c", 0.3), VariantConfig("t", 0.7)), traffic=0.4,
            shipped_variant="t"))
    return configs


def test_index_matches_the_naive_loop() -> None:
    configs = _bunsen_scale()
    index = build_index(configs)
    for i in range(3000):
        attrs = {"country": "US"} if i % 2 else {"country": "FR"}
        unit = f"unit-{i}"
        naive = [r for c in configs if (r := assign(c, unit, attrs)) is not None]
        fast = assign_all(index, unit, attrs)
        assert sorted((r.experiment, r.variant) for r in fast) == sorted((r.experiment, r.variant) for r in naive)


def test_each_unit_is_in_at_most_one_experiment_per_layer() -> None:
    index = build_index(_bunsen_scale())
    for i in range(500):
        layered = [r.experiment for r in assign_all(index, f"u{i}", {"country": "US"}) if r.experiment.startswith("l")]
        layers = [name.split("-")[0] for name in layered]
        assert len(layers) == len(set(layers))
