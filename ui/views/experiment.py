"""Experiment page: status, analysis source and lifecycle buttons, when the scorecard was computed (analysts may
refresh it), progress to the planned n, SRM banner, scorecard table and forest plot (bandits: the stratified
estimates plotted and ticked, the pooled ones a secondary labelled view), cumulative lift, a segment breakdown
(per-value lifts, opposite-moving values flagged, SRM drill-down), allocation over time (contextual bandits: weights
per context value), serving latency and shadow agreement, audit log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ui.auth import Action
from ui.common import (
    DECISION_BADGE,
    DECISION_RULE,
    OTHER_CONTEXT,
    REVIEW_PAGE,
    age,
    allocation_chart,
    context_effect_rows,
    context_spec,
    context_weight_rows,
    experiment_picker,
    fmt_ci,
    fmt_num,
    fmt_pct,
    forest_plot,
    get_client,
    identity,
    is_adaptive,
    needs_role,
    not_available,
    parse_time,
    present,
    scorecard_rows,
    scorecard_table,
    segment_rows,
    show_refusal,
    stratified_rows,
    time_axis_format,
)

ACTIONS: dict[str, list[Action]] = {"draft": ["start"], "running": ["pause", "stop"], "paused": ["resume", "stop"]}
BUILT_IN_SOURCE = "built-in tables"
#: attributes offered for the segment breakdown after the experiment's own (context, targeting): the ones the
#: SDK examples and the simulator attach to units; any other can be typed in
COMMON_ATTRIBUTES = ("country", "platform")


def segment_attributes(experiment: dict[str, Any]) -> list[str]:
    """The attributes offered for the segment breakdown: the contextual bandit's attribute, the targeting
    conditions' attributes, then ``COMMON_ATTRIBUTES``; each once, in that order."""
    found = [(context_spec(experiment) or {}).get("attribute")]
    found += [c.get("attribute") for c in experiment.get("targeting") or [] if isinstance(c, dict)]
    found += list(COMMON_ATTRIBUTES)
    return list(dict.fromkeys(a for a in found if isinstance(a, str) and a))

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
source = ((exp.get("analysis") or {}).get("source")) or BUILT_IN_SOURCE  # "analysis" absent: the built-in tables
c1, c2, c3, c4, c5 = st.columns(5)
c1.metric("Status", exp["status"])
c2.metric("Type", exp["type"])
c3.metric(f"Allocation per {context['attribute']}" if context else "Allocation", exp["allocation"]["strategy"],
          help=f"contextual: weights per value of '{context['attribute']}'" if context else None)
c4.metric("Owner", exp["owner"])
c5.metric("Analysis source", "built-in" if source == BUILT_IN_SOURCE else source,
          help="where the scorecard reads exposures and events: titrate's own tables (built-in), or a warehouse "
               "source registered under /v1/sources (frozen at start)")
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
    st.dataframe(present(pd.DataFrame([{k: v.get(k) for k in ("key", "control", "weight", "current_weight", "model",
                                                              "shadow")}
                                       | {"payload": json.dumps(v.get("payload") or {})} for v in exp["variants"]])),
                 hide_index=True, width="stretch")
    st.json({"metrics": exp["metrics"], "design": exp["design"], "targeting": exp["targeting"],
             "traffic": exp["traffic"], "layer": exp["layer"]}, expanded=False)

st.subheader("Scorecard")
freshness, refresh_col = st.columns([4, 1])
refresh = False
if exp["status"] != "draft" and identity().may("refresh_scorecard"):
    refresh = refresh_col.button("Refresh now", key="refresh_scorecard", icon=":material/refresh:",
                                 help="recompute the scorecard from every event now (?fresh=true) instead of "
                                      "reading the last scheduled refresh")
scorecard_reply = client.scorecard(key, fresh=refresh) if exp["status"] != "draft" else None
scorecard: dict[str, Any] | None = None
if scorecard_reply is None:
    st.info("A draft has no scorecard yet: start it to freeze the plan and begin assigning.")
elif scorecard_reply.missing:
    not_available("The scorecard (/v1/experiments/{key}/scorecard)")
elif not scorecard_reply.ok:
    show_refusal(scorecard_reply, "Scorecard")
else:
    scorecard = scorecard_reply.data

if scorecard is not None:
    computed_at = scorecard.get("computed_at")
    if computed_at:
        freshness.caption(f"Computed at {parse_time(computed_at):%Y-%m-%d %H:%M:%S} UTC ({age(computed_at)} ago)"
                          + (" — refreshed now" if refresh else "") + f" · source: **{source}**")
    else:  # a service without stored scorecards computes each one on request
        freshness.caption(f"Computed on request, just now · source: **{source}**")
    srm = scorecard.get("srm") or {}
    if srm.get("ok") is False:
        st.error(f"Sample ratio mismatch (p = {srm.get('p_value'):.2g}): the split of exposed units does not match "
                 "the allocation — do not trust the lifts until it is explained (see the SRM drill-down under "
                 "**Segments**).", icon="🚨")
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
                    + (f" — variant `{d['variant']}`" if d.get("variant") else "")
                    + (f" · decided by {DECISION_RULE[d['rule']]}" if d.get("rule") in DECISION_RULE else ""))
        for reason in d.get("reasons", []):
            st.markdown(f"- {reason}")

    adaptive = is_adaptive(scorecard)
    bandit_rows = stratified_rows(scorecard)
    if bandit_rows:
        st.markdown("**Primary metric under adaptive allocation** — the stratified estimate is the one to read; "
                    "the pooled one is biased when the weights change over time")
        # numbers as text, so an estimate that cannot be computed yet reads "—", never "None"
        st.dataframe(present(pd.DataFrame([{
            "metric": r["metric"], "variant": r["variant"], "estimate": r["estimate"],
            "rel lift": fmt_pct(r["rel_lift"]), "CI": fmt_ci([r["rel_ci_low"], r["rel_ci_high"]]),
            "abs lift": fmt_num(r["abs_lift"]), "abs CI": r["abs_ci"], "p": fmt_num(r["p_value"], 3),
            "strata": r["strata"], "units by version": r["units by version"]} for r in bandit_rows])),
            hide_index=True, width="stretch")
        if scorecard.get("adaptive_allocation"):
            st.caption(f"ℹ️ {scorecard['adaptive_allocation']}")
        per_value = context_effect_rows(scorecard)
        if per_value and context is not None:
            st.markdown(f"**Per {context['attribute']}** — each value's own adaptively weighted effect (the "
                        "contextual policy serves each value its own leader)")
            st.dataframe(present(pd.DataFrame(per_value)), hide_index=True, width="stretch", key="context_effects")
        st.markdown("**All metrics** (primary: stratified; the others have only the pooled comparison)")

    rows = scorecard_rows(scorecard)
    if rows:
        st.dataframe(scorecard_table(rows), hide_index=True, width="stretch")
        chart = forest_plot(rows)
        if chart is not None:
            st.markdown("**Relative lift with confidence intervals**"
                        + (" (primary metric: stratified estimates)" if adaptive else ""))
            st.altair_chart(chart, width="stretch")
        if adaptive:
            with st.expander("Pooled (naive) estimates — biased under adaptive allocation, for comparison only"):
                pooled = scorecard_rows(scorecard, pooled=True)
                st.dataframe(scorecard_table(pooled), hide_index=True, width="stretch", key="pooled_table")
                pooled_chart = forest_plot(pooled)
                if pooled_chart is not None:
                    st.altair_chart(pooled_chart, width="stretch", key="pooled_forest")
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
            lift_axis = alt.Axis(format="+%")  # one axis for the band and the line: percent, signed
            base = alt.Chart(frame).encode(
                x=alt.X("at:T", title="as of (UTC)", scale=alt.Scale(type="utc"),
                        axis=alt.Axis(format=time_axis_format(started, end), labelOverlap=True)),
                color="variant:N")
            band = base.mark_area(opacity=0.2).encode(
                y=alt.Y("rel_ci_low:Q", axis=lift_axis, title="relative lift (95% CI)"), y2="rel_ci_high:Q")
            line = base.mark_line(point=True).encode(
                y=alt.Y("rel_lift:Q", axis=lift_axis, title="relative lift (95% CI)"),
                tooltip=["variant", alt.Tooltip("rel_lift:Q", format="+.1%")])
            st.altair_chart(band + line, width="stretch")
        else:
            st.caption("Not enough data over time yet.")

    st.subheader("Segments")
    options = segment_attributes(exp)
    s1, s2 = st.columns(2)
    chosen = s1.selectbox("Break down by attribute", options, index=0, key="segment_attribute",
                          help="per-value lifts and CIs of every metric (Benjamini–Hochberg across values), the "
                               "values moving opposite to the overall effect, and the SRM drill-down")
    other = s2.text_input("…or another exposure attribute", key="segment_other", placeholder="plan_tier").strip()
    chosen = other or chosen
    if chosen:
        breakdown = client.scorecard(key, segment=chosen)
        if not breakdown.ok:
            show_refusal(breakdown, f"Segments by {chosen}")
        else:
            card = breakdown.data
            flagged = card.get("opposite_segments") or []
            if flagged:
                st.warning("Segments moving opposite to the overall effect: " + "; ".join(
                    f"**{chosen}={'(missing)' if o.get('value') is None else o.get('value')}** on {o.get('metric')} "
                    f"({o.get('variant')}: "
                    f"{o.get('abs_lift'):+.4g} vs {o.get('overall_abs_lift'):+.4g} overall, "
                    f"adjusted p = {o.get('p_value_adjusted'):.2g})" for o in flagged), icon="⚠️")
            mismatched = [d for d in card.get("srm_drill_down") or [] if d.get("mismatch")]
            if mismatched:
                st.error(f"Sample ratio mismatch within {chosen}: "
                         + ", ".join("(missing)" if d.get("value") is None else str(d.get("value"))
                                     for d in mismatched), icon="🚨")
            seg_rows = segment_rows(card)
            if not seg_rows:
                st.caption(f"No exposures carry '{chosen}' yet.")
            else:
                if context is not None and chosen == context["attribute"]:
                    st.caption(f"Per {chosen}: each value's own estimate (pooled over allocation versions within "
                               "the value); the leaders the bandit acts on are in the weights table below.")
                st.dataframe(present(pd.DataFrame([{
                    "value": r["value"], "metric": r["metric"], "variant": r["variant"],
                    "n": r["n"], "control n": r["control_n"], "rel lift": fmt_pct(r["rel_lift"]),
                    "CI": fmt_ci([r["rel_ci_low"], r["rel_ci_high"]], reason=r.get("rel_ci_reason")),
                    "adjusted p": r["p_value_adjusted"], "opposite": "⚠️ opposite" if r["opposite"] else ""}
                    for r in seg_rows])), hide_index=True, width="stretch", key="segment_table")
                primary_name = next((m.get("metric") for m in scorecard.get("metrics", [])
                                     if m.get("role") == "primary"), None)
                seg_chart = forest_plot([{**r, "metric": f"{chosen}={r['value']}",
                                          "role": "opposite" if r["opposite"] else "segment"}
                                         for r in seg_rows if r["metric"] == primary_name])
                if seg_chart is not None:
                    st.markdown(f"**{primary_name} by {chosen}**")
                    st.altair_chart(seg_chart, width="stretch", key="segment_forest")
            drill = card.get("srm_drill_down") or []
            if drill:
                with st.expander(f"SRM drill-down by {chosen}", expanded=bool(mismatched)):
                    st.dataframe(present(pd.DataFrame([{
                        "value": "(missing)" if d.get("value") is None else d.get("value"),
                        **{f"units {k}": n for k, n in (d.get("observed") or {}).items()},
                        "p": d.get("p_value"), "adjusted p": d.get("p_value_adjusted"),
                        "mismatch": "🚨" if d.get("mismatch") else ""} for d in drill])),
                        hide_index=True, width="stretch", key="srm_drill_table")

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
            st.dataframe(present(pd.DataFrame(context_weight_rows(newest, context))), hide_index=True,
                         width="stretch",
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
            st.dataframe(present(pd.DataFrame([
                {"version": a["version"], "at": a["created_at"], "reason": a["reason"],
                 "weights": json.dumps(a["weights"]), "seed": a.get("seed")}
                | ({"weights per value": json.dumps(a.get("context_weights")) if a.get("context_weights") else None}
                   if context else {})
                for a in versions])), hide_index=True, width="stretch")

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
        st.dataframe(present(frame), hide_index=True, width="stretch")
        latency = frame.dropna(subset=["p50 ms"])
        if not latency.empty:
            melted = latency.melt(id_vars=["variant"], value_vars=["p50 ms", "p95 ms", "p99 ms"],
                                  var_name="percentile", value_name="ms")
            st.altair_chart(alt.Chart(melted).mark_bar().encode(
                x=alt.X("variant:N"), xOffset="percentile:N", y="ms:Q", color="percentile:N"), width="stretch")

st.subheader("Audit log")
audit = client.audit(key)
if audit.ok:
    st.dataframe(present(pd.DataFrame([{"at": a["at"], "actor": a["actor"], "action": a["action"],
                                       "reason": a.get("reason")} for a in audit.data])),
                 hide_index=True, width="stretch")
else:
    show_refusal(audit, "Audit log")
