"""Design calculator: sample size per variant, total units and duration (POST /v1/design), and how they move
with the minimum detectable effect."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui.common import get_client, not_available, show_refusal

client = get_client()
st.title("Design calculator")

c1, c2, c3 = st.columns(3)
kind = c1.selectbox("Metric kind", ["proportion", "mean"], key="d_kind")
baseline = c2.number_input("Baseline (control mean)", min_value=1e-6, value=0.10 if kind == "proportion" else 10.0,
                           format="%.4f", key=f"d_baseline_{kind}")
sd = c3.number_input("Per-unit SD", min_value=1e-6, value=5.0, key="d_sd") if kind == "mean" else None
c1, c2, c3, c4, c5 = st.columns(5)
mde = c1.number_input("MDE (relative)", min_value=0.001, max_value=10.0, value=0.05, step=0.01, format="%.3f",
                      key="d_mde")
alpha = c2.number_input("alpha", min_value=0.001, max_value=0.5, value=0.05, step=0.01, format="%.3f", key="d_alpha")
power = c3.number_input("power", min_value=0.5, max_value=0.99, value=0.8, step=0.05, key="d_power")
variants = int(c4.number_input("variants", min_value=2, max_value=20, value=2, key="d_variants"))
daily = c5.number_input("units per day", min_value=1, value=20000, step=1000, key="d_daily")


def body_for(effect: float) -> dict[str, object]:
    """The ``POST /v1/design`` body of the inputs above, with ``effect`` as the MDE."""
    body: dict[str, object] = {"kind": kind, "baseline": baseline, "mde": effect, "alpha": alpha, "power": power,
                               "variants": variants, "daily_units": daily}
    if sd is not None:
        body["sd"] = sd
    return body


reply = client.design(body_for(mde))
if reply.missing:
    not_available("The design calculator (/v1/design)")
    st.stop()
if not reply.ok:
    show_refusal(reply, "The design calculator")
    st.stop()
plan = reply.data
m1, m2, m3 = st.columns(3)
m1.metric("Units per variant", f"{plan['n_per_variant']:,}")
m2.metric("Total units", f"{plan['total_units']:,}")
m3.metric("Days", f"{plan['days']:,}")
if plan.get("formula"):
    st.caption(plan["formula"])

st.subheader("Sample size against the MDE")
curve = []
for factor in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
    effect = mde * factor
    point = client.design(body_for(effect))
    if point.ok:
        curve.append({"mde": effect, "n_per_variant": point.data["n_per_variant"], "days": point.data["days"]})
if curve:
    frame = pd.DataFrame(curve)
    st.altair_chart(alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("mde:Q", axis=alt.Axis(format="%"), title="relative MDE"),
        y=alt.Y("n_per_variant:Q", scale=alt.Scale(type="log"), title="units per variant"),
        tooltip=["mde", "n_per_variant", "days"]), width="stretch")
    st.dataframe(frame, hide_index=True)
