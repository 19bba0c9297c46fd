"""100k random units: titrate_sdk and the server's bandits.bucketing give the same answer on every config."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from titrate_sdk import Client

from bandits.bucketing import assign, experiment_config_from_document
from tests.sdk.conftest import experiment_doc

N_UNITS = 100_000
NONE = "__not-in__"


def _experiment(key: str, **overrides: Any) -> dict[str, Any]:
    return experiment_doc(key, **overrides)


def _variants(*weights: float) -> list[dict[str, Any]]:
    names = ["control", "a", "b", "c", "d", "e"]
    return [{"key": names[i], "weight": w, "payload": {"arm": i}} for i, w in enumerate(weights)]


TARGETING = [
    {"attribute": "country", "op": "in", "values": ["US", "CA"]},
    {"attribute": "age", "op": "gte", "values": [18]},
    {"attribute": "platform", "op": "neq", "values": ["web"]},
]

CONFIGS = {
    "fixed-50-50": _experiment("fixed"),
    "three-way": _experiment("three", variants=_variants(0.5, 0.3, 0.2)),
    "thirds-with-zero": _experiment("thirds", variants=_variants(1 / 3, 0.0, 1 / 3, 1 / 3)),
    "targeted": _experiment("targeted", targeting=TARGETING),
    "layered": _experiment(
        "layered", layer="search", layer_start=2000, layer_end=5000, traffic=0.3, salt="layered-salt"
    ),
    "traffic-gated": _experiment("gated", traffic=0.25),
    "ramp-95-5": _experiment("ramp", variants=_variants(0.95, 0.05), allocation_version=3),
    "bandit-4-arms": _experiment(
        "bandit", variants=_variants(0.6113, 0.2207, 0.1288, 0.0392), allocation_version=17, traffic=0.8
    ),
    "shipped": _experiment("shipped", status="shipped", shipped_variant="treatment", targeting=TARGETING[:1]),
    "rolled-back": _experiment("rolled", status="rolled_back", traffic=0.5),
}


def _units(rng: random.Random, n: int) -> list[str]:
    makers = [
        lambda: f"u-{rng.randrange(10**9)}",
        lambda: uuid.UUID(int=rng.getrandbits(128)).hex,
        lambda: str(rng.randrange(10**12)),
        lambda: "".join(rng.choice("aé😀Z9 :.-") for _ in range(rng.randrange(0, 12))),
    ]
    return [rng.choice(makers)() for _ in range(n)]


def _attributes(rng: random.Random) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if rng.random() < 0.9:
        attrs["country"] = rng.choice(["US", "CA", "DE", "us", 1])
    if rng.random() < 0.9:
        attrs["age"] = rng.choice([17, 18, 18.0, 30, "30", True, 65.5])
    if rng.random() < 0.7:
        attrs["platform"] = rng.choice(["web", "ios", "android"])
    return attrs


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_units_agree_with_server(name: str) -> None:
    doc = CONFIGS[name]
    server = experiment_config_from_document(doc)
    rng = random.Random(name)
    units = _units(rng, N_UNITS)
    attribute_sets = [_attributes(rng) for _ in range(64)]
    key = doc["key"]
    with Client("http://127.0.0.1:9", "k", start=False, log_exposures=False) as client:
        assert client.set_config({"version": 1, "experiments": [doc]})
        mismatches = 0
        seen_variants: set[str] = set()
        for i, unit in enumerate(units):
            attrs = attribute_sets[i % 64]
            expected = assign(server, unit, attrs)
            want = expected.variant if expected is not None else NONE
            seen_variants.add(want)
            if client.get_variant(key, unit, attrs, default=NONE) != want:
                mismatches += 1
            if i % 10 == 0:
                got = client.assign(unit, attrs).get(key)
                if (got.variant if got else NONE) != want or (
                    got is not None and got.allocation_version != expected.allocation_version
                ):
                    mismatches += 1
        assert mismatches == 0
        # Batch scoring: one attribute mapping for the whole batch, a targeted and an untargeted one.
        for attrs in ({"country": "US", "age": 30, "platform": "ios"}, {"country": "DE"}):
            want_many = [
                a.variant if (a := assign(server, unit, attrs)) is not None else NONE for unit in units[:20_000]
            ]
            assert client.assign_many(key, units[:20_000], attrs, default=NONE) == want_many
    # The configs are not degenerate: every variant with weight shows up, and gates do exclude units.
    if doc["status"] == "running":
        assert {v["key"] for v in doc["variants"] if v["weight"] > 0} <= seen_variants
    if name in ("targeted", "layered", "traffic-gated", "bandit-4-arms", "shipped"):
        assert NONE in seen_variants
