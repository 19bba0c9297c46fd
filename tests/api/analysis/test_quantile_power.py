"""A quantile primary metric gets a planned n, and every quantile metric an MDE and power, on the REST scorecard
(both databases): the closed form for means with the control's p95 and σ_Q = SE·√n (exposed units), the
treatment's σ_Q scaled by 1 + mde (``scorecards.power``), from numpy histograms of the same raw rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.db.engine import Database
from api.db.tables import Experiment, Exposure, utc_now
from scorecards.power import (
    achieved_power,
    quantile_mde_at_n,
    quantile_sd_for,
    quantile_sd_from_se,
    sample_size_per_arm,
)
from scorecards.quantile import histogram_from_events, quantile_estimate
from tests.api.analysis.test_quantile_metric import P95, _seed
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics


def test_a_p95_primary_is_sized_from_its_observed_standard_error(client: TestClient, keys: Keys,
                                                                  db: Database) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    assert client.post("/v1/metrics", json=P95, headers=admin).status_code == 201
    create_experiment(client, admin, start=True,
                      hypothesis={"change": "faster ranker", "metric": "p95_latency", "direction": "decrease",
                                  "rationale": "cache"},
                      metrics={"primary": "p95_latency", "secondary": ["conversion"], "guardrails": []},
                      design={"alpha": 0.05, "power": 0.8, "mde": 0.1, "sequential": False, "cuped": False})
    raw = _seed(db, slowdown=1.0)
    params = {"as_of": (utc_now() + timedelta(seconds=-1)).isoformat()}
    response = client.get("/v1/experiments/ranker-v2/scorecard", params=params, headers=keys.headers("analyst"))
    assert response.status_code == 200, response.text
    card = response.json()
    with db.engine.connect() as conn:
        exposed = dict(conn.execute(select(Exposure.variant, func.count()).join(
            Experiment, Experiment.id == Exposure.experiment_id).where(Experiment.key == "ranker-v2")
            .group_by(Exposure.variant)).all())
    control = quantile_estimate(histogram_from_events(*raw["control"]), 0.95, 0.05)
    sd = quantile_sd_from_se(control.std_error, exposed["control"])
    expected_n = sample_size_per_arm("mean", control.estimate, -0.1, 0.05, 0.8, quantile_sd_for(sd, -0.1))
    assert card["planned_n_per_variant"] == expected_n
    assert card["planned_n_per_variant"] > 0
    p95 = next(m for m in card["metrics"] if m["metric"] == "p95_latency")["variants"][0]
    n_now = min(exposed.values())
    assert p95["mde"] == pytest.approx(quantile_mde_at_n(control.estimate, n_now, 0.05, 0.8, sd), rel=1e-9)
    assert p95["power"] == pytest.approx(achieved_power("mean", control.estimate, -0.1, n_now, 0.05,
                                                        quantile_sd_for(sd, -0.1)), rel=1e-9)
    assert 0.0 < p95["power"] < 1.0
