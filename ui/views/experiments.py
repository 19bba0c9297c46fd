"""Experiments: every experiment with status, the current decision, guardrails, the leading treatment's primary
lift (bandits: stratified), exposed units, age, allocation, type and owner; filter by status and search. The
decision and guardrail columns come right after the key and status, so no window width cuts them off."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui.common import (
    DECISION_BADGE,
    EXPERIMENT_PAGE,
    STATUSES,
    age,
    exposed_units,
    get_client,
    guardrail_light,
    not_available,
    present,
    primary_lift,
    show_refusal,
)

MAX_ANALYSED = 50  # scorecards are computed per request: only the newest experiments get one in the list
LIFT = "leader: primary lift [CI]"
#: the columns in the order shown: what a person scans for first (decision, guardrails, lift) before the details
COLUMNS = ["key", "status", "decision", "guardrails", LIFT, "exposed units", "age", "allocation", "type", "owner",
           "name"]

client = get_client()
st.title("Experiments")

left, right = st.columns([2, 3])
statuses = left.multiselect("Status", STATUSES, default=[], placeholder="any status", key="status_filter")
search = right.text_input("Search", placeholder="key, name, owner or hypothesis", key="search")

reply = client.experiments(statuses)
if not reply.ok:
    show_refusal(reply, "Listing experiments")
    st.stop()
experiments: list[dict[str, Any]] = reply.data
if search:
    needle = search.lower()
    fields = ("key", "name", "owner", "hypothesis_text")
    experiments = [e for e in experiments if needle in " ".join(str(e.get(f, "")) for f in fields).lower()]

analysis_missing = False
rows = []
for i, e in enumerate(experiments):
    scorecard = decision = None
    if e["status"] != "draft" and i < MAX_ANALYSED and not analysis_missing:
        sc = client.scorecard(e["key"])
        if sc.status == 404:
            analysis_missing = True  # the analysis routes have not landed on this service
        elif sc.ok:
            scorecard = sc.data
            dec = client.decision(e["key"])
            decision = dec.data if dec.ok else None
    rows.append({
        "key": e["key"], "name": e["name"], "status": e["status"], "type": e["type"],
        "allocation": e["allocation"]["strategy"], "owner": e["owner"],
        "age": age(e.get("started_at") or e.get("created_at")),
        "exposed units": exposed_units(scorecard),
        LIFT: primary_lift(scorecard),
        "guardrails": guardrail_light(scorecard),
        "decision": DECISION_BADGE.get((decision or {}).get("decision", ""), "—"),
    })

st.caption(f"{len(rows)} experiment(s)")
if analysis_missing:
    not_available("Scorecards and decisions (lift, guardrails, decision columns)")
if not rows:
    st.info("No experiments match. Create one on the **New experiment** page.")
    st.page_link("views/new_experiment.py", label="New experiment", icon="➕")
    st.stop()

st.dataframe(present(pd.DataFrame(rows)), hide_index=True, width="stretch", column_order=COLUMNS, column_config={
    "key": st.column_config.TextColumn(pinned=True),
    "decision": st.column_config.TextColumn(width="medium"),  # "⏳ keep running" whole
    "guardrails": st.column_config.TextColumn(width="small"),
    LIFT: st.column_config.TextColumn(width="medium", help="the treatment leading on the primary metric"),
    "name": st.column_config.TextColumn(width="medium"),
})

st.subheader("Open")
for row in rows[:MAX_ANALYSED]:
    st.page_link(EXPERIMENT_PAGE, label=f"{row['key']} — {row['name']} ({row['status']})",
                 query_params={"key": row["key"]}, icon="📈")
