"""The bucketing spec: published vectors, an independent hash check, and the statistical properties."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from bandits.bucketing import (
    BUCKETS,
    ExperimentConfig,
    VariantConfig,
    assign,
    bucket,
    cumulative_boundaries,
    experiment_config_from_document,
)
from bandits.targeting import Condition, matches

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "spec" / "bucketing_vectors.json").read_text())


def _config(weights: list[float], salt: str = "exp", status: str = "running", **kwargs: object) -> ExperimentConfig:
    variants = tuple(VariantConfig(key=f"v{i}", weight=w) for i, w in enumerate(weights))
    return ExperimentConfig(key=salt, salt=salt, status=status, variants=variants, control="v0",
                            **kwargs)  # type: ignore[arg-type]


def test_hash_vectors_reproduce() -> None:
    for vector in VECTORS["hash"]:
        assert bucket(vector["seed"], vector["unit_id"]) == vector["bucket"], vector


@pytest.mark.parametrize(("seed", "unit"), [("exp", "u-1"), ("ranker-v2", "user:42"), ("layer:search", "😀")])
def test_hash_matches_sha256sum(seed: str, unit: str) -> None:
    # Independent of Python's hashlib: the coreutils binary computes the digest.
    digest = subprocess.run(["sha256sum"], input=f"{seed}.{unit}".encode(), capture_output=True, check=True)
    expected = int(digest.stdout[:16], 16) % BUCKETS
    assert bucket(seed, unit) == expected


def test_boundary_vectors_reproduce() -> None:
    for vector in VECTORS["boundaries"]:
        assert list(cumulative_boundaries(vector["weights"])) == vector["boundaries"]


def test_assignment_vectors_reproduce() -> None:
    for vector in VECTORS["assignments"]:
        result = assign(experiment_config_from_document(vector["config"]), vector["unit_id"], vector["attributes"])
        assert (None if result is None else result.variant) == vector["variant"], vector


def _variants(config: ExperimentConfig, units: list[str]) -> list[str | None]:
    out = []
    for unit in units:
        result = assign(config, unit)
        out.append(None if result is None else result.variant)
    return out


UNITS = [f"unit-{i}" for i in range(100_000)]


def test_weights_050_030_020_on_100k_units_pass_chi_square() -> None:
    counts = np.unique(np.array(_variants(_config([0.5, 0.3, 0.2]), UNITS)), return_counts=True)[1]
    p_value = stats.chisquare(counts, f_exp=np.array([0.5, 0.3, 0.2]) * len(UNITS)).pvalue
    assert p_value > 0.001, counts


def test_a_biased_hash_would_fail_the_same_check() -> None:
    # The check can fail: a 0.51/0.29/0.20 split at 100k units is rejected.
    counts = np.array([51_000, 29_000, 20_000])
    assert stats.chisquare(counts, f_exp=np.array([0.5, 0.3, 0.2]) * 100_000).pvalue < 0.001


def test_experiments_with_different_salts_are_independent() -> None:
    first = _variants(_config([0.5, 0.5], salt="alpha"), UNITS)
    second = _variants(_config([0.5, 0.5], salt="beta"), UNITS)
    table = np.zeros((2, 2))
    for a, b in zip(first, second, strict=True):
        table[int(a == "v1"), int(b == "v1")] += 1
    assert stats.chi2_contingency(table).pvalue > 0.001, table


def test_layer_ranges_make_experiments_mutually_exclusive() -> None:
    first = _config([0.5, 0.5], salt="a", layer="search", layer_start=0, layer_end=4000, traffic=0.4)
    second = _config([0.5, 0.5], salt="b", layer="search", layer_start=4000, layer_end=10000, traffic=0.6)
    in_first = {u for u, v in zip(UNITS, _variants(first, UNITS), strict=True) if v is not None}
    in_second = {u for u, v in zip(UNITS, _variants(second, UNITS), strict=True) if v is not None}
    assert not in_first & in_second
    assert abs(len(in_first) / len(UNITS) - 0.4) < 0.01
    assert len(in_first) + len(in_second) == len(UNITS)


def test_raising_traffic_only_adds_units() -> None:
    low = _variants(_config([0.5, 0.5], traffic=0.1), UNITS)
    high = _variants(_config([0.5, 0.5], traffic=0.2), UNITS)
    kept = [(a, b) for a, b in zip(low, high, strict=True) if a is not None]
    assert kept
    assert all(a == b for a, b in kept)
    assert abs(sum(v is not None for v in high) / len(UNITS) - 0.2) < 0.01


def test_shrinking_control_only_moves_units_from_control_to_treatment() -> None:
    before = _variants(_config([0.95, 0.05]), UNITS[:20_000])
    after = _variants(_config([0.80, 0.20]), UNITS[:20_000])
    assert all(not (b == "v1" and a == "v0") for b, a in zip(before, after, strict=True))


def test_shipped_and_rolled_back_ignore_traffic_and_do_not_expose() -> None:
    shipped = _config([0.5, 0.5], traffic=0.01, status="shipped", shipped_variant="v1")
    rolled = _config([0.5, 0.5], traffic=0.01, status="rolled_back")
    for unit in UNITS[:200]:
        s, r = assign(shipped, unit), assign(rolled, unit)
        assert s is not None
        assert s.variant == "v1"
        assert not s.exposed
        assert r is not None
        assert r.variant == "v0"
        assert not r.exposed
    assert assign(_config([0.5, 0.5], status="paused"), "u") is None


@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=12))
def test_boundaries_are_monotone_and_end_at_buckets(raw: list[float]) -> None:
    total = sum(raw)
    weights = [w / total for w in raw] if total > 0 else [1.0 / len(raw)] * len(raw)
    boundaries = cumulative_boundaries(weights)
    assert boundaries[-1] == BUCKETS
    assert all(b >= a for a, b in zip(boundaries, boundaries[1:], strict=False))


@pytest.mark.parametrize(("op", "values", "attrs", "expected"), [
    ("eq", ["US"], {"c": "US"}, True), ("eq", [1], {"c": 1.0}, True), ("eq", ["1"], {"c": 1}, False),
    ("neq", ["US"], {}, True), ("in", ["US", "CA"], {"c": "CA"}, True), ("in", ["US"], {}, False),
    ("not_in", ["US"], {"c": "FR"}, True), ("not_in", ["US"], {}, True), ("gt", [18], {"c": 19}, True),
    ("gte", [18], {"c": 18}, True), ("lt", [18], {"c": "17"}, False), ("lte", [1], {"c": True}, False),
    ("eq", [True], {"c": 1}, False), ("eq", [True], {"c": True}, True),
])
def test_targeting_operators(op: str, values: list[object], attrs: dict[str, object], expected: bool) -> None:
    assert matches(Condition("c", op, tuple(values)), attrs) is expected


def test_hash_uses_first_eight_bytes_big_endian() -> None:
    digest = hashlib.sha256(b"exp.u-1").digest()
    assert bucket("exp", "u-1") == int.from_bytes(digest[:8], "big") % 10000
