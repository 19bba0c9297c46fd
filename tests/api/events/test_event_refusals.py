"""The 422 bodies of ``POST /v1/events`` are pinned byte for byte, one case per rule (issue 18, item 2).

Written against the validation as it was before the ingestion fast path (a pydantic validator per event for the
timestamp bounds and the attribute rules), so moving those checks out of the per-event path cannot change what a
client reads: location, message, type and echoed input of every error, their order when several events are bad,
and the size refusal of the service. The timestamp range names the server's clock (``now + 24 h``): that part is
replaced by ``<latest>`` before comparing, and checked separately.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Keys

_GOOD = ('{"event_id":"e-%d","unit_id":"u-%d","name":"purchase","value":%d.5,'
         '"timestamp":"2026-11-23T10:00:00Z","attributes":{"sku":%d,"plan":"pro"}}')


def _batch(bad: dict[int, str], n: int = 10) -> bytes:
    """``n`` valid events as raw JSON, with the events at the keys of ``bad`` replaced by that raw JSON."""
    return ('{"events":[' + ",".join(bad.get(i, _GOOD % (i, i, i, i)) for i in range(n)) + "]}").encode()


def _event(**raw_fields: str | None) -> str:
    """One event as raw JSON whose fields default to valid ones and are overridden by raw JSON text."""
    fields = {"event_id": '"x-1"', "unit_id": '"u-1"', "name": '"purchase"', "value": "2.5",
              "timestamp": '"2026-11-23T10:00:00Z"', "attributes": '{"sku":1}'} | raw_fields
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items() if v is not None) + "}"


_NESTED_9 = '{"a":' * 9 + "1" + "}" * 9
_KEYS_101 = "{" + ",".join(f'"k{i}":{i}' for i in range(101)) + "}"
_KEYS_NESTED = '{"a":{' + ",".join(f'"k{i}":{i}' for i in range(100)) + "}}"
_LARGE = '{"blob":"' + "x" * 8200 + '"}'
_LARGE_UTF8 = '{"blob":"' + "é" * 4100 + '"}'

CASES: dict[str, bytes] = {
    "event_id_empty": _batch({7: _event(event_id='""')}),
    "event_id_too_long": _batch({7: _event(event_id='"' + "x" * 129 + '"')}),
    "event_id_nul": _batch({7: _event(event_id='"a\\u0000b"')}),
    "unit_id_nul": _batch({1: _event(unit_id='"u\\u0000"')}),
    "name_nul": _batch({1: _event(name='"p\\u0000"')}),
    "name_missing": _batch({3: _event(name=None)}),
    "value_nan": _batch({7: _event(value="NaN")}),
    "value_infinity": _batch({7: _event(value="Infinity")}),
    "value_1e999": _batch({7: _event(value="1e999")}),
    "value_string": _batch({7: _event(value='"abc"')}),
    "timestamp_naive": _batch({7: _event(timestamp='"2026-11-23T10:00:00"')}),
    "timestamp_before_min": _batch({7: _event(timestamp='"1999-12-31T23:59:59Z"')}),
    "timestamp_far_future": _batch({7: _event(timestamp='"2999-01-01T00:00:00Z"')}),
    "timestamp_year_1_east": _batch({0: _event(timestamp='"0001-01-01T00:00:00+14:00"')}),
    "timestamp_year_9999_west": _batch({9: _event(timestamp='"9999-12-31T23:59:59-14:00"')}),
    "timestamp_garbage": _batch({7: _event(timestamp='"yesterday"')}),
    "extra_field": _batch({7: _event(colour='"red"')}),
    "attributes_not_object": _batch({7: _event(attributes="[1,2]")}),
    "attributes_nul_value": _batch({7: _event(attributes='{"k":"v\\u0000"}')}),
    "attributes_nul_key": _batch({7: _event(attributes='{"k\\u0000":1}')}),
    "attributes_nul_nested": _batch({7: _event(attributes='{"a":[1,{"b":"\\u0000"}]}')}),
    "attributes_nan": _batch({7: _event(attributes='{"x":NaN}')}),
    "attributes_1e999": _batch({7: _event(attributes='{"x":[1e999]}')}),
    "attributes_int_2_63": _batch({7: _event(attributes='{"x":9223372036854775808}')}),
    "attributes_int_below_min": _batch({7: _event(attributes='{"x":-9223372036854775809}')}),
    "attributes_int_2_64": _batch({7: _event(attributes='{"x":18446744073709551616}')}),
    "attributes_too_deep": _batch({7: _event(attributes=_NESTED_9)}),
    "attributes_too_many_keys": _batch({7: _event(attributes=_KEYS_101)}),
    "attributes_too_many_keys_nested": _batch({7: _event(attributes=_KEYS_NESTED)}),
    "attributes_too_large": _batch({7: _event(attributes=_LARGE)}),
    "attributes_too_large_utf8": _batch({7: _event(attributes=_LARGE_UTF8)}),
    "several_events_several_rules": _batch({
        2: _event(unit_id='""', attributes='{"x":NaN}'),
        5: _event(timestamp='"1990-01-01T00:00:00Z"'),
        6: _event(attributes='{"k\\u0000":1}', value="Infinity"),
        8: _event(event_id='"a\\u0000"', timestamp='"2999-01-01T00:00:00+02:00"')}),
    "timestamp_bad_and_attributes_too_large": _batch({
        3: _event(attributes=_LARGE), 4: _event(timestamp='"1999-12-31T23:59:59Z"')}),
    "two_too_large": _batch({3: _event(attributes=_LARGE_UTF8), 4: _event(attributes=_LARGE)}),
    "no_events": b'{"events":[]}',
    "not_json": b'{"events":[',
}

_LATEST = re.compile(r"and (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00) \(now")

#: case -> the body as answered before the fast path (the clock-dependent bound replaced)
EXPECTED: dict[str, str] = json.loads((Path(__file__).parent / "refusals_golden.json").read_text())


def test_every_case_is_pinned() -> None:
    assert sorted(EXPECTED) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_refusal_bodies_are_unchanged(case: str, client: TestClient, keys: Keys) -> None:
    headers = {**keys.headers("sdk"), "content-type": "application/json"}
    before = datetime.now(UTC).replace(microsecond=0)
    response = client.post("/v1/events", content=CASES[case], headers=headers)
    after = datetime.now(UTC)
    assert response.status_code == 422, response.text
    body = response.content
    for stamp in _LATEST.findall(body.decode()):
        assert before + timedelta(hours=24) <= datetime.fromisoformat(stamp) <= after + timedelta(hours=24)
    assert _LATEST.sub("and <latest> (now", body.decode()).encode() == EXPECTED[case].encode()
    assert json.loads(body)["detail"]  # and it is a JSON refusal naming something
