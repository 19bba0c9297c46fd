"""Ship/no-ship review: the decision with its reasons, variants side by side, and the admin actions.

Shipping anything other than what the decision recommends (or overriding a failed guardrail) requires a
written justification, sent as ``override_reason`` and kept in the audit log.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui.common import (
    DECISION_BADGE,
    estimate,
    experiment_picker,
    fmt_ci,
    fmt_pct,
    get_client,
    identity,
    needs_role,
    not_available,
    show_refusal,
)

client = get_client()
st.title("Ship / no-ship review")

listing = client.experiments(["running", "paused", "shipped", "rolled_back", "stopped"])
if not listing.ok:
    show_refusal(listing, "Listing experiments")
    st.stop()
key = experiment_picker(listing.data)
if key is None:
    st.stop()
exp: dict[str, Any] = next(e for e in listing.data if e["key"] == key)
st.markdown(f"**{exp['name']}** — status `{exp['status']}`  \n> {exp['hypothesis_text']}")

decision: dict[str, Any] | None = None
decision_reply = client.decision(key)
if decision_reply.missing:
    not_available("The decision (/v1/experiments/{key}/decision)")
elif not decision_reply.ok:
    show_refusal(decision_reply, "Decision")
else:
    decision = decision_reply.data
    badge = DECISION_BADGE.get(decision["decision"], decision["decision"])
    st.subheader(f"Decision: {badge}" + (f" `{decision['variant']}`" if decision.get("variant") else ""))
    for reason in decision.get("reasons", []):
        st.markdown(f"- {reason}")

scorecard_reply = client.scorecard(key)
if scorecard_reply.ok:
    st.subheader("Variants side by side")
    table: dict[str, dict[str, str]] = {}
    alpha = float(scorecard_reply.data.get("alpha") or 0.05)
    for metric in scorecard_reply.data.get("metrics", []):
        label = f"{metric['metric']} ({metric['role']})"
        for v in metric.get("variants", []):
            # bandits: the primary metric's stratified estimate (the pooled one is biased when weights move)
            est = estimate(v, alpha, pooled=metric.get("role") != "primary")
            cell = f"{fmt_pct(est['rel_lift'])} {fmt_ci(est['rel_ci'], reason=est['rel_ci_reason'])}"
            if est["estimate"] == "stratified":
                cell += " (stratified)"
            if v.get("guardrail"):
                cell += f" · guardrail {v['guardrail']}"
            table.setdefault(v["variant"], {})[label] = cell
    if table:
        st.dataframe(pd.DataFrame(table), width="stretch")

if exp["status"] not in ("running", "paused"):
    st.info(f"The experiment is {exp['status']}: nothing left to decide.")
    st.stop()

st.subheader("Act")
if not identity().may("ship"):
    needs_role("ship", "Shipping, rolling back and stopping")
    st.stop()
treatments = [v["key"] for v in exp["variants"] if not v["control"] and not v.get("shadow")]
recommended = decision.get("variant") if decision and decision["decision"] == "ship" else None
variant = st.selectbox("Variant to ship", treatments,
                       index=treatments.index(recommended) if recommended in treatments else 0, key="ship_variant")
override_needed = variant != recommended
reason = st.text_area("Override justification" + (" (required: the decision does not recommend shipping this)"
                                                   if override_needed else " (not needed)"),
                      key="override_reason", disabled=not override_needed)
c1, c2, c3 = st.columns(3)
if c1.button(f"Ship {variant}", type="primary", key="ship",
             disabled=override_needed and not reason.strip()):
    body = {"variant": variant, "override_reason": reason.strip() if override_needed else None}
    result = client.transition(key, "ship", body)
    if result.ok:
        st.success(f"Shipped {variant}.")
    else:
        show_refusal(result, "Ship")
rollback_reason = c2.text_input("Rollback reason", key="rollback_reason")
if c2.button("Roll back", key="rollback", disabled=not rollback_reason.strip()):
    result = client.transition(key, "rollback", {"reason": rollback_reason.strip()})
    if result.ok:
        st.success("Rolled back: everyone gets control.")
    else:
        show_refusal(result, "Rollback")
if c3.button("Stop", key="stop"):
    result = client.transition(key, "stop")
    if result.ok:
        st.success("Stopped.")
    else:
        show_refusal(result, "Stop")
