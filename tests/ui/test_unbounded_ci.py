"""The console shows an unbounded Fieller interval as words, never as a bar (issue 16, item 1)."""

from __future__ import annotations

from typing import Any

from ui import common


def _card(reason: str, ci: list[float | None]) -> dict[str, Any]:
    return {"alpha": 0.05, "metrics": [{"metric": "revenue", "role": "primary", "variants": [
        {"variant": "v2", "n": 40, "mean": 1.2, "control_n": 40, "control_mean": 0.1, "rel_lift": 11.0, "rel_ci": ci,
         "rel_ci_reason": reason, "p_value": 0.2, "significant": False}]}]}


def test_an_unbounded_interval_is_said_in_words_and_gets_no_bar() -> None:
    card = _card("unbounded_relative_ci", [None, None])
    rows = common.scorecard_rows(card)
    assert common.scorecard_table(rows)["CI"][0] == common.UNBOUNDED_TEXT
    assert common.UNBOUNDED_TEXT in common.primary_lift(card)
    chart = common.forest_plot(rows)
    assert chart is not None
    spec = chart.to_dict()
    bar_data = [layer for layer in spec["layer"] if layer.get("mark", {}).get("type") == "rule"
                and layer.get("encoding", {}).get("x2")]
    assert len(bar_data) == 1
    datasets = spec.get("datasets", {})
    name = bar_data[0].get("data", {}).get("name")
    assert name is not None
    assert datasets[name] == []  # no interval drawn
    assert "(CI unbounded)" in str(spec)


def test_a_bounded_interval_is_unchanged() -> None:
    card = _card("ok", [0.05, 0.2])
    assert common.scorecard_table(common.scorecard_rows(card))["CI"][0] == "[+5.0%, +20.0%]"
    assert common.fmt_ci([None, None]) == "—"
