"""SDK ``assign`` through its layer index answers exactly what the per-experiment spec and the service answer.

A catalogue of many layers (uneven ranges, free ranges, targeting, contextual weights, an empty range, an
overlapping layer, unlayered, shipped and rolled-back experiments): for random units, ``Client.assign`` equals
the per-experiment ``CompiledExperiment.evaluate`` loop in the document's order, and the service's
``bandits.index.assign_all``; exposures are logged in the document's order as before.
"""

from __future__ import annotations

import random
from typing import Any

from titrate_sdk import Client
from titrate_sdk._spec import compile_document

from bandits.bucketing import BUCKETS, experiment_config_from_document
from bandits.index import assign_all, build_index
from tests.sdk.conftest import config_doc, experiment_doc


def _catalogue(rng: random.Random, layers: int = 10) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for layer in range(layers):
        cuts = sorted(rng.sample(range(1, BUCKETS), rng.randint(1, 8)))
        edges = [0, *cuts, BUCKETS]
        for slot, (start, end) in enumerate(zip(edges, edges[1:], strict=False)):
            if rng.random() < 0.2:
                continue
            weights = [rng.random() for _ in range(rng.randint(2, 4))]
            total = sum(weights)
            extra: dict[str, Any] = {
                "variants": [{"key": f"v{i}", "weight": w / total, "payload": {"i": i}} for i, w in enumerate(weights)],
                "control": "v0", "allocation_version": rng.randint(1, 9)}
            if rng.random() < 0.3:
                extra["targeting"] = [{"attribute": "country", "op": "in", "values": ["US", "DE"]}]
            if rng.random() < 0.2:
                n = len(weights)
                extra["context"] = {"attribute": "os", "weights": {"ios": [1.0] + [0.0] * (n - 1),
                                                                   "android": [0.0] * (n - 1) + [1.0]}}
            docs.append(experiment_doc(f"l{layer}-e{slot}", layer=f"layer-{layer}", layer_start=start,
                                       layer_end=end, **extra))
    docs += [experiment_doc("empty", layer="layer-0", layer_start=4000, layer_end=4000),
             experiment_doc("unranged", layer="layer-1"),
             experiment_doc("overlap-a", layer="overlapping", layer_start=0, layer_end=6000),
             experiment_doc("overlap-b", layer="overlapping", layer_start=4000, layer_end=10000),
             experiment_doc("flat", traffic=0.4),
             experiment_doc("everyone"),
             experiment_doc("shipped", status="shipped", shipped_variant="treatment"),
             experiment_doc("rolled", status="rolled_back"),
             experiment_doc("paused", status="paused")]
    rng.shuffle(docs)
    return docs


def test_assign_equals_the_per_experiment_loop_and_the_service() -> None:
    rng = random.Random(185)
    for _ in range(3):
        docs = _catalogue(rng)
        document = config_doc(*docs)
        snapshot = compile_document(document)
        assert snapshot.layers
        assert snapshot.flat
        index = build_index(experiment_config_from_document(d) for d in docs if d["status"] != "paused")
        with Client("http://127.0.0.1:9", "k", start=False, log_exposures=False, config=document) as client:
            for i in range(1500):
                attrs = rng.choice([None, {}, {"country": "US"}, {"country": "FR", "os": "ios"}, {"os": "android"}])
                unit = rng.choice([f"unit-{i}", f"ünït-{i}", str(i), "😀" * (i % 4)])
                naive = {key: a for key, exp in snapshot.experiments.items()
                         if (a := exp.evaluate(unit.encode(), attrs)) is not None}
                got = client.assign(unit, attrs)
                assert list(got.items()) == list(naive.items())  # same answers, in the document's order
                service = {r.experiment: (r.variant, r.allocation_version) for r in assign_all(index, unit, attrs)}
                assert {k: (a.variant, a.allocation_version) for k, a in got.items()} == service


def test_overlapping_layers_stay_flat_and_empty_ranges_out_of_the_index() -> None:
    snapshot = compile_document(config_doc(
        experiment_doc("a", layer="x", layer_start=0, layer_end=6000),
        experiment_doc("b", layer="x", layer_start=4000, layer_end=10000),
        experiment_doc("c", layer="y", layer_start=5000, layer_end=10000),
        experiment_doc("d", layer="y", layer_start=0, layer_end=5000),
        experiment_doc("e", layer="y", layer_start=7, layer_end=7),
    ))
    assert [(prefix, slots[0], slots[4999], slots[5000], slots[9999], [(e[0], e[1]) for e in entries])
            for prefix, slots, _, entries in snapshot.layers] == [(b"layer:y.", 1, 1, 2, 2, [(3, "d"), (2, "c")])]
    assert [(position, exp.key) for position, exp in snapshot.flat] == [(0, "a"), (1, "b"), (4, "e")]


def test_exposures_of_assign_follow_the_document_order() -> None:
    docs = [experiment_doc(f"e{i}", layer=f"layer-{i % 2}", layer_start=0, layer_end=BUCKETS) for i in (3, 2)]
    docs.append(experiment_doc("a-flat"))
    with Client("http://127.0.0.1:9", "k", start=False, config=config_doc(*docs)) as client:
        assert list(client.assign("unit-1")) == ["e3", "e2", "a-flat"]
        assert [row[0] for row in client._exposures] == ["e3", "e2", "a-flat"]


def test_experiments_with_equal_weights_share_one_bucket_table() -> None:
    snapshot = compile_document(config_doc(*(experiment_doc(f"e{i}") for i in range(50))))
    tables = {id(exp.index_table) for exp in snapshot.experiments.values()}
    assert len(tables) == 1
