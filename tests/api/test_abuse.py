"""Acceptance of issue 12 through the service: poison requests of every kind are refused at the edge and never
stop exposure logging — 10,000 valid acknowledged exposures all reach the scorecard (both databases).

The writer-level half (poison rows that got past the edge are split out into ``dead_letters`` while the rest is
written) is ``tests/api/assignment/test_exposure_writer.py::test_poison_rows_never_block_10k_valid_ones``; the other
defects of the issue are replayed where their fix lives: ``test_validation.py`` (non-finite numbers, huge
integers, extreme timestamps, path integers), ``test_bad_stored_rows.py`` (rows stored by older versions),
``test_limits.py`` (body and batch sizes), ``test_faults.py`` (database faults), ``test_durability.py``
(SIGKILL), ``test_roles.py`` (PATCH needs admin), ``test_cli.py`` (one-line CLI mistakes) and ``tests/ui/``
(console sign-in)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.db.engine import Database
from api.db.tables import DeadLetter, Exposure
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

POISON_EXPOSURES: list[dict[str, Any]] = [
    {"timestamp": "0001-01-01T00:00:00+14:00"},
    {"timestamp": "9999-12-31T23:59:59-14:00"},
    {"timestamp": "9999-06-01T00:00:00Z"},
    {"attributes": {"x": float("nan")}},
    {"attributes": {"x": float("inf")}},
    {"attributes": {"nested": {"y": [float("-inf")]}}},
    {"attributes": {"big": 10**30}},
    {"unit_id": "u" * 300},
]


def _raw_json(body: dict[str, Any]) -> str:
    """JSON as a hostile client writes it: ``NaN``/``Infinity`` tokens, and ``1e309`` for one of the infinities."""
    import json

    return json.dumps(body, allow_nan=True).replace("-Infinity", "-1e309")


def test_poison_requests_are_refused_and_never_block_10k_valid_exposures(
    client: TestClient, keys: Keys, db: Database
) -> None:
    admin, sdk = keys.headers("admin"), {**keys.headers("sdk"), "Content-Type": "application/json"}
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    valid_exposure = {"experiment": "ranker-v2", "unit_id": "sdk-u", "variant": "control",
                      "timestamp": "2026-11-23T10:00:00Z", "attributes": {}}
    statuses = []
    for i in range(10_000):
        if i % 1000 == 500:  # interleave poison of every kind on every path with the valid traffic
            for j, poison in enumerate(POISON_EXPOSURES):
                exposure = {**valid_exposure, "unit_id": f"poison-{i}-{j}", **poison}
                statuses.append(client.post("/v1/exposures", content=_raw_json({"exposures": [exposure]}),
                                            headers=sdk).status_code)
                attributes = poison.get("attributes", {"x": float("nan")})
                statuses.append(client.post("/v1/assign", content=_raw_json(
                    {"unit_id": f"poison-assign-{i}-{j}", "attributes": attributes}), headers=sdk).status_code)
                event = {"event_id": f"e-{i}-{j}", "unit_id": "u", "name": "purchase", "value": 1.0,
                         "timestamp": poison.get("timestamp", "2026-11-23T10:00:00Z"), "attributes": attributes}
                statuses.append(client.post("/v1/events", content=_raw_json({"events": [event]}),
                                            headers=sdk).status_code)
        response = client.post("/v1/assign", json={"unit_id": f"u-{i}"}, headers=sdk)
        assert response.status_code == 200, response.text
        assert "ranker-v2" in response.json()["assignments"]
    assert set(statuses) == {422}, statuses
    client.app.state.exposure_writer.flush()  # type: ignore[attr-defined]

    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Exposure)) == 10_000
        assert session.scalar(select(func.count()).select_from(DeadLetter)) == 0  # the edge refused every poison
    card = client.get("/v1/experiments/ranker-v2/scorecard", headers=admin)
    assert card.status_code == 200, card.text
    [treatment] = card.json()["metrics"][0]["variants"]
    assert treatment["n"] + treatment["control_n"] == 10_000
    segment = client.get("/v1/experiments/ranker-v2/scorecard?segment=country", headers=admin)
    assert segment.status_code == 200, segment.text
