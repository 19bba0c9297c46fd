"""AppTest tests of what a newcomer meets in the console (issue 17 items 2, 3 and 6; issue 14 item 4): the analysis
source in the new-experiment form and on the experiment page, the scorecard's ``computed_at`` and "Refresh now",
bandit pages that plot and tick the stratified estimates (pooled as a labelled secondary view), the list's leader,
the segments section (per-value lifts, opposite moves flagged, SRM drill-down), and tables without "None".

Routes and fields other engineers are adding (``GET /v1/sources``, an experiment's ``analysis``, the scorecard's
``computed_at`` and ``?fresh=true``) are stubbed in the HTTP layer (``FutureService``, the way
``test_pages.WithoutNewRoutes`` stubs missing routes); everything else is the live service.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.ui import test_pages
from tests.ui.conftest import Service
from tests.ui.test_pages import assert_clean, chart_data, charts, open_page, table_with, texts
from ui import client as ui_client
from ui import common as ui_common

pytestmark = pytest.mark.usefixtures("console_env")


@pytest.fixture(autouse=True)
def _service(console_env: Service) -> None:
    test_pages.SERVICE = console_env  # the service ``open_page`` signs in to

SOURCES = [{"key": "lake", "url": "duckdb:////data/lake.duckdb",
            "exposures": {"table": "exp_log", "columns": {}}, "events": {"table": "ev", "columns": {}}}]
COMPUTED_AT = "2026-11-30T09:15:00+00:00"


class FutureService(httpx.HTTPTransport):
    """The live service plus the contract of routes and fields not landed yet: ``GET /v1/sources`` answers
    ``sources`` (None: 404), experiments named in ``analysis`` carry ``"analysis": {"source": …}``, scorecards carry
    ``computed_at`` (``?fresh=true`` moves it to now) — and nothing of these when not given, whatever the live service
    has by now. Bodies POSTed to ``/v1/experiments`` and scorecard query
    strings are recorded; ``analysis`` is stripped before the live service sees a new experiment."""

    def __init__(self, sources: list[dict[str, Any]] | None, analysis: dict[str, str],
                 computed_at: str | None = COMPUTED_AT,
                 segments: Any = None) -> None:
        super().__init__()
        self.sources, self.analysis, self.computed_at, self.segments = sources, analysis, computed_at, segments
        self.created: list[dict[str, Any]] = []
        self.scorecard_queries: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path == "/v1/sources" and method == "GET":
            if self.sources is None:
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, json=self.sources)
        if path == "/v1/experiments" and method == "POST":
            body = json.loads(request.content)
            self.created.append(dict(body))
            body.pop("analysis", None)
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            request = httpx.Request(method, request.url, headers=headers, json=body)
        response = super().handle_request(request)
        if not 200 <= response.status_code < 300 or method != "GET":
            return response
        key = path.removeprefix("/v1/experiments/")
        if path.startswith("/v1/experiments/") and "/" not in key:
            response.read()
            data = response.json()
            data.pop("analysis", None)
            if key in self.analysis:
                data["analysis"] = {"source": self.analysis[key]}
            return httpx.Response(200, json=data)
        if path.endswith("/scorecard"):
            response.read()
            data = response.json()
            query = request.url.query.decode()
            self.scorecard_queries.append(query)
            data.pop("computed_at", None)
            if self.computed_at is not None:
                data["computed_at"] = (datetime.now(UTC).isoformat() if "fresh=true" in query else self.computed_at)
            if self.segments is not None and "segment=" in query:
                data = self.segments(data)
            return httpx.Response(200, json=data)
        return response


@pytest.fixture
def future(monkeypatch: pytest.MonkeyPatch) -> Iterator[FutureService]:
    transport = FutureService(SOURCES, {"live-exp": "lake"})

    def make_http(base_url: str, timeout: float = 15.0, _: httpx.BaseTransport | None = None) -> httpx.Client:
        return ui_client.make_http(base_url, timeout, transport)

    monkeypatch.setattr(ui_common, "make_http", make_http)
    ui_common.get_http.clear()
    yield transport
    ui_common.get_http.clear()


@pytest.fixture
def past(monkeypatch: pytest.MonkeyPatch) -> Iterator[FutureService]:
    """The service as it was before analysis sources and stored scorecards: no /v1/sources, no ``analysis``, no
    ``computed_at`` (whatever the live service has by now)."""
    transport = FutureService(None, {}, computed_at=None)

    def make_http(base_url: str, timeout: float = 15.0, _: httpx.BaseTransport | None = None) -> httpx.Client:
        return ui_client.make_http(base_url, timeout, transport)

    monkeypatch.setattr(ui_common, "make_http", make_http)
    ui_common.get_http.clear()
    yield transport
    ui_common.get_http.clear()


def metric_value(at: AppTest, label: str) -> str:
    return str(next(m.value for m in at.metric if m.label == label))


def every_cell(at: AppTest) -> list[object]:
    return [cell for frame in at.dataframe for cell in frame.value.to_numpy().ravel().tolist()]


def assert_no_none(at: AppTest) -> None:
    """No table cell of the page shows "None" (a None, NaN or the text)."""
    bad = [c for c in every_cell(at) if c is None or (isinstance(c, float) and c != c) or c == "None"]
    assert not bad, bad


# --- Issue 14 item 4: the analysis source and computed_at -------------------------------------------------------

def fill_form(at: AppTest, key: str) -> None:
    for field, value in (("f_key", key), ("f_name", "Sourced"), ("f_owner", "bo"), ("f_change", "serve v2"),
                         ("f_rationale", "fresher")):
        at.text_input(key=field).input(value)


def test_new_experiment_names_the_analysis_source_picked(future: FutureService) -> None:
    at = open_page("views/new_experiment.py")
    picker = at.selectbox(key="f_source")
    assert picker.options[0].startswith("built-in tables")
    assert picker.options[1] == "lake (duckdb)"
    assert picker.value is None
    fill_form(at, "sourced-exp")
    picker.set_value("lake")
    at.button(key="f_submit").click().run()
    assert_clean(at)
    assert "Created experiment **sourced-exp**" in texts(at), texts(at)
    assert future.created[-1]["analysis"] == {"source": "lake"}

    at = open_page("views/new_experiment.py")
    fill_form(at, "builtin-exp")
    at.button(key="f_submit").click().run()
    assert "Created experiment **builtin-exp**" in texts(at), texts(at)
    assert "analysis" not in future.created[-1]  # the default: nothing sent, so any service accepts the body


def test_new_experiment_without_the_sources_route_offers_the_built_in_tables(past: FutureService) -> None:
    at = open_page("views/new_experiment.py")
    assert len(at.selectbox(key="f_source").options) == 1
    assert "This service has no analysis sources" in texts(at)


def test_experiment_page_shows_the_source_computed_at_and_refreshes(future: FutureService) -> None:
    at = open_page("views/experiment.py", key="live-exp")
    assert metric_value(at, "Analysis source") == "lake"
    assert "Computed at 2026-11-30 09:15:00 UTC" in texts(at)
    assert not any("fresh=true" in q for q in future.scorecard_queries)
    at.button(key="refresh_scorecard").click().run()
    assert_clean(at)
    assert any("fresh=true" in q for q in future.scorecard_queries)
    assert "refreshed now" in texts(at)


def test_experiment_page_tolerates_a_service_without_sources_or_computed_at(past: FutureService) -> None:
    at = open_page("views/experiment.py", key="live-exp")
    assert metric_value(at, "Analysis source") == "built-in"
    assert "Computed on request" in texts(at)
    assert at.button(key="refresh_scorecard")  # analysts and admins may ask for a fresh one


# --- Issue 17 item 2: bandit pages plot and tick the stratified estimates ---------------------------------------

def test_bandit_page_plots_and_ticks_the_stratified_estimates(console_env: Service,
                                                              contextual_experiment: str) -> None:
    with console_env.client() as http:
        card = http.get(f"/v1/experiments/{contextual_experiment}/scorecard").json()
    (primary,) = [m for m in card["metrics"] if m["role"] == "primary"]
    at = open_page("views/experiment.py", key=contextual_experiment)
    body = texts(at)
    assert "Relative lift with confidence intervals** (primary metric: stratified estimates)" in body

    table = table_with(at, "significant").set_index("variant")
    forest = chart_data(charts(at)[0]).set_index("variant")
    for v in primary["variants"]:
        strat = v["stratified"]
        assert table.loc[v["variant"], "estimate"] == "stratified"
        assert table.loc[v["variant"], "rel lift"] == f"{strat['rel_lift'] * 100:+.1f}%"
        assert table.loc[v["variant"], "significant"] == ("✔" if strat["p_value"] < card["alpha"] else "")
        assert forest.loc[v["variant"], "rel_lift"] == pytest.approx(strat["rel_lift"])
        assert forest.loc[v["variant"], "rel_ci_low"] == pytest.approx(strat["rel_ci"][0])

    # the pooled numbers: a labelled secondary view in an expander
    pooled = [d.value for d in at.dataframe if "estimate" in d.value.columns and "significant" in d.value.columns][1]
    pooled = pooled.set_index("variant")
    for v in primary["variants"]:
        assert pooled.loc[v["variant"], "estimate"] == "pooled"
        assert pooled.loc[v["variant"], "rel lift"] == f"{v['rel_lift'] * 100:+.1f}%"
        assert pooled.loc[v["variant"], "significant"] == ("✔" if v["significant"] else "")
    assert any("Pooled (naive) estimates — biased" in e.label for e in at.expander)


def test_experiments_list_shows_the_leader_not_the_first_arm(console_env: Service,
                                                             contextual_experiment: str) -> None:
    with console_env.client() as http:
        card = http.get(f"/v1/experiments/{contextual_experiment}/scorecard").json()
    (primary,) = [m for m in card["metrics"] if m["role"] == "primary"]
    best = max(primary["variants"], key=lambda v: v["stratified"]["rel_lift"])
    at = open_page("views/experiments.py")
    row = at.dataframe[0].value.set_index("key").loc[contextual_experiment]
    assert row["leader: primary lift [CI]"] == (f"{best['variant']}: {best['stratified']['rel_lift'] * 100:+.1f}% "
                                                f"{ui_common.fmt_ci(best['stratified']['rel_ci'])} (stratified)")


def test_leader_follows_the_metric_direction() -> None:
    def card(direction: str) -> dict[str, Any]:
        return {"alpha": 0.05, "metrics": [{"metric": "latency", "role": "primary", "direction": direction,
                                            "variants": [{"variant": "a", "rel_lift": -0.2, "rel_ci": [-0.3, -0.1]},
                                                         {"variant": "b", "rel_lift": 0.1, "rel_ci": [0.0, 0.2]}]}]}
    assert ui_common.primary_lift(card("lower_is_better")).startswith("a: -20.0%")
    assert ui_common.primary_lift(card("higher_is_better")).startswith("b: +10.0%")
    assert ui_common.primary_lift({"metrics": []}) == "—"


# --- Issue 17 item 3: the segments section ----------------------------------------------------------------------

def test_segments_section_flags_the_opposite_segment(segmented: str) -> None:
    at = open_page("views/experiment.py", key=segmented)
    picker = at.selectbox(key="segment_attribute")
    assert picker.value == "country"  # the first offered attribute is read at once
    warnings = [w.value for w in at.warning]
    assert any("Segments moving opposite to the overall effect" in w and "country=DE" in w for w in warnings), \
        warnings
    table = table_with(at, "opposite")
    flagged = table[table["opposite"] != ""]
    assert set(flagged["value"]) == {"DE"}
    assert set(table["value"]) == {"DE", "US"}
    assert table[table["metric"] == "conversion"]["rel lift"].str.match(r"^[+-]\d").all()
    seg_chart = chart_data(next(c for c in charts(at) if "country=DE" in set(chart_data(c).get("metric", []))))
    assert set(seg_chart["role"].dropna()) == {"opposite", "segment"}
    drill = table_with(at, "mismatch")
    assert set(drill["value"]) == {"DE", "US"}
    assert {"units control", "units v2"} <= set(drill.columns)
    assert_no_none(at)


def test_segments_section_shows_an_srm_mismatch_within_a_value(future: FutureService, segmented: str) -> None:
    def mismatch_in_de(card: dict[str, Any]) -> dict[str, Any]:
        for row in card.get("srm_drill_down") or []:
            row["mismatch"] = row["value"] == "DE"
        return card

    future.segments = mismatch_in_de
    at = open_page("views/experiment.py", key=segmented)
    assert any("Sample ratio mismatch within country: DE" in e.value for e in at.error), [e.value for e in at.error]
    assert any(e.label == "SRM drill-down by country" for e in at.expander)


def test_segments_section_takes_any_attribute(segmented: str) -> None:
    at = open_page("views/experiment.py", key=segmented)
    at.text_input(key="segment_other").input("plan_tier").run()
    assert_clean(at)
    table = table_with(at, "opposite")
    assert set(table["value"]) == {"(missing)"}  # nobody carries it: every unit is in the missing row
    assert not at.warning


# --- Issue 17 item 6: console details --------------------------------------------------------------------------

def test_experiment_tables_never_show_none(segmented: str) -> None:
    at = open_page("views/experiment.py", key="live-exp")
    assert_no_none(at)
    at = open_page("views/experiments.py")
    assert_no_none(at)


def test_present_replaces_missing_values() -> None:
    frame = ui_common.present(pd.DataFrame({"n": [12000, None], "x": [0.12345, None], "s": ["a", None],
                                            "full": [1, 2]}))
    assert list(frame["n"]) == ["12,000", "—"]
    assert list(frame["x"]) == ["0.1235", "—"]
    assert list(frame["s"]) == ["a", "—"]
    assert list(frame["full"]) == [1, 2]  # no gap: stays numeric


def test_experiments_list_puts_decision_and_guardrails_first() -> None:
    at = open_page("views/experiments.py")
    assert list(at.dataframe[0].proto.column_order)[:4] == ["key", "status", "decision", "guardrails"]


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(c.proto.spec) for c in charts(at)]


def test_allocation_ticks_show_seconds_and_cumulative_lift_is_percent() -> None:
    at = open_page("views/experiment.py", key="live-exp")
    axes = [s.get("encoding", {}).get("x", {}).get("axis", {}) for s in chart_specs(at)]
    # live-exp started seconds ago: ticks one minute apart would all read the same minute
    assert any(a.get("format") == "%H:%M:%S" for a in axes), axes
    at.toggle(key="cumulative").set_value(True).run()
    assert_clean(at)
    cumulative = [s for s in chart_specs(at) if "layer" in s and any(
        layer.get("encoding", {}).get("y", {}).get("field") == "rel_ci_low" for layer in s["layer"])]
    assert cumulative
    y_axes = [layer["encoding"]["y"]["axis"] for layer in cumulative[-1]["layer"]]
    assert all(axis.get("format") == "+%" for axis in y_axes), y_axes


@pytest.mark.parametrize(("span", "fmt"), [(timedelta(seconds=40), "%H:%M:%S"), (timedelta(hours=5), "%b %d %H:%M"),
                                           (timedelta(days=9), "%b %d")])
def test_time_axis_format_follows_the_span(span: timedelta, fmt: str) -> None:
    start = datetime(2026, 11, 30, tzinfo=UTC)
    assert ui_common.time_axis_format(start, start + span) == fmt
