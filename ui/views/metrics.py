"""Metrics catalog: list and create metric definitions (validation errors next to their fields)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui.common import ErrorSlots, get_client, identity, needs_role, present, show_refusal

client = get_client()
st.title("Metrics catalog")

if flash := st.session_state.pop("metric_created", None):
    st.success(f"Created metric **{flash}**.", icon="✅")

reply = client.metrics()
if not reply.ok:
    show_refusal(reply, "Listing metrics")
    st.stop()
if reply.data:
    st.dataframe(present(pd.DataFrame([{k: m.get(k) for k in ("key", "kind", "event", "aggregation", "quantile",
                                                      "over", "direction", "winsorize", "window_hours",
                                                      "description")}
                               | {"ratio": (f"{m['numerator']['event']} / {m['denominator']['event']}"
                                            if m.get("numerator") else None)} for m in reply.data])),
                 hide_index=True, width="stretch")
else:
    st.info("No metrics yet.")

st.subheader("Add a metric")
if not identity().may("create_metric"):
    needs_role("create_metric", "Adding a metric")
    st.stop()
slot = ErrorSlots()
kind = st.selectbox("Kind", ["proportion", "mean", "ratio", "quantile"], key="m_kind")
# why outside the form: the aggregation input appears only for a quantile over units (a form does not rerun)
over = (st.selectbox("Quantile over", ["events", "units"], key="m_over",
                     help="events: the quantile of every event's value (e.g. p95 latency); units: of each unit's "
                          "sum or count of the event, across units (e.g. median spend per user)")
        if kind == "quantile" else None)
with st.form("metric_form"):
    slot()
    key = st.text_input("Key", key="m_key", placeholder="conversion")
    slot("key")
    body: dict[str, Any] = {"key": key.strip(), "kind": kind}
    if kind == "ratio":
        c1, c2, c3, c4 = st.columns(4)
        body["numerator"] = {"event": c1.text_input("Numerator event", key="m_num"),
                             "aggregation": c2.selectbox("Numerator aggregation", ["sum", "count"], key="m_num_agg")}
        body["denominator"] = {"event": c3.text_input("Denominator event", key="m_den"),
                               "aggregation": c4.selectbox("Denominator aggregation", ["count", "sum"],
                                                           key="m_den_agg")}
        slot("numerator")
        slot("denominator")
    else:
        body["event"] = st.text_input("Event", key="m_event", placeholder="purchase")
        slot("event")
        if kind == "mean" or over == "units":
            body["aggregation"] = st.selectbox("Aggregation per unit", ["sum", "count"], key="m_agg")
            slot("aggregation")
        if kind == "quantile":
            body["quantile"] = st.number_input("Quantile (0 < q < 1, e.g. 0.95 for p95)", min_value=0.001,
                                               max_value=0.999, value=0.95, step=0.01, format="%.3f",
                                               key="m_quantile")
            body["over"] = over
            slot("quantile")
            slot("over")
    body["direction"] = st.selectbox("Direction", ["higher_is_better", "lower_is_better"], key="m_direction")
    c1, c2 = st.columns(2)
    with c1:
        # a quantile is robust to outliers already: the service refuses 'winsorize' on it
        winsorize = (st.number_input("Winsorize at (0 = off)", min_value=0.0, value=0.0, key="m_winsorize")
                     if kind != "quantile" else 0.0)
        slot("winsorize")
    with c2:
        window = st.number_input("Attribution window hours (0 = none)", min_value=0.0, value=0.0, key="m_window")
        slot("window_hours")
    description = st.text_input("Description", key="m_description")
    submitted = st.form_submit_button("Create metric", type="primary")

if submitted:
    if winsorize > 0:
        body["winsorize"] = winsorize
    if window > 0:
        body["window_hours"] = window
    if description.strip():
        body["description"] = description.strip()
    created = client.create_metric(body)
    if created.ok:
        st.session_state["metric_created"] = created.data["key"]
        st.rerun()
    elif created.field_errors:
        slot.place(created.field_errors)
    else:
        show_refusal(created, "Creating the metric")
