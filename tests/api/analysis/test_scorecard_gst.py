"""A group-sequential experiment end to end: the design is validated at the edge, stored in the frozen plan, and the
scorecard shows the look, the boundary and the α spent; rel_ci is Fieller's interval (issue 16, items 1 and 2)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.db.engine import Database
from scorecards.gst import gst_bounds
from tests.api.analysis.test_scorecard import _planted, _start, _strict_json
from tests.conftest import Keys
from tests.factories import create_metrics, experiment_body


def test_a_gst_scorecard_shows_its_look_and_uses_the_boundary(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys, design={"alpha": 0.05, "power": 0.8, "mde": 0.5, "sequential": "gst", "looks": 4,
                                 "spending": "obrien_fleming"})
    stored = client.get("/v1/experiments/ranker-v2", headers=keys.headers("analyst")).json()["design"]
    assert (stored["sequential"], stored["looks"], stored["spending"]) == ("gst", 4, "obrien_fleming")
    _planted(1500, latency={"control": 100.0, "v2": 100.0}, conversion={"control": 0.10, "v2": 0.16}).write(
        db, "ranker-v2")
    card = _strict_json(client.get("/v1/experiments/ranker-v2/scorecard", headers=keys.headers("analyst")))
    g = card["group_sequential"]
    assert card["sequential"] == "gst"
    assert g["looks_planned"] == 4
    assert g["look"] >= 1
    assert g["boundary"] == pytest.approx(gst_bounds(g["fractions"])[-1], rel=1e-12)
    conversion = card["metrics"][0]["variants"][0]
    assert conversion["test"] == "gst"
    assert conversion["significant"] == (not conversion["rel_ci"][0] <= 0 <= conversion["rel_ci"][1])
    assert conversion["rel_ci_reason"] == "ok"
    assert len(conversion["rel_ci_delta"]) == 2
    decision = client.get("/v1/experiments/ranker-v2/decision", headers=keys.headers("analyst")).json()
    assert any(r.startswith(f"group-sequential look {g['look']} of 4") for r in decision["reasons"])


@pytest.mark.parametrize(("design", "field"), [
    ({"sequential": "gst"}, "looks"),
    ({"sequential": True, "looks": 5}, "looks"),
    ({"sequential": "gst", "looks": 0}, "looks"),
    ({"sequential": "gst", "looks": ["2026-12-08", "2026-12-01"]}, "looks"),
    ({"sequential": "gst", "looks": 3, "spending": "haybittle"}, "spending"),
    ({"sequential": False, "spending": "pocock"}, "spending"),
    ({"sequential": "bayes"}, "sequential"),
])
def test_bad_group_sequential_designs_are_a_422_naming_the_field(client: TestClient, keys: Keys,
                                                                 design: dict[str, Any], field: str) -> None:
    create_metrics(client, keys.headers("admin"))
    response = client.post("/v1/experiments", json=experiment_body(design=design), headers=keys.headers("admin"))
    assert response.status_code == 422, response.text
    assert field in response.text
