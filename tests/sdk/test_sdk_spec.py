"""titrate_sdk reproduces the published bucketing vectors (spec/bucketing_vectors.json) exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from titrate_sdk import BUCKETS, SPEC_VERSION, Client, bucket, cumulative_boundaries
from titrate_sdk._spec import compile_condition

from bandits.targeting import condition_from_document, matches

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "spec" / "bucketing_vectors.json").read_text())
NONE = "__not-in__"


def test_vector_file_matches_sdk_constants() -> None:
    assert VECTORS["spec_version"] == SPEC_VERSION
    assert VECTORS["buckets"] == BUCKETS


@pytest.mark.parametrize("case", VECTORS["hash"], ids=lambda c: f"{c['seed']}|{c['unit_id'][:12]}")
def test_hash_vectors(case: dict[str, Any]) -> None:
    assert bucket(case["seed"], case["unit_id"]) == case["bucket"]


@pytest.mark.parametrize("case", VECTORS["boundaries"], ids=lambda c: str(c["weights"]))
def test_boundary_vectors(case: dict[str, Any]) -> None:
    assert list(cumulative_boundaries(case["weights"])) == case["boundaries"]


def test_assignment_vectors() -> None:
    cases = VECTORS["assignments"]
    assert len(cases) >= 100
    with Client("http://127.0.0.1:9", "k", start=False, log_exposures=False) as client:
        for case in cases:
            cfg = case["config"]
            assert client.set_config({"version": 1, "experiments": [cfg]})
            expected = case["variant"]
            key, unit, attrs = cfg["key"], case["unit_id"], case["attributes"]
            assert client.get_variant(key, unit, attrs, default=NONE) == (expected or NONE), case
            got = client.assign(unit, attrs).get(key)
            assert (got.variant if got else None) == expected, case
            if got is not None:
                variant = next(v for v in cfg["variants"] if v["key"] == expected)
                assert dict(got.payload) == variant["payload"]
                assert got.experiment == key
                assert got.allocation_version == cfg["allocation_version"]
            assert client.assign_many(key, [unit], attrs, default=NONE) == [expected or NONE], case


def test_assignment_vectors_cover_every_status_and_gate() -> None:
    configs = [case["config"] for case in VECTORS["assignments"]]
    assert {c["status"] for c in configs} >= {"running", "shipped", "rolled_back", "paused"}
    assert any(c["layer"] for c in configs)
    assert any(c["traffic"] < 1 for c in configs)
    assert any(c["targeting"] for c in configs)


_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 2.5, -1.5, float("nan")]),
    st.sampled_from(["", "US", "CA", "1", "true"]),
)


@settings(max_examples=400, deadline=None)
@given(
    op=st.sampled_from(["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "regex"]),
    values=st.lists(_JSON_SCALARS, max_size=3),
    value=st.one_of(_JSON_SCALARS, st.just("__missing__")),
)
def test_targeting_agrees_with_server(op: str, values: list[Any], value: Any) -> None:
    doc = {"attribute": "a", "op": op, "values": values}
    attributes = {} if value == "__missing__" else {"a": value}
    assert compile_condition(doc)(attributes) == matches(condition_from_document(doc), attributes)
