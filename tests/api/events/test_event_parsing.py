"""The ingestion fast path (``api.events.parsing``) accepts exactly what the contract model ``EventsIn`` accepts,
gives the same values, and stores the same attribute text (issue 18, item 2).

Property tests compare ``parse_events`` with the contract on random batches built to sit near every rule (NUL,
timestamp bounds, non-finite numbers, 64-bit integers, depth, key counts, floats json and orjson spell
differently); a refusal must be the contract's own ``RequestValidationError`` with the same errors. No database.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.attributes import encode_attributes, encode_attributes_list, encode_attributes_many
from api.events import parsing
from api.events.parsing import parse_events
from api.events.schemas import EventsIn
from api.schemas_common import parse_body

_NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
    [1e-5, 1.5e-7, 1e16, 9999999999999998.0, 1e15, 0.0001, -0.0, 1e308, 5e-324, 0.1, 123.456]))
_ints = st.one_of(st.integers(-(2**64), 2**64), st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1]))
_texts = st.one_of(st.text(max_size=8), st.sampled_from(
    ["\x00", "a\\u0000", "null", "},{", "{", "[", "1e5", "é✓日本", "\x1f\x7f\u2028", "0.00001"]))
_scalars = st.one_of(st.none(), st.booleans(), _ints, _floats, _texts)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_texts, inner, max_size=3)), max_leaves=12)
_attributes = st.one_of(st.dictionaries(_texts, _scalars, max_size=4), st.dictionaries(_texts, _json, max_size=4),
                        st.just({f"k{i}": i for i in range(101)}), st.just({"a": {f"k{i}": i for i in range(100)}}))
_timestamps = st.one_of(
    st.sampled_from(["2026-11-23T10:00:00Z", "2026-11-23T12:00:00+02:00", "1999-12-31T23:59:59Z",
                     "2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00", "2026-12-01T12:00:00Z",
                     "0001-01-01T00:00:00+14:00", "2026-11-23T10:00:00"]),
    st.datetimes(min_value=datetime(1999, 12, 31), max_value=datetime(2026, 12, 2),
                 timezones=st.just(UTC)).map(lambda d: d.isoformat()))


@st.composite
def _event(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": draw(st.sampled_from(["e-1", "e-2", "", "x" * 129, "a\x00", "e-3"])),
                             "unit_id": draw(st.sampled_from(["u", "u\x00", "ü"])), "name": "purchase",
                             "timestamp": draw(_timestamps)}
    if draw(st.booleans()):
        event["value"] = draw(st.one_of(_floats, st.integers(-10, 10)))
    if draw(st.booleans()):
        event["attributes"] = draw(_attributes)
    return event


def _body(events: list[dict[str, Any]]) -> bytes:
    # allow_nan: NaN/Infinity tokens reach the parser as a client could send them
    return json.dumps({"events": events}, ensure_ascii=bool(len(events) % 2)).encode()


def _contract_outcome(raw: bytes) -> tuple[str, Any]:
    try:
        events = parse_body(EventsIn, raw).events
    except RequestValidationError as exc:
        return "refused", json.dumps(exc.errors(), default=repr)  # ctx holds the ValueError itself
    return "accepted", [(e.event_id, e.unit_id, e.name, e.value, e.timestamp, encode_attributes(e.attributes))
                        for e in events]


def _fast_outcome(raw: bytes) -> tuple[str, Any]:
    try:
        batch = parse_events(raw, now=_NOW)
    except RequestValidationError as exc:
        return "refused", json.dumps(exc.errors(), default=repr)
    return "accepted", [(e["event_id"], e["unit_id"], e["name"], e["value"], e["timestamp"].astimezone(UTC), text)
                        for e, text in zip(batch.events, batch.attributes_json, strict=True)]


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract's clock at ``_NOW`` as well (its future bound reads ``datetime.now``)."""
    import api.schemas_common as common

    class _Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return _NOW

    monkeypatch.setattr(common, "datetime", _Clock)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_event(), min_size=1, max_size=6))
def test_fast_path_decides_like_the_contract(frozen_clock: None, events: list[dict[str, Any]]) -> None:
    raw = _body(events)
    assert _fast_outcome(raw) == _contract_outcome(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(_texts, _json, max_size=4), max_size=6))
def test_attribute_texts_are_json_s_spelling(values: list[dict[str, Any]]) -> None:
    def finite(value: Any) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, dict):
            return all(map(finite, value.values()))
        if isinstance(value, list):
            return all(map(finite, value))
        return True

    values = [v for v in values if finite(v)]  # the precondition: the rules refused non-finite numbers first
    assert encode_attributes_many(values, encode_attributes_list(values)) == [encode_attributes(v) for v in values]


def test_common_batches_take_the_fast_path(frozen_clock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def _no_contract(raw: bytes) -> None:
        raise AssertionError("went through the contract model")

    monkeypatch.setattr(parsing, "_contract", _no_contract)
    stamp = (_NOW - timedelta(days=1)).isoformat()
    for attributes in ({}, {"sku": 3, "plan": "pro", "price": 9.99, "ok": True, "tag": None},
                       {"nested": {"a": [1, 2, {"b": "c"}]}}, {"id": 1234567890123456789}):
        events = [{"event_id": f"e-{i}", "unit_id": "u", "name": "n", "timestamp": stamp, "attributes": attributes}
                  for i in range(3)]
        batch = parse_events(_body(events), now=_NOW)
        assert batch.attributes_json == [encode_attributes(attributes)] * 3
