"""Who may change whom a live experiment reaches: targeting and traffic of a running or paused experiment need the
admin role (as /pause does); analysts keep every other edit they had (both databases)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOBODY = [{"attribute": "country", "op": "in", "values": ["nowhere"]}]
US = [{"attribute": "country", "op": "in", "values": ["US"]}]


def _audit(client: TestClient, keys: Keys) -> list[dict[str, Any]]:
    response = client.get("/v1/experiments/ranker-v2/audit", headers=keys.headers("admin"))
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


@pytest.mark.parametrize("status", ["running", "paused"])
@pytest.mark.parametrize("change", [{"targeting": NOBODY}, {"traffic": 0.0001}, {"traffic": 0.5, "owner": "bo"}])
def test_analyst_cannot_change_who_a_live_experiment_reaches(client: TestClient, keys: Keys, status: str,
                                                            change: dict[str, object]) -> None:
    admin, analyst = keys.headers("admin"), keys.headers("analyst")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, targeting=US)
    if status == "paused":
        assert client.post("/v1/experiments/ranker-v2/pause", headers=admin).status_code == 200
    audit_before = _audit(client, keys)

    refused = client.patch("/v1/experiments/ranker-v2", json=change, headers=analyst)

    assert refused.status_code == 403, refused.text
    detail = refused.json()["detail"]
    assert f"changing targeting or traffic of a {status} experiment needs the 'admin' role" in detail
    after = client.get("/v1/experiments/ranker-v2", headers=analyst).json()
    assert (after["targeting"], after["traffic"], after["owner"]) == (US, 1.0, "ana")  # nothing applied
    assert _audit(client, keys) == audit_before


def test_admin_changes_a_running_experiments_reach_and_it_is_audited(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, targeting=US)

    response = client.patch("/v1/experiments/ranker-v2", json={"targeting": NOBODY, "traffic": 0.25}, headers=admin)

    assert response.status_code == 200, response.text
    assert (response.json()["targeting"], response.json()["traffic"]) == (NOBODY, 0.25)
    last = _audit(client, keys)[-1]
    assert last["action"] == "experiment.update"
    assert "test-admin" in str(last["actor"])
    assert (last["before"]["traffic"], last["after"]["traffic"]) == (1.0, 0.25)
    assert last["after"]["targeting"] == NOBODY
    # Assignment follows: nobody is in the "nowhere" country.
    got = client.post("/v1/assign", json={"unit_id": "u1", "attributes": {"country": "US"},
                                          "experiments": ["ranker-v2"]}, headers=keys.headers("sdk")).json()
    assert "ranker-v2" not in got["assignments"]


def test_analyst_keeps_the_edits_that_do_not_gate(client: TestClient, keys: Keys) -> None:
    admin, analyst = keys.headers("admin"), keys.headers("analyst")
    create_metrics(client, admin)
    create_experiment(client, analyst, targeting=US)
    # A draft: anything, targeting and traffic included.
    draft = client.patch("/v1/experiments/ranker-v2", json={"targeting": NOBODY, "traffic": 0.3}, headers=analyst)
    assert draft.status_code == 200, draft.text
    assert (draft.json()["targeting"], draft.json()["traffic"]) == (NOBODY, 0.3)
    assert client.post("/v1/experiments/ranker-v2/start", headers=admin).status_code == 200
    # Running: name, owner, description, and the current targeting/traffic sent back unchanged.
    same = {"name": "Ranker v2 (live)", "owner": "bo", "description": "x", "targeting": NOBODY, "traffic": 0.3}
    live = client.patch("/v1/experiments/ranker-v2", json=same, headers=analyst)
    assert live.status_code == 200, live.text
    assert (live.json()["owner"], live.json()["traffic"]) == ("bo", 0.3)
    last = _audit(client, keys)[-1]
    assert (last["action"], "test-analyst" in str(last["actor"])) == ("experiment.update", True)
