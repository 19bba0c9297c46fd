"""Regenerate ``spec/bucketing_vectors.json`` from the server's implementation (bandits/).

The hash vectors are independently checked in tests against ``sha256sum``; run
``python spec/generate_vectors.py`` only when the spec version changes (cases of a new version are appended
after the old ones, so the old cases keep their units and answers).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from bandits.bucketing import SPEC_VERSION, assign, bucket, cumulative_boundaries, experiment_config_from_document

HERE = Path(__file__).parent


def _experiment(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "key": "exp", "salt": "exp", "status": "running", "type": "ab", "traffic": 1.0,
        "layer": None, "layer_start": None, "layer_end": None, "targeting": [],
        "allocation_version": 1, "control": "control", "shipped_variant": None,
        "variants": [{"key": "control", "weight": 0.5, "payload": {}},
                     {"key": "treatment", "weight": 0.5, "payload": {"x": 1}}],
    }
    doc.update(overrides)
    return doc


def _cases(configs: list[dict[str, object]], attribute_sets: list[dict[str, object]], per_config: int,
           rng: random.Random) -> list[dict[str, object]]:
    """``per_config`` random units per config, cycling through ``attribute_sets``, with the server's answer."""
    cases: list[dict[str, object]] = []
    for doc in configs:
        config = experiment_config_from_document(doc)
        for i in range(per_config):
            unit = f"unit-{rng.randrange(10**6)}"
            attrs = attribute_sets[i % len(attribute_sets)]
            result = assign(config, unit, attrs)
            cases.append({"config": doc, "unit_id": unit, "attributes": attrs,
                          "variant": None if result is None else result.variant})
    return cases


def main() -> None:
    """Writes ``spec/bucketing_vectors.json`` (seeded: a rerun writes the same file)."""
    rng = random.Random(20261123)
    seeds = ["exp", "ranker-v2", "ranker-v2:traffic", "layer:search", "ünïcødé", ""]
    units = ["u-1", "u-123", "user:42", "", "😀", "a" * 64] + [f"u-{rng.randrange(10**9)}" for _ in range(30)]
    hashes = [{"seed": s, "unit_id": u, "bucket": bucket(s, u)} for s in seeds for u in units[:12]]
    hashes += [{"seed": "exp", "unit_id": u, "bucket": bucket("exp", u)} for u in units[12:]]
    weight_sets = [[0.5, 0.5], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3], [0.0, 1.0],
                   [0.25, 0.0, 0.75], [0.99995, 0.00005], [0.1] * 10]
    boundaries = [{"weights": w, "boundaries": list(cumulative_boundaries(w))} for w in weight_sets]
    configs = [
        _experiment(),
        _experiment(key="three", salt="three-salt",
                    variants=[{"key": "control", "weight": 0.5, "payload": {}},
                              {"key": "b", "weight": 0.3, "payload": {"b": True}},
                              {"key": "c", "weight": 0.2, "payload": {}}]),
        _experiment(key="gated", salt="gated", traffic=0.2),
        _experiment(key="layered", salt="layered", traffic=0.3, layer="search", layer_start=2500,
                    layer_end=5500),
        _experiment(key="targeted", salt="targeted", targeting=[
            {"attribute": "country", "op": "in", "values": ["US", "CA"]},
            {"attribute": "age", "op": "gte", "values": [18]},
            {"attribute": "platform", "op": "neq", "values": ["ios"]}]),
        _experiment(key="shipped", salt="shipped", status="shipped", shipped_variant="treatment"),
        _experiment(key="rolled", salt="rolled", status="rolled_back", traffic=0.1),
        _experiment(key="paused", salt="paused", status="paused"),
    ]
    attribute_sets = [{}, {"country": "US", "age": 30}, {"country": "CA", "age": 18, "platform": "ios"},
                      {"country": "FR", "age": 40}, {"country": "US", "age": "30"}, {"country": "US", "age": 17.5},
                      {"country": "US", "age": True}]
    assignments = _cases(configs, attribute_sets, 25, rng)
    # spec §3.6 (version 2): contextual weights by the string value of one attribute; appended after the
    # version-1 cases so those keep their units.
    contextual = [
        _experiment(key="contextual", salt="contextual",
                    variants=[{"key": "control", "weight": 0.34, "payload": {}},
                              {"key": "b", "weight": 0.33, "payload": {}},
                              {"key": "c", "weight": 0.33, "payload": {"c": 1}}],
                    context={"attribute": "platform", "weights": {"android": [0.7, 0.1, 0.2],
                                                                  "ios": [0.1, 0.8, 0.1], "web": [0.0, 0.0, 1.0]}}),
        _experiment(key="contextual-gated", salt="contextual-gated", traffic=0.5,
                    context={"attribute": "platform", "weights": {"ios": [0.0, 1.0]}}),
    ]
    context_attributes = [{}, {"platform": "ios"}, {"platform": "android"}, {"platform": "web"},
                          {"platform": "IOS"}, {"platform": 1}, {"platform": None}, {"platform": ["ios"]},
                          {"platform": "tv"}, {"country": "ios"}]
    assignments += _cases(contextual, context_attributes, 30, rng)
    out = {"spec_version": SPEC_VERSION, "buckets": 10000, "hash": hashes, "boundaries": boundaries,
           "assignments": assignments}
    (HERE / "bucketing_vectors.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
