"""The hot path never raises: garbage configs, garbage inputs, invalid events, concurrent config swaps."""

from __future__ import annotations

import atexit
import math
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from titrate_sdk import Assignment, Client

GOOD = {
    "key": "exp",
    "salt": "exp",
    "status": "running",
    "traffic": 1.0,
    "layer": None,
    "targeting": [{"attribute": "country", "op": "in", "values": ["US"]}],
    "allocation_version": 1,
    "control": "ctl",
    "variants": [{"key": "ctl", "weight": 0.5, "payload": {"p": [1]}}, {"key": "t", "weight": 0.5}],
}

GARBAGE_EXPERIMENTS: list[Any] = [
    None,
    3,
    "exp",
    [],
    {},
    {"key": "exp"},
    {"key": "exp", "status": "running"},
    {**GOOD, "variants": None},
    {**GOOD, "variants": []},
    {**GOOD, "variants": [{"key": "a"}]},
    {**GOOD, "variants": [{"key": "a", "weight": "0.5"}]},
    {**GOOD, "variants": [{"key": "a", "weight": float("nan")}]},
    {**GOOD, "variants": [{"key": "a", "weight": float("inf")}]},
    {**GOOD, "variants": [{"key": 1, "weight": 1}]},
    {**GOOD, "variants": [{"key": "a", "weight": 1, "payload": [1, 2]}]},
    {**GOOD, "traffic": "all"},
    {**GOOD, "traffic": float("nan")},
    {**GOOD, "targeting": "country"},
    {**GOOD, "targeting": [{"attribute": "country"}]},
    {**GOOD, "targeting": [None]},
    {**GOOD, "layer": 5},
    {**GOOD, "layer": "l", "layer_start": "a", "layer_end": 3},
    {**GOOD, "salt": 7},
    {**GOOD, "status": None},
    {**GOOD, "key": None},
    {**GOOD, "allocation_version": "x"},
]


@pytest.mark.parametrize("bad", GARBAGE_EXPERIMENTS, ids=range(len(GARBAGE_EXPERIMENTS)))
def test_garbage_experiment_is_skipped_and_the_rest_still_works(bad: Any) -> None:
    other = {**GOOD, "key": "other", "salt": "other", "targeting": []}
    with Client("http://127.0.0.1:9", "k", start=False, log_exposures=False) as client:
        assert client.set_config({"version": 1, "experiments": [bad, other]})
        for unit in ("u-1", "", "😀", 5, None):
            assert isinstance(client.get_variant("exp", unit, {"country": "US"}), str)
            assert client.get_variant("other", unit) in ("ctl", "t")
            assert isinstance(client.assign(unit, {"country": "US"}), dict)
        assert client.get_variant("exp", "u-1", default="dflt") in ("dflt", "ctl", "t")


@pytest.mark.parametrize(
    "document",
    [None, 1, "x", [], {}, {"experiments": None}, {"experiments": {}}, {"spec_version": 3, "experiments": []}],
)
def test_unusable_document_is_rejected_and_defaults_are_served(document: Any) -> None:
    with Client("http://127.0.0.1:9", "k", start=False) as client:
        assert client.set_config(document) is False
        assert not client.ready
        assert client.get_variant("exp", "u") == "control"
        assert client.get_variant("exp", "u", default="off") == "off"
        assert client.assign("u") == {}
        assert client.assign_many("exp", ["a", "b"]) == ["control", "control"]
        assert client.stats["config_errors"] == 1


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = ["key", "salt", "status", "traffic", "layer", "layer_start", "layer_end", "targeting", "variants",
           "control", "shipped_variant", "allocation_version"]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=4),
    unit=st.one_of(st.text(max_size=6), st.integers(), st.none()),
    attributes=st.one_of(st.none(), st.dictionaries(st.sampled_from(["country", "age"]), _JSON), _JSON),
)
def test_fuzzed_config_and_inputs_never_raise(mutations: dict[str, Any], unit: Any, attributes: Any) -> None:
    experiment = {**GOOD, **mutations}
    with Client("http://127.0.0.1:9", "k", start=False, log_exposures=False) as client:
        client.set_config({"version": 1, "experiments": [experiment]})
        key = experiment["key"] if isinstance(experiment.get("key"), str) else "exp"
        assert isinstance(client.get_variant(key, unit, attributes), str)
        assert isinstance(client.get_variant(key, unit, attributes, default="d"), str)
        assert isinstance(client.assign(unit, attributes), dict)
        many = client.assign_many(key, [unit, "u"], attributes if isinstance(attributes, dict) else None)
        assert len(many) == 2


def test_hot_path_errors_are_counted_not_raised() -> None:
    with Client("http://127.0.0.1:9", "k", start=False, config={"experiments": [GOOD]}) as client:
        assert client.get_variant("exp", "u", attributes=["not", "a", "mapping"]) == "ctl"  # type: ignore[arg-type]
        assert client.get_variant("exp", "\ud800", {"country": "US"}, default="d") == "d"  # unencodable
        assert client.assign("u", attributes=42) == {}  # type: ignore[arg-type]
        assert client.assign_many("exp", ["u"], attributes=[1]) == ["ctl"]  # type: ignore[arg-type]
        assert client.stats["errors"] == 4


def test_invalid_events_are_dropped_and_counted_never_raised() -> None:
    with Client("http://127.0.0.1:9", "k", start=False) as client:
        for value in (math.nan, math.inf, -math.inf, "12", None, True):
            event_id = client.track("u", "purchase", value)  # type: ignore[arg-type]
            assert isinstance(event_id, str)
        client.track("u", "", 1.0)
        client.track("u", "purchase", 1.0, timestamp="yesterday")
        client.track("u", "purchase", 1.0, timestamp=object())  # type: ignore[arg-type]
        assert client.stats["dropped"] == 9
        assert client.stats["buffered"] == 0
        client.track(7, "purchase", 2)  # type: ignore[arg-type]
        assert client.stats["buffered"] == 1
        client._events.clear()


def test_defaults_follow_the_documented_precedence() -> None:
    with Client("http://127.0.0.1:9", "k", start=False, log_exposures=False) as client:
        assert client.get_variant("exp", "u") == "control"  # no config
        client.set_config({"experiments": [GOOD]})
        assert client.get_variant("unknown", "u") == "control"
        assert client.get_variant("unknown", "u", default="d") == "d"
        assert client.get_variant("exp", "u", {"country": "FR"}) == "ctl"  # targeted out: its control
        assert client.get_variant("exp", "u", {"country": "FR"}, default="d") == "d"
        paused = {**GOOD, "status": "paused"}
        client.set_config({"experiments": [paused]})
        assert client.get_variant("exp", "u", {"country": "US"}) == "control"  # not served at all


def test_assignment_is_frozen_and_its_payload_read_only() -> None:
    with Client("http://127.0.0.1:9", "k", start=False, log_exposures=False, config={"experiments": [GOOD]}) as c:
        got = c.assign("u-1", {"country": "US"})["exp"]
        assert isinstance(got, Assignment)
        assert got.allocation_version == 1
        with pytest.raises(AttributeError):
            got.variant = "x"  # type: ignore[misc]
        with pytest.raises(TypeError):
            got.payload["p"] = 2  # type: ignore[index]
        assert isinstance(dict(got.payload), dict)


def test_assign_many_inputs() -> None:
    doc = {**GOOD, "targeting": [], "traffic": 0.5}
    client = Client("http://127.0.0.1:9", "k", start=False, config={"experiments": [doc]})
    try:
        ids = [f"u-{i}" for i in range(200)]
        expected = [client.get_variant("exp", u, default="out") for u in ids]
        assert client.assign_many("exp", ids, default="out") == expected
        assert client.assign_many("exp", iter(ids), default="out") == expected  # any iterable
        mixed = [*ids[:5], 12, None, "\ud800"]
        got = client.assign_many("exp", mixed, default="out")  # type: ignore[list-item]
        assert got[:5] == expected[:5]
        assert got[5] == client.get_variant("exp", "12", default="out")
        assert got[7] == "out"
        assert client.assign_many("missing", ids[:2]) == ["control", "control"]
        assert client.assign_many("missing", ids[:2], default="d") == ["d", "d"]
        shipped = {**GOOD, "status": "shipped", "shipped_variant": "t"}
        client.set_config({"experiments": [shipped]})
        assert client.assign_many("exp", ids[:3], {"country": "US"}) == ["t"] * 3
        assert client.assign_many("exp", ids[:3], {"country": "FR"}) == ["ctl"] * 3
        # Exposures come from the get_variant calls only (the units in the 50% gate), never assign_many.
        assert client.stats["exposures_logged"] == sum(v != "out" for v in [*expected, got[5]])
    finally:
        client.close(timeout=0)


def test_concurrent_evaluation_during_config_swaps() -> None:
    a = {**GOOD, "targeting": []}
    b = {**a, "variants": [{"key": "ctl", "weight": 0.0}, {"key": "t", "weight": 1.0}]}
    client = Client("http://127.0.0.1:9", "k", start=False, log_exposures=False, config={"experiments": [a]})
    errors: list[BaseException] = []
    results: set[str] = set()
    stop = threading.Event()

    def evaluate() -> None:
        try:
            i = 0
            while not stop.is_set():
                results.add(client.get_variant("exp", f"u-{i}"))
                i += 1
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(300):
        client.set_config({"version": i, "experiments": [a if i % 2 else b]})
    stop.set()
    for thread in threads:
        thread.join()
    client.close()
    assert errors == []
    assert results <= {"ctl", "t"}
    assert client.stats["errors"] == 0


def test_close_unregisters_the_atexit_hook_and_is_a_context_manager() -> None:
    unregistered: list[Any] = []
    original = atexit.unregister
    try:
        atexit.unregister = lambda fn: (unregistered.append(fn), original(fn))  # type: ignore[assignment]
        with Client("http://127.0.0.1:9", "k", start=False) as client:
            hook = client._atexit_hook
    finally:
        atexit.unregister = original  # type: ignore[assignment]
    assert unregistered == [hook]
    hook()  # after close: a no-op
