"""Rows stored by older versions that today's validation refuses — NaN/Infinity tokens in attributes (SQLite JSON
text), years 1 and 9999 (and ±infinity on PostgreSQL), non-finite event values, non-string or huge context values —
cannot make a scorecard, a ``?segment=`` scorecard, a decision or a contextual bandit's recompute answer 500: they
are left out, counted in ``excluded_rows``, and change no other number (both databases).

The bad rows are written with plain SQL, as an older version (or a hand-edited database) would have left them;
what each database can hold differs (PostgreSQL JSONB refuses NaN tokens, SQLite turns a NaN REAL into NULL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text

from api.db.engine import Database
from api.db.tables import Event, Experiment, Exposure, utc_now
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOW = utc_now()
EXPOSED = NOW - timedelta(days=2)
ONLY_CONVERSION_AND_REVENUE = {"primary": "conversion", "secondary": ["revenue"], "guardrails": []}
_EXPOSURE_SQL = ("INSERT INTO exposures (experiment_id, unit_id, variant, allocation_version, exposed_at, attributes, "
                 "source) VALUES (:experiment_id, :unit_id, :variant, 1, :at, :attributes, 'server')")
_EVENT_SQL = ("INSERT INTO events (event_id, unit_id, name, value, timestamp, attributes, received_at) "
              "VALUES (:event_id, :unit_id, 'purchase', :value, :at, :attributes, :received)")


def _sql_time(db: Database, at: Any) -> str:
    """A timestamp as each database's column holds it (SQLite: naive UTC text, as ``UTCDateTime`` writes it)."""
    if isinstance(at, str):
        return at
    return at.strftime("%Y-%m-%d %H:%M:%S.%f") if db.dialect == "sqlite" else at.isoformat()


def _seed_good(db: Database, key: str, variants: list[str], attributes: list[dict[str, Any]]) -> int:
    """40 units per variant exposed two days ago (attributes cycling), a purchase of 10 for every third unit."""
    with db.engine.begin() as conn:
        experiment_id = int(conn.scalar(select(Experiment.id).where(Experiment.key == key)))
        exposures, events = [], []
        for variant in variants:
            for i in range(40):
                unit = f"{key}-{variant}-{i}"
                exposures.append({"experiment_id": experiment_id, "unit_id": unit, "variant": variant,
                                  "allocation_version": 1, "exposed_at": EXPOSED, "source": "server",
                                  "attributes": attributes[i % len(attributes)]})
                if i % 3 == 0:
                    events.append({"event_id": f"{unit}-buy", "unit_id": unit, "name": "purchase", "value": 10.0,
                                   "timestamp": EXPOSED + timedelta(hours=1), "attributes": {}, "received_at": NOW})
        conn.execute(insert(Exposure), exposures)
        conn.execute(insert(Event), events)
    return experiment_id


def _seed_bad(db: Database, experiment_id: int, key: str, variant: str, context: bool) -> tuple[int, int]:
    """Write the bad rows this database can hold; returns (exposures, events) the analysis must leave out."""
    sqlite = db.dialect == "sqlite"
    good_unit = f"{key}-{variant}-1"  # exposed two days ago; its non-finite purchases would enter the sums
    if sqlite:
        excluded_exposures = [
            ("nan-attributes", EXPOSED, '{"platform":NaN,"country":Infinity}'),
            ("year-9999", "9999-12-31 23:59:59.000000", "{}"),
            ("year-1", "0001-01-01 00:00:00.000000", "{}"),
        ]
        kept_exposures = [("numeric-context", EXPOSED, '{"platform":1,"country":123456789012345678901234567890}'),
                          ("object-context", EXPOSED, '{"platform":{"a":[1]}}')]
        events = [("inf", float("inf"), EXPOSED + timedelta(hours=2), "{}"),
                  ("minus-inf", float("-inf"), EXPOSED + timedelta(hours=3), '{"x":NaN}'),
                  ("future", 5.0, "9999-12-31 23:59:59.000000", "{}")]
        excluded_events = 2
    else:
        excluded_exposures = [
            ("plus-infinity", "infinity", "{}"),
            ("minus-infinity", "-infinity", "{}"),
            ("year-9999", "9999-12-31 23:59:59+00", "{}"),
            ("year-minus-4712", "4713-01-01 00:00:00+00 BC", "{}"),
        ]
        kept_exposures = [("huge-context", EXPOSED, '{"platform":1e400,"country":123456789012345678901234567890}'),
                          ("null-context", EXPOSED, '{"platform":null}')]
        events = [("nan", float("nan"), EXPOSED + timedelta(hours=2), "{}"),
                  ("inf", float("inf"), EXPOSED + timedelta(hours=3), "{}"),
                  ("minus-inf", float("-inf"), EXPOSED + timedelta(hours=4), "{}"),
                  ("future", 5.0, "infinity", "{}")]
        excluded_events = 3
    with db.engine.begin() as conn:
        for unit, at, attributes in excluded_exposures + (kept_exposures if context else []):
            conn.execute(text(_EXPOSURE_SQL), {"experiment_id": experiment_id, "unit_id": f"{key}-{unit}",
                                               "variant": variant, "at": _sql_time(db, at), "attributes": attributes})
        for name, value, at, attributes in events:
            conn.execute(text(_EVENT_SQL), {"event_id": f"{key}-{name}", "unit_id": good_unit, "value": value,
                                            "at": _sql_time(db, at), "attributes": attributes,
                                            "received": _sql_time(db, NOW)})
    return len(excluded_exposures), excluded_events


def _numbers(card: dict[str, Any]) -> Any:
    """Everything a bad row could have changed: counts, means, lifts, p-values, SRM."""
    return (card["current_n"], card["srm"]["p_value"],
            [(m["metric"], [(v["n"], v["mean"], v["control_mean"], v["abs_lift"], v["p_value"]) for v in m["variants"]])
             for m in card["metrics"]])


def test_bad_rows_are_left_out_and_counted_and_change_nothing_else(client: TestClient, keys: Keys,
                                                                   db: Database) -> None:
    admin, analyst = keys.headers("admin"), keys.headers("analyst")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, key="ab", metrics=ONLY_CONVERSION_AND_REVENUE)
    experiment_id = _seed_good(db, "ab", ["control", "v2"], [{"country": "US"}, {"country": "CA"}])

    before = client.get("/v1/experiments/ab/scorecard", headers=analyst)
    assert before.status_code == 200, before.text
    assert before.json()["excluded_rows"] == {"exposures": 0, "events": 0}
    segments_before = client.get("/v1/experiments/ab/scorecard", params={"segment": "country"}, headers=analyst)
    decision_before = client.get("/v1/experiments/ab/decision", headers=analyst).json()
    assert not any("left out" in reason for reason in decision_before["reasons"])

    exposures, events = _seed_bad(db, experiment_id, "ab", "v2", context=False)

    # why a full refresh: the rows are dated two days back, beyond the lookback of an incremental one
    after = client.get("/v1/experiments/ab/scorecard", params={"fresh": "full"}, headers=analyst)
    assert after.status_code == 200, after.text
    assert after.json()["excluded_rows"] == {"exposures": exposures, "events": events}
    assert _numbers(after.json()) == _numbers(before.json())
    segments = client.get("/v1/experiments/ab/scorecard", params={"segment": "country"}, headers=analyst)
    assert segments.status_code == 200, segments.text
    assert segments.json()["segments"] == segments_before.json()["segments"]
    assert segments.json()["excluded_rows"] == {"exposures": exposures, "events": events}
    as_of = client.get("/v1/experiments/ab/scorecard", params={"as_of": (NOW - timedelta(hours=1)).isoformat()},
                       headers=analyst)
    assert as_of.status_code == 200, as_of.text
    decision = client.get("/v1/experiments/ab/decision", headers=analyst)
    assert decision.status_code == 200, decision.text
    assert decision.json()["decision"] == decision_before["decision"]
    assert any(f"{exposures} stored exposure rows and {events} event rows were left out" in reason
               for reason in decision.json()["reasons"]), decision.json()["reasons"]
    across = client.get("/v1/scorecards", params={"metric": "conversion"}, headers=analyst)
    assert across.status_code == 200, across.text


def test_a_contextual_bandit_updates_despite_bad_rows(client: TestClient, keys: Keys, db: Database) -> None:
    admin, analyst = keys.headers("admin"), keys.headers("analyst")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, key="ctx",
                      variants=[{"key": "control", "control": True, "weight": 0.5}, {"key": "b", "weight": 0.5}],
                      allocation={"strategy": "thompson", "context": {"attribute": "platform",
                                                                      "values": ["ios", "android"]}},
                      metrics=ONLY_CONVERSION_AND_REVENUE)
    experiment_id = _seed_good(db, "ctx", ["control", "b"], [{"platform": "ios"}, {"platform": "android"}])
    exposures, events = _seed_bad(db, experiment_id, "ctx", "b", context=True)

    for params in ({}, {"segment": "platform"}):
        card = client.get("/v1/experiments/ctx/scorecard", params=params, headers=analyst)
        assert card.status_code == 200, card.text
        assert card.json()["excluded_rows"] == {"exposures": exposures, "events": events}
        # the kept rows with a non-string context value are units of the pooled cell, as assignment treats them
        assert card.json()["current_n"] == {"control": 40, "b": 42}
    decision = client.get("/v1/experiments/ctx/decision", headers=analyst)
    assert decision.status_code == 200, decision.text
    step = client.post("/v1/experiments/ctx/allocations/recompute", params={"force": "true"}, headers=admin)
    assert step.status_code == 200, step.text
    assert step.json()["action"] == "updated"
    assert set(step.json()["context_weights"]) == {"ios", "android"}
