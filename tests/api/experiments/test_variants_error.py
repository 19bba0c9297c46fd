"""A rule across the variants (weights summing to 1, one control, unique keys) is a 422 located at the
``variants`` field, its message the rule alone (issue 17 item 6: it was ``["body"]`` with "Value error, ")."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics, experiment_body


@pytest.mark.parametrize(("variants", "message"), [
    ([{"key": "control", "control": True, "weight": 0.6}, {"key": "v2", "weight": 0.5}],
     "variant weights must sum to 1 (they sum to 1.1)"),
    ([{"key": "a", "control": True, "weight": 0.5}, {"key": "b", "control": True, "weight": 0.5}],
     "exactly one variant must be the control (found 2)"),
    ([{"key": "a", "control": True, "weight": 0.5}, {"key": "a", "weight": 0.5}], "variant keys must be unique"),
])
def test_a_variants_rule_names_the_variants_field(client: TestClient, keys: Keys, variants: list[object],
                                                  message: str) -> None:
    headers = keys.headers("analyst")
    create_metrics(client, headers)
    response = client.post("/v1/experiments", json=experiment_body(variants=variants), headers=headers)
    assert response.status_code == 422, response.text
    assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [(["body", "variants"], message)]

    create_experiment(client, headers)  # a draft: its variants may change, under the same rule
    response = client.patch("/v1/experiments/ranker-v2", json={"variants": variants}, headers=headers)
    assert response.status_code == 422, response.text
    assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [(["body", "variants"], message)]
