"""The compiled layer index (one layer hash per unit, shared answers) gives exactly the spec's assignments.

Fixed inputs pin the answers (a change of which variant a unit gets would break running experiments), and
random catalogues with targeting, contextual weights, uneven weights, empty and overlapping ranges compare the
index with the naive per-experiment loop, in the index's order.
"""

from __future__ import annotations

import random

from bandits.bucketing import BUCKETS, ExperimentConfig, VariantConfig, assign
from bandits.index import assign_all, build_index, search_boundaries
from bandits.targeting import Condition


def _layered(key: str, layer: str, start: int, end: int, **extra: object) -> ExperimentConfig:
    fields: dict = {"key": key, "salt": key, "status": "running", "control": "c",
                    "variants": (VariantConfig("c", 0.5), VariantConfig("t", 0.5, {"p": 1})),
                    "layer": layer, "layer_start": start, "layer_end": end}
    fields.update(extra)
    return ExperimentConfig(**fields)  # type: ignore[arg-type]


def _catalogue(rng: random.Random, layers: int = 12) -> list[ExperimentConfig]:
    configs: list[ExperimentConfig] = []
    for layer in range(layers):
        cuts = sorted(rng.sample(range(1, BUCKETS), rng.randint(1, 9)))
        edges = [0, *cuts, BUCKETS]
        for slot, (start, end) in enumerate(zip(edges, edges[1:], strict=False)):
            if rng.random() < 0.2:
                continue  # a free range: units there are in no experiment of the layer
            weights = [rng.random() for _ in range(rng.randint(2, 4))]
            total = sum(weights)
            variants = tuple(VariantConfig(f"v{i}", w / total, {"i": i}) for i, w in enumerate(weights))
            extra: dict = {"variants": variants, "control": "v0", "allocation_version": rng.randint(1, 9)}
            if rng.random() < 0.3:
                extra["targeting"] = (Condition("country", "in", ("US", "DE")),)
            if rng.random() < 0.2:
                extra["context_attribute"] = "os"
                extra["context_weights"] = {"ios": tuple([1.0] + [0.0] * (len(variants) - 1)),
                                            "android": tuple([0.0] * (len(variants) - 1) + [1.0])}
            configs.append(_layered(f"l{layer}-e{slot}", f"layer-{layer:02d}", start, end, **extra))
    # an empty range, an overlapping layer, unlayered, shipped and rolled-back experiments
    configs.append(_layered("empty", "layer-00", 5000, 5000))
    configs.append(_layered("overlap-a", "overlapping", 0, 6000))
    configs.append(_layered("overlap-b", "overlapping", 4000, 10000))
    configs.append(ExperimentConfig(key="flat", salt="flat", status="running", control="c", traffic=0.4,
                                    variants=(VariantConfig("c", 0.3), VariantConfig("t", 0.7))))
    configs.append(ExperimentConfig(key="shipped", salt="shipped", status="shipped", control="c",
                                    shipped_variant="t", variants=(VariantConfig("c", 0.5), VariantConfig("t", 0.5))))
    configs.append(ExperimentConfig(key="rolled", salt="rolled", status="rolled_back", control="c",
                                    variants=(VariantConfig("c", 0.5), VariantConfig("t", 0.5))))
    rng.shuffle(configs)
    return configs


def test_index_equals_the_naive_loop_on_random_catalogues() -> None:
    rng = random.Random(18)
    for _ in range(4):
        configs = _catalogue(rng)
        index = build_index(configs)
        for i in range(1500):
            attrs = rng.choice([{}, {"country": "US"}, {"country": "FR", "os": "ios"}, {"os": "android"}])
            unit = rng.choice([f"unit-{i}", f"ünït-{i}", str(i)])
            naive = {r.experiment: r for c in configs if (r := assign(c, unit, attrs)) is not None}
            fast = assign_all(index, unit, attrs)
            assert len(fast) == len({r.experiment for r in fast})
            assert {r.experiment: r for r in fast} == naive


def test_overlapping_and_empty_ranges_are_not_searched() -> None:
    configs = [_layered("a", "x", 0, 6000), _layered("b", "x", 4000, 10000), _layered("e", "y", 7, 7),
               _layered("c", "y", 0, 5000)]
    index = build_index(configs)
    assert [layer.configs for layer in index.layers] == [(configs[3],)]
    assert [c.key for c in index.others] == ["a", "b"]
    # a unit in both overlapping ranges gets both experiments, as the spec's per-experiment loop says
    both = next(u for u in (f"u{i}" for i in range(1000)) if assign(configs[0], u) and assign(configs[1], u))
    assert {r.experiment for r in assign_all(index, both, None)} >= {"a", "b"}


def test_answers_for_fixed_inputs_are_pinned() -> None:
    """Which variant a unit gets must never change for a running experiment: fixed units, fixed answers."""
    configs = [_layered(f"e{i}", f"layer-{i % 3}", (i // 3) * 2500, (i // 3 + 1) * 2500) for i in range(12)]
    index = build_index(configs)
    got = {unit: sorted((r.experiment, r.variant) for r in assign_all(index, unit, {}))
           for unit in ("alice", "bob", "carol", "unit-42")}
    assert got == {unit: sorted((r.experiment, r.variant) for c in configs if (r := assign(c, unit)) is not None)
                   for unit in got}
    assert got == {
        "alice": [("e2", "t"), ("e7", "t"), ("e9", "c")],
        "bob": [("e0", "t"), ("e10", "t"), ("e8", "t")],
        "carol": [("e2", "t"), ("e7", "c"), ("e9", "c")],
        "unit-42": [("e3", "c"), ("e4", "c"), ("e5", "t")],
    }


def test_search_boundaries_keep_the_first_boundary_above_the_bucket() -> None:
    assert search_boundaries((3000, 1000, 10000)) == (3000, 3000, 10000)
    assert search_boundaries(()) == ()
