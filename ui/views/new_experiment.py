"""New experiment: a form built around the hypothesis, with a live design panel (POST /v1/design).

The analysis source (``GET /v1/sources``; default: titrate's built-in tables) is sent as
``"analysis": {"source": key}`` only when another one is picked. Validation errors from the service (422,
``{"detail": [{"loc": [...], "msg": ...}]}``) are shown under the field they name; errors of the whole body
(cross-field rules) above the submit button.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from ui.client import FieldError
from ui.common import EXPERIMENT_PAGE, ErrorSlots, get_client, identity, needs_role, not_available, show_refusal

BUILT_IN_SOURCE = "built-in tables"
OPERATORS = ["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte"]
DEFAULT_STEPS = ('[{"fraction": 0.05, "min_units": 1000, "min_hours": 24},\n'
                 ' {"fraction": 0.25, "min_units": 5000, "min_hours": 24},\n {"fraction": 1.0}]')

client = get_client()
st.title("New experiment")
if not identity().may("create_experiment"):
    needs_role("create_experiment", "Creating an experiment")
    st.stop()

slot = ErrorSlots()  # a placeholder under each field, filled after a submission names that field


metrics_reply = client.metrics()
if not metrics_reply.ok:
    show_refusal(metrics_reply, "Loading the metrics catalog")
    st.stop()
catalog = {m["key"]: m for m in metrics_reply.data}
if not catalog:
    st.warning("The metrics catalog is empty: add a metric on the **Metrics catalog** page first.")
    st.page_link("views/metrics.py", label="Metrics catalog", icon="📏")
    st.stop()
models_reply = client.models()
model_keys = [m["key"] for m in models_reply.data] if models_reply.ok else []

slot()  # general errors (rules across fields) at the top too

st.subheader("Identity")
c1, c2, c3 = st.columns(3)
with c1:
    key = st.text_input("Key", placeholder="ranker-v2", key="f_key", help="letters, digits, . _ - (in URLs)")
    slot("key")
with c2:
    name = st.text_input("Name", placeholder="Ranker v2", key="f_name")
    slot("name")
with c3:
    owner = st.text_input("Owner", placeholder="ana", key="f_owner")
    slot("owner")
description = st.text_area("Description (optional)", key="f_description", height=68)
slot("description")

st.subheader("Metrics")
keys = list(catalog)
m1, m2 = st.columns(2)
with m1:
    primary = st.selectbox("Primary metric", keys, key="f_primary",
                           format_func=lambda k: f"{k} ({catalog[k]['kind']}, {catalog[k]['direction']})")
    slot("metrics", "primary")
with m2:
    secondary = st.multiselect("Secondary metrics", [k for k in keys if k != primary], key="f_secondary")
    slot("metrics", "secondary")
guardrail_keys = st.multiselect("Guardrail metrics", keys, key="f_guardrails",
                                help="each with a relative non-inferiority margin (0.05 = at most 5 % worse)")
guardrails = []
if guardrail_keys:
    cols = st.columns(min(4, len(guardrail_keys)))
    for i, g in enumerate(guardrail_keys):
        with cols[i % len(cols)]:
            margin = st.number_input(f"Margin for {g}", min_value=0.001, max_value=1.0, value=0.05, step=0.01,
                                     format="%.3f", key=f"f_margin_{g}")
            guardrails.append({"metric": g, "margin": margin})
slot("metrics", "guardrails")
slot("metrics")

st.subheader("Hypothesis")
h1, h2, h3 = st.columns([3, 1, 3])
with h1:
    change = st.text_input("If we …", placeholder="serve ranker v2", key="f_change")
    slot("hypothesis", "change")
with h2:
    direction = st.selectbox(f"then {primary} will …", ["increase", "decrease"], key="f_direction")
    slot("hypothesis", "direction")
with h3:
    rationale = st.text_input("because …", placeholder="its features are fresher", key="f_rationale")
    slot("hypothesis", "rationale")
st.markdown(f"> **If we** {change or '…'}, **then** `{primary}` **will** {direction} **because** {rationale or '…'}.")
slot("hypothesis")

st.subheader("Variants")
t1, t2, t3 = st.columns(3)
with t1:
    exp_type = st.selectbox("Type", ["ab", "rollout"], key="f_type")
    slot("type")
with t2:
    strategy = st.selectbox("Allocation strategy", ["fixed", "ramp", "thompson"], key="f_strategy")
with t3:
    n_variants = int(st.number_input("Number of variants", min_value=2, max_value=20, value=2, key="f_n_variants"))
allocation: dict[str, Any] = {"strategy": strategy}
local_errors: list[FieldError] = []
if strategy == "ramp":
    steps_text = st.text_area("Ramp steps (JSON)", DEFAULT_STEPS, key="f_steps")
    try:
        allocation["steps"] = json.loads(steps_text)
    except ValueError as exc:
        local_errors.append(FieldError(("allocation", "steps"), f"not JSON: {exc}"))
elif strategy == "thompson":
    b1, b2, b3 = st.columns([1, 1, 2])
    with b1:
        allocation["floor"] = st.number_input("Floor (minimum share per variant)", 0.0, 0.5, 0.05, 0.01,
                                              key="f_floor")
        slot("allocation", "floor")
    with b2:
        context_attribute = st.text_input(
            "Contextual on attribute (optional)", key="f_ctx_attr", placeholder="platform",
            help="weights per value of this unit attribute (one posterior per value); "
                 "units whose value is missing or not listed get the pooled weights")
        slot("allocation", "context", "attribute")
    with b3:
        context_text = st.text_input("Context values (comma-separated)", key="f_ctx_values",
                                     placeholder="ios, android, web")
        slot("allocation", "context", "values")
    context_values = [t.strip() for t in context_text.split(",") if t.strip()]  # strings, as attributes match
    if context_attribute.strip() or context_values:  # half-filled: sent, so the service names the missing half
        allocation["context"] = {"attribute": context_attribute.strip(), "values": context_values}
    slot("allocation", "context")
slot("allocation")

control_index = st.radio("Control", list(range(n_variants)), format_func=lambda i: f"variant #{i + 1}",
                         horizontal=True, key="f_control")
variants = []
for i in range(n_variants):
    with st.container(border=True):
        v1, v2, v3, v4 = st.columns([2, 1, 2, 3])
        default_key = "control" if i == 0 else ("treatment" if n_variants == 2 else f"treatment-{i}")
        v_key = v1.text_input(f"Key #{i + 1}", default_key, key=f"f_vkey_{i}")
        weight = v2.number_input(f"Weight #{i + 1}", 0.0, 1.0, round(1.0 / n_variants, 6), 0.05, format="%.4f",
                                 key=f"f_weight_{i}")
        model = v3.selectbox(f"Model #{i + 1}", [""] + model_keys, key=f"f_model_{i}",
                             format_func=lambda k: k or "(none)", accept_new_options=True)
        payload_text = v4.text_area(f"Payload #{i + 1} (JSON)", "{}", key=f"f_payload_{i}", height=68)
        try:
            payload = json.loads(payload_text or "{}")
        except ValueError as exc:
            payload = {}
            local_errors.append(FieldError(("variants", i, "payload"), f"not JSON: {exc}"))
        slot("variants", i)
    variants.append({"key": v_key, "weight": weight, "control": i == control_index, "model": model or None,
                     "payload": payload})
slot("variants")

st.subheader("Design")
d1, d2, d3, d4 = st.columns(4)
alpha = d1.number_input("alpha", 0.001, 0.5, 0.05, 0.01, format="%.3f", key="f_alpha")
power = d2.number_input("power", 0.5, 0.99, 0.8, 0.05, key="f_power")
mde = d3.number_input("MDE (relative)", 0.001, 10.0, 0.05, 0.01, format="%.3f", key="f_mde")
with d4:
    sequential = st.checkbox("sequential", key="f_sequential")
    cuped = st.checkbox("CUPED", key="f_cuped")
slot("design")

st.subheader("Analysis source")
sources_reply = client.sources()
sources = {str(s["key"]): s for s in sources_reply.data if isinstance(s, dict) and s.get("key")} \
    if sources_reply.ok and isinstance(sources_reply.data, list) else {}


def _source_label(source_key: str | None) -> str:
    if source_key is None:
        return f"{BUILT_IN_SOURCE} (exposures and events sent to titrate)"
    engine = str(sources[source_key].get("url") or "").split(":", 1)[0].split("+", 1)[0]
    return f"{source_key} ({engine})" if engine else source_key


analysis_source = st.selectbox(
    "Where the scorecard reads exposures and events", [None, *sources], format_func=_source_label, key="f_source",
    help="a warehouse or lake registered under /v1/sources (admin), or titrate's own tables; frozen at start")
if sources_reply.missing:
    st.caption("This service has no analysis sources (/v1/sources): scorecards read titrate's own tables.")
elif not sources_reply.ok:
    st.caption(f"Could not list the analysis sources ({sources_reply.message}): the built-in tables are used.")
slot("analysis")

st.subheader("Audience")
a1, a2 = st.columns(2)
with a1:
    traffic = st.slider("Traffic (share of eligible units)", 0.01, 1.0, 1.0, 0.01, key="f_traffic")
    slot("traffic")
with a2:
    layer = st.text_input("Layer (optional, mutually exclusive experiments)", key="f_layer")
    slot("layer")
n_conditions = int(st.number_input("Targeting conditions", 0, 50, 0, key="f_n_conditions"))
targeting = []
for i in range(n_conditions):
    g1, g2, g3 = st.columns([2, 1, 3])
    attribute = g1.text_input(f"Attribute #{i + 1}", key=f"f_attr_{i}", placeholder="country")
    op = g2.selectbox(f"Op #{i + 1}", OPERATORS, index=2, key=f"f_op_{i}")
    raw_values = g3.text_input(f"Values #{i + 1} (comma-separated)", key=f"f_values_{i}", placeholder="US, CA")
    values: list[Any] = []
    for token in (t.strip() for t in raw_values.split(",")):
        if not token:
            continue
        try:
            values.append(json.loads(token))  # numbers and booleans keep their type
        except ValueError:
            values.append(token)
    targeting.append({"attribute": attribute, "op": op, "values": values})
    slot("targeting", i)
slot("targeting")

# The design panel: sample size and duration, recomputed on every change.
with st.sidebar:
    st.subheader("Design panel")
    metric = catalog[primary]
    kind = "proportion" if metric["kind"] == "proportion" else "mean"
    quantile_primary = metric["kind"] == "quantile"
    baseline = st.number_input("Baseline (control quantile)" if quantile_primary else "Baseline (control mean)",
                               value=0.10 if kind == "proportion" else 10.0, min_value=1e-6, format="%.4f",
                               key="f_baseline")
    if quantile_primary:
        # why: the service sizes a quantile as a mean with σ_Q, the SD of √n (Q̂ − Q), the treatment's scaled by
        # 1 + mde (scorecards.power.quantile_sd_for); i.i.d. values: σ_Q = √(q(1 − q))/f(Q)
        sigma_q = st.number_input("σ_Q per unit: √(q(1 − q))/f(Q), or a pilot's SE × √n", value=5.0,
                                  min_value=1e-6, key="f_sigma_q")
        sd: float | None = sigma_q * ((1.0 + (1.0 + mde) ** 2) / 2.0) ** 0.5
    else:
        sd = st.number_input("Per-unit SD", value=5.0, min_value=1e-6, key="f_sd") if kind == "mean" else None
    daily = st.number_input("Eligible units per day", value=20000, min_value=1, step=1000, key="f_daily")
    served = sum(1 for v in variants if not v.get("shadow"))
    design_body = {"kind": kind, "baseline": baseline, "mde": mde, "alpha": alpha, "power": power,
                   "variants": max(2, served), "daily_units": daily * traffic}
    if sd is not None:
        design_body["sd"] = sd
    design_reply = client.design(design_body)
    if design_reply.missing:
        not_available("The design calculator (/v1/design)")
    elif design_reply.ok:
        plan = design_reply.data
        st.metric("Units per variant", f"{plan['n_per_variant']:,}")
        st.metric("Total units", f"{plan['total_units']:,}")
        st.metric("Expected duration", f"{plan['days']} days")
        st.caption(f"at {daily * traffic:,.0f} units/day after traffic {traffic:.0%}")
    else:
        st.warning(design_reply.message)

body: dict[str, Any] = {
    "key": key.strip(), "name": name.strip(), "owner": owner.strip(),
    "hypothesis": {"change": change.strip(), "metric": primary, "direction": direction, "rationale": rationale.strip()},
    "type": exp_type, "allocation": allocation, "variants": variants,
    "metrics": {"primary": primary, "secondary": secondary, "guardrails": guardrails},
    "design": {"alpha": alpha, "power": power, "mde": mde, "sequential": sequential, "cuped": cuped},
    "targeting": targeting, "traffic": traffic, "layer": layer.strip() or None,
}
if description.strip():
    body["description"] = description.strip()
if analysis_source is not None:  # absent = the built-in tables, so services without sources accept the body
    body["analysis"] = {"source": analysis_source}

with st.expander("Request body"):
    st.json(body)
slot("_submit")
if st.button("Create experiment", type="primary", key="f_submit"):
    if local_errors:
        slot.place(local_errors)
    else:
        reply = client.create_experiment(body)
        if reply.ok:
            st.success(f"Created experiment **{reply.data['key']}** (draft).", icon="✅")
            st.page_link(EXPERIMENT_PAGE, label=f"Open {reply.data['key']}", query_params={"key": reply.data["key"]},
                         icon="📈")
        elif reply.field_errors:
            slot.place(reply.field_errors)
            slot.slots[("_submit",)].error("The service refused the experiment: see the fields marked ❗.", icon="❗")
        else:
            slot.slots[("_submit",)].error(reply.message, icon="⚠️")
