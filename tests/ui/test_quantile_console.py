"""The console and quantile metrics (issue 16, item 3): the metrics page defines one (kind "quantile", the quantile,
over events or units — the per-unit aggregation only over units, no winsorize), the experiment page shows a
running experiment whose scorecard has quantile metrics (per-event p95 guardrail, per-unit median secondary), and
the new-experiment design panel sizes a quantile primary from σ_Q. AppTest against the live service."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from tests.ui.conftest import Service, experiment_body
from tests.ui.test_pages import _service, assert_clean, open_page, texts  # noqa: F401  (_service: autouse)

pytestmark = pytest.mark.usefixtures("console_env")
P95 = {"key": "p95_latency_q", "kind": "quantile", "event": "latency_ms", "quantile": 0.95,
       "direction": "lower_is_better"}
P50 = {"key": "p50_spend_q", "kind": "quantile", "event": "purchase", "quantile": 0.5, "over": "units",
       "direction": "higher_is_better"}


@pytest.fixture(scope="module")
def quantile_experiment(live_service: Service) -> str:
    """A running experiment with a p95 latency guardrail and a median-spend-per-unit secondary, with events."""
    key = "quantile-exp"
    with live_service.client() as http:
        for metric in (P95, P50):
            assert http.post("/v1/metrics", json=metric).status_code in (201, 409)
        body = experiment_body(key, metrics={"primary": "conversion", "secondary": [P50["key"]],
                                             "guardrails": [{"metric": P95["key"], "margin": 0.05}]})
        http.post("/v1/experiments", json=body).raise_for_status()
        http.post(f"/v1/experiments/{key}/start").raise_for_status()
        assigned = {}
        for i in range(120):
            unit = f"q-{i}"
            reply = http.post("/v1/assign", json={"unit_id": unit, "experiments": [key]})
            assigned[unit] = reply.json()["assignments"][key]["variant"]
        time.sleep(0.5)  # the batched exposure writer
        now = datetime.now(UTC).isoformat()
        events = []
        for i, (unit, variant) in enumerate(assigned.items()):
            for k in range(1 + i % 4):
                events.append({"event_id": str(uuid.uuid4()), "unit_id": unit, "name": "latency_ms",
                               "value": (100.0 + 7 * ((i + k) % 11)) * (1.2 if variant == "v2" else 1.0),
                               "timestamp": now, "attributes": {}})
            if i % 3:
                events.append({"event_id": str(uuid.uuid4()), "unit_id": unit, "name": "purchase",
                               "value": 10.0 + i % 9, "timestamp": now, "attributes": {}})
        http.post("/v1/events", json={"events": events}).raise_for_status()
    return key


def test_the_metrics_page_defines_a_quantile_over_units(console_env: Service) -> None:
    at = open_page("views/metrics.py")
    at.selectbox(key="m_kind").set_value("quantile").run()
    assert not at.number_input(key="m_quantile").disabled
    assert "m_winsorize" not in [n.key for n in at.number_input]
    assert "m_agg" not in [s.key for s in at.selectbox]  # over events: no per-unit aggregation
    at.selectbox(key="m_over").set_value("units").run()
    at.text_input(key="m_key").input("p90_orders_ui")
    at.text_input(key="m_event").input("purchase")
    at.selectbox(key="m_agg").set_value("count")
    at.number_input(key="m_quantile").set_value(0.9)
    at.button(key="FormSubmitter:metric_form-Create metric").click().run()
    assert_clean(at)
    assert "Created metric **p90_orders_ui**" in texts(at), texts(at)
    table = at.dataframe[0].value
    row = table[table["key"] == "p90_orders_ui"].iloc[0]
    assert (row["kind"], row["over"], row["aggregation"]) == ("quantile", "units", "count")
    with console_env.client() as http:
        stored = http.get("/v1/metrics/p90_orders_ui").json()
    assert (stored["quantile"], stored["over"], stored["aggregation"]) == (0.9, "units", "count")


def test_the_metrics_page_defines_a_p95_over_events(console_env: Service) -> None:
    at = open_page("views/metrics.py")
    at.selectbox(key="m_kind").set_value("quantile").run()
    at.text_input(key="m_key").input("p99_latency_ui")
    at.text_input(key="m_event").input("latency_ms")
    at.number_input(key="m_quantile").set_value(0.99)
    at.selectbox(key="m_direction").set_value("lower_is_better")
    at.button(key="FormSubmitter:metric_form-Create metric").click().run()
    assert_clean(at)
    with console_env.client() as http:
        stored = http.get("/v1/metrics/p99_latency_ui").json()
    assert (stored["kind"], stored["quantile"], stored["over"], stored["aggregation"]) == (
        "quantile", 0.99, "events", None)


def test_the_experiment_page_shows_quantile_metrics(quantile_experiment: str) -> None:
    at = open_page("views/experiment.py", key=quantile_experiment)
    assert_clean(at)
    shown = "\n".join(str(frame.value.to_dict()) for frame in at.dataframe)
    assert P95["key"] in shown, shown
    assert P50["key"] in shown, shown


def test_the_design_panel_sizes_a_quantile_primary(quantile_experiment: str) -> None:
    at = open_page("views/new_experiment.py")
    at.selectbox(key="f_primary").set_value(P95["key"]).run()
    assert_clean(at)
    assert "f_sigma_q" in [n.key for n in at.number_input]
    assert "f_sd" not in [n.key for n in at.number_input]
    units = [m.value for m in at.metric if m.label == "Units per variant"]
    assert units, texts(at)
    assert int(units[0].replace(",", "")) > 0
