"""Experiment page: status and lifecycle buttons, progress to the planned n, SRM banner, scorecard table and
forest plot (bandits: stratified vs pooled primary estimates first), cumulative lift, allocation over time (contextual
bandits: weights per context value), serving latency and shadow agreement, audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ui.auth import Action
from ui.common import (
    DECISION_BADGE,
    OTHER_CONTEXT,
    REVIEW_PAGE,
    allocation_chart,
    context_spec,
    context_weight_rows,
    experiment_picker,
    forest_plot,
    get_client,
    identity,
    needs_role,
    not_available,
    parse_time,
    scorecard_rows,
    show_refusal,
    stratified_rows,
)

ACTIONS: dict[str, list[Action]] = {"draft": ["start"], "running": ["pause", "stop"], "paused": ["resume", "stop"]}

client = get_client()
st.title("Experiment")

listing = client.experiments()
if not listing.ok:
    show_refusal(listing, "Listing experiments")
    st.stop()
key = experiment_picker(listing.data)
if key is None:
    st.stop()
reply = client.experiment(key)
if not reply.ok:
    show_refusal(reply, f"Loading '{key}'")
    st.stop()
exp: dict[str, Any] = reply.data
context = context_spec(exp)  # contextual Thompson sampling: {"attribute", "values"}

st.header(f"{exp['name']} · `{exp['key']}`")
st.markdown(f"> {exp['hypothesis_text']}")
c1, c2, c3, c4 = st.columns(4)
c1.metric("Status", exp["status"])
c2.metric("Type", exp["type"])
c3.metric(f"Allocation per {context['attribute']}" if context else "Allocation", exp["allocation"]["strategy"],
          help=f"contextual: weights per value of '{context['attribute']}'" if context else None)
c4.metric("Owner", exp["owner"])
if exp.get("shipped_variant"):
    st.success(f"Shipped variant **{exp['shipped_variant']}**.")

# Lifecycle: the buttons the current status allows, for a key whose role may use them (admin).
actions = ACTIONS.get(exp["status"], [])
allowed = [a for a in actions if identity().may(a)]
if actions and len(allowed) < len(actions):
    needs_role(actions[0], "Starting, pausing, resuming and stopping")
if actions:
    cols = st.columns(len(actions) + 3)
    for col, action in zip(cols, allowed, strict=False):
        if col.button(action.capitalize(), key=f"action_{action}",
                      type="primary" if action == "start" else "secondary"):
            result = client.transition(key, action)
            if result.ok:
                st.toast(f"{action}: now {result.data['status']}")
                st.rerun()
            else:
                show_refusal(result, action.capitalize())
    if exp["status"] in ("running", "paused"):
        cols[-1].page_link(REVIEW_PAGE, label="Ship / roll back…" if identity().may("ship") else "Review…",
                           query_params={"key": key}, icon="🚢")

with st.expander("Variants and plan", expanded=exp["status"] == "draft"):
    st.dataframe(pd.DataFrame([{k: v.get(k) for k in ("key", "control", "weight", "current_weight", "model", "shadow")}
                               | {"payload": str(v.get("payload"))} for v in exp["variants"]]),
                 hide_index=True, width="stretch")
    st.json({"metrics": exp["metrics"], "design": exp["design"], "targeting": exp["targeting"],
             "traffic": exp["traffic"], "layer": exp["layer"]}, expanded=False)

st.subheader("Scorecard")
scorecard_reply = client.scorecard(key)
scorecard: dict[str, Any] | None = None
if exp["status"] == "draft":
    st.info("A draft has no scorecard yet: start it to freeze the plan and begin assigning.")
elif scorecard_reply.missing:
    not_available("The scorecard (/v1/experiments/{key}/scorecard)")
elif not scorecard_reply.ok:
    show_refusal(scorecard_reply, "Scorecard")
else:
    scorecard = scorecard_reply.data

if scorecard is not None:
    srm = scorecard.get("srm") or {}
    if srm.get("ok") is False:
        st.error(f"Sample ratio mismatch (p = {srm.get('p_value'):.2g}): the split of exposed units does not match "
                 "the allocation — do not trust the lifts until it is explained.", icon="🚨")
    else:
        p = srm.get("p_value")
        st.caption(f"SRM check ok (p = {p:.3g})" if isinstance(p, float) else "SRM check: not enough data yet")

    planned = scorecard.get("planned_n_per_variant")
    current = scorecard.get("current_n") or {}
    if planned:
        smallest = min(current.values()) if current else 0
        st.progress(min(1.0, smallest / planned),
                    text=f"Progress to the planned sample: {smallest:,} / {planned:,} units in the smallest variant")
    decision_reply = client.decision(key)
    if decision_reply.ok:
        d = decision_reply.data
        st.markdown(f"**Decision:** {DECISION_BADGE.get(d['decision'], d['decision'])}"
                    + (f" — variant `{d['variant']}`" if d.get("variant") else ""))
        for reason in d.get("reasons", []):
            st.markdown(f"- {reason}")

    bandit_rows = stratified_rows(scorecard)
    if bandit_rows:
        st.markdown("**Primary metric under adaptive allocation** — the stratified estimate is the one to read; "
                    "the pooled one is biased when the weights change over time")
        st.dataframe(pd.DataFrame(bandit_rows), hide_index=True, width="stretch", column_config={
            "rel_lift": st.column_config.NumberColumn("rel lift", format="percent"),
            "rel_ci_low": st.column_config.NumberColumn("CI low", format="percent"),
            "rel_ci_high": st.column_config.NumberColumn("CI high", format="percent"),
            "abs_lift": st.column_config.NumberColumn("abs lift", format="%.4g"),
            "abs_ci": st.column_config.TextColumn("abs CI"),
        })
        if scorecard.get("adaptive_allocation"):
            st.caption(f"ℹ️ {scorecard['adaptive_allocation']}")
        st.markdown("**All metrics** (pooled)")

    rows = scorecard_rows(scorecard)
    if rows:
        table = pd.DataFrame(rows)
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "rel_lift": st.column_config.NumberColumn("rel lift", format="percent"),
            "rel_ci_low": st.column_config.NumberColumn("CI low", format="percent"),
            "rel_ci_high": st.column_config.NumberColumn("CI high", format="percent"),
            "chance_to_beat": st.column_config.NumberColumn("P(beat)", format="percent"),
        })
        chart = forest_plot(rows)
        if chart is not None:
            st.markdown("**Relative lift with confidence intervals**")
            st.altair_chart(chart, width="stretch")
    else:
        st.info("No metric results yet.")

    started = parse_time(exp.get("started_at"))
    if started is not None and st.toggle("Cumulative lift over time (primary metric)", key="cumulative"):
        end = parse_time(exp.get("ended_at")) or datetime.now(UTC)
        points = []
        for i in range(1, 9):
            at = started + (end - started) * i / 8
            snap = client.scorecard(key, as_of=at.isoformat())
            if not snap.ok:
                continue
            for r in scorecard_rows(snap.data):
                if r["role"] == "primary" and r["rel_lift"] is not None:
                    points.append({"at": at, **r})
        if points:
            frame = pd.DataFrame(points)
            base = alt.Chart(frame).encode(x=alt.X("at:T", title="as of"), color="variant:N")
            st.altair_chart(base.mark_area(opacity=0.2).encode(y=alt.Y("rel_ci_low:Q", axis=alt.Axis(format="%"),
                                                                       title="relative lift"), y2="rel_ci_high:Q")
                            + base.mark_line(point=True).encode(y="rel_lift:Q"), width="stretch")
        else:
            st.caption("Not enough data over time yet.")

st.subheader("Allocation over time")
history = client.allocations(key)
if history.missing:
    not_available("Allocation history")
elif history.ok:
    versions: list[dict[str, Any]] = sorted(history.data, key=lambda a: a["version"])
    chart_value: str | None = None
    if context is not None and versions:
        attribute = context["attribute"]
        st.caption(f"Contextual bandit on **{attribute}** ({', '.join(context['values'])}): each value has its own "
                   f"weights; units whose {attribute} is missing or not listed get the pooled weights.")
        newest = versions[-1]
        if newest.get("context_weights"):
            st.markdown(f"**Weights per {attribute}** (version {newest['version']})")
            variant_keys = list(newest.get("weights") or {})
            st.dataframe(pd.DataFrame(context_weight_rows(newest, context)), hide_index=True, width="stretch",
                         column_config={
                             **{v: st.column_config.NumberColumn(v, format="percent") for v in variant_keys},
                             "P(best)": st.column_config.NumberColumn("P(best) of leader", format="percent")})
        else:
            st.caption(f"No weights per {attribute} yet: every unit gets the pooled weights until the first "
                       "bandit update.")
        chart_value = st.selectbox(f"Show the allocation of {attribute}", [None, *context["values"]],
                                   format_func=lambda v: f"pooled ({OTHER_CONTEXT})" if v is None else str(v),
                                   key="alloc_context")
    area = allocation_chart(versions, chart_value)
    if area is None:
        st.caption("No allocation yet (it starts with the experiment).")
    else:
        st.altair_chart(area, width="stretch")
        with st.expander("Allocation versions"):
            st.dataframe(pd.DataFrame([{"version": a["version"], "at": a["created_at"], "reason": a["reason"],
                                        "weights": str(a["weights"]), "seed": a.get("seed")}
                                       | ({"weights per value": str(a.get("context_weights"))} if context else {})
                                       for a in versions]),
                         hide_index=True, width="stretch")

st.subheader("Serving")
serving = client.serving(key)
if serving.missing:
    not_available("Model serving reports (/v1/experiments/{key}/serving)")
elif not serving.ok:
    show_refusal(serving, "Serving report")
else:
    report_rows = []
    for v in serving.data.get("variants", []):
        lat = v.get("latency") or {}
        agreement = v.get("agreement_vs_control") or {}
        report_rows.append({"variant": v.get("variant"), "model": v.get("model"), "shadow": v.get("shadow"),
                            "requests": v.get("n"), "error rate": v.get("error_rate"), "p50 ms": lat.get("p50_ms"),
                            "p95 ms": lat.get("p95_ms"), "p99 ms": lat.get("p99_ms"),
                            "agreement": agreement.get("mean"), "PSI vs control": v.get("psi_vs_control")})
    if not report_rows or not any(r["requests"] for r in report_rows):
        st.caption("No predictions served through this experiment yet.")
    if report_rows:
        frame = pd.DataFrame(report_rows)
        st.dataframe(frame, hide_index=True, width="stretch")
        latency = frame.dropna(subset=["p50 ms"])
        if not latency.empty:
            melted = latency.melt(id_vars=["variant"], value_vars=["p50 ms", "p95 ms", "p99 ms"],
                                  var_name="percentile", value_name="ms")
            st.altair_chart(alt.Chart(melted).mark_bar().encode(
                x=alt.X("variant:N"), xOffset="percentile:N", y="ms:Q", color="percentile:N"), width="stretch")

st.subheader("Audit log")
audit = client.audit(key)
if audit.ok:
    st.dataframe(pd.DataFrame([{"at": a["at"], "actor": a["actor"], "action": a["action"], "reason": a.get("reason")}
                               for a in audit.data]), hide_index=True, width="stretch")
else:
    show_refusal(audit, "Audit log")
