"""Shared pieces of the console pages: the signed-in client, error display, formatting and charts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import altair as alt
import httpx
import pandas as pd
import streamlit as st

from ui import auth
from ui.client import FieldError, Reply, TitrateClient, api_url_from_env, make_http

STATUSES = ["draft", "running", "paused", "shipped", "rolled_back", "stopped"]
GUARDRAIL_LIGHT = {"pass": "🟢", "fail": "🔴", "inconclusive": "🟡"}
DECISION_BADGE = {"ship": "✅ ship", "no_ship": "⛔ no ship", "rollback": "↩️ rollback",
                  "keep_running": "⏳ keep running"}
#: the rule that took a decision (``GET /decision``'s ``rule``), as the page names it
DECISION_RULE = {"bandit_stopping": "the bandit stopping rule (P(best) against the threshold)",
                 "gst": "the group-sequential design (its look and boundary)",
                 "msprt": "the always-valid test (mSPRT)", "fixed_horizon": "the fixed-horizon test",
                 "rollout_guardrails": "the roll-out's guardrails"}
EXPERIMENT_PAGE = "views/experiment.py"
REVIEW_PAGE = "views/review.py"
#: the row of a contextual bandit's weight table for units whose context value is missing or undeclared
OTHER_CONTEXT = "other / missing"


@st.cache_resource(on_release=httpx.Client.close)
def get_http(base_url: str) -> httpx.Client:
    """One connection pool per console process and service URL, shared by every session: it holds no credentials
    (the cache key is the URL, nothing secret), each request carries the signed-in person's own key."""
    return make_http(base_url)


def service_client(api_key: str) -> TitrateClient:
    """A client for ``TITRATE_API_URL`` that sends ``api_key`` (the sign-in page checks a key with it)."""
    return TitrateClient(get_http(api_url_from_env()), api_key)


def get_client() -> TitrateClient:
    """The signed-in person's client. Before sign-in a page shows nothing and stops here (the navigation offers
    only the sign-in page then; this guards any page run another way)."""
    identity = auth.current()
    if identity is None:
        st.warning("Sign in with your API key first.", icon="🔒")
        st.stop()
    return service_client(identity.api_key)


def identity() -> auth.Identity:
    """The signed-in person (pages call ``get_client()`` first, which stops when nobody is)."""
    signed_in = auth.current()
    if signed_in is None:
        st.stop()
    return signed_in


def needs_role(action: auth.Action, what: str) -> None:
    """The note shown instead of controls the signed-in key's role may not use."""
    who = identity()
    st.info(f"{what} needs the '{auth.REQUIRED_ROLE[action]}' role: you are signed in as **{who.name}** "
            f"({who.role}).", icon="🔒")


def not_available(what: str) -> None:
    """The note shown where a route of the service has not landed yet (404)."""
    st.info(f"{what} is not available yet on this service.", icon="🚧")


def show_refusal(reply: Reply, what: str) -> None:
    """A refused request, in words."""
    if reply.status == 0:
        st.error(reply.message, icon="🔌")
    elif reply.status == 401:  # revoked since sign-in: forget it, the next run shows the sign-in page
        auth.sign_out()
        st.error(f"{what}: the service no longer accepts your API key — sign in again.", icon="🔒")
    elif reply.status == 403:
        st.error(f"{what}: your API key's role is too low for this ({reply.message}).", icon="🔒")
    else:
        st.error(f"{what} failed — {reply.message}", icon="⚠️")


class ErrorSlots:
    """Placeholders under form fields, filled after a submission with the validation errors naming each field.

    An error goes to the registered slot of the longest prefix of its location; errors of the whole body
    (cross-field rules) or of an unregistered field go to the general slot (registered with no path).
    """

    def __init__(self) -> None:
        self.slots: dict[tuple[str | int, ...], Any] = {}

    def __call__(self, *path: str | int) -> None:
        """Registers an empty slot for the errors at ``path`` (no path: the general slot), at the caller's position."""
        self.slots[tuple(path)] = st.empty()

    def place(self, errors: Sequence[FieldError]) -> None:
        """Shows each error in the slot of the longest registered prefix of its location (else the general slot)."""
        grouped: dict[tuple[str | int, ...], list[FieldError]] = {}
        for error in errors:
            target: tuple[str | int, ...] = ()
            for candidate in self.slots:
                if error.path[: len(candidate)] == candidate and len(candidate) > len(target):
                    target = candidate
            grouped.setdefault(target, []).append(error)
        for target, items in grouped.items():
            text = "\n".join(f"- `{e.dotted or 'body'}`: {e.msg}" for e in items)
            (self.slots.get(target) or st).error(text, icon="❗")


def fmt_pct(x: float | None, digits: int = 1) -> str:
    """A relative change as signed percent text (``0.031`` → ``"+3.1%"``); ``"—"`` for None or non-finite."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x * 100:+.{digits}f}%"


#: the scorecard's ``rel_ci_reason`` when Fieller's relative interval is unbounded (control mean ≈ 0)
UNBOUNDED_CI = "unbounded_relative_ci"
UNBOUNDED_TEXT = "unbounded (control mean not distinguishable from 0)"


def fmt_ci(ci: Sequence[float | None] | None, digits: int = 1, reason: str | None = None) -> str:
    """A relative interval as signed percent text (``"[-1.2%, +4.0%]"``); ``"—"`` without two bounds, or the
    unbounded note when ``reason`` says Fieller's interval is unbounded (no bar can be drawn for it)."""
    if reason == UNBOUNDED_CI:
        return UNBOUNDED_TEXT
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return "—"
    return f"[{ci[0] * 100:+.{digits}f}%, {ci[1] * 100:+.{digits}f}%]"


def fmt_num(x: float | None, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; ``"—"`` for None."""
    if x is None:
        return "—"
    return f"{x:.{digits}g}"


def fmt_ci_abs(ci: Sequence[float | None] | None) -> str:
    """An absolute-lift interval as text, 4 significant digits."""
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return "—"
    return f"[{fmt_num(ci[0])}, {fmt_num(ci[1])}]"


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 timestamp (``Z`` accepted) as an aware datetime, naive ones read as UTC; None for empty."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: str | None, now: datetime | None = None) -> str:
    """'3d 4h' since a timestamp."""
    then = parse_time(value)
    if then is None:
        return "—"
    seconds = max(0.0, ((now or datetime.now(UTC)) - then).total_seconds())
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {rest // 60}m"
    return f"{rest // 60}m"


def guardrail_light(scorecard: dict[str, Any] | None) -> str:
    """🔴 if any guardrail fails, 🟡 if any is inconclusive, 🟢 if all pass, — without guardrails."""
    if not scorecard:
        return "—"
    states = [v.get("guardrail") for m in scorecard.get("metrics", []) if m.get("role") == "guardrail"
              for v in m.get("variants", [])]
    states = [s for s in states if s]
    if not states:
        return "—"
    for state in ("fail", "inconclusive"):
        if state in states:
            return GUARDRAIL_LIGHT[state]
    return GUARDRAIL_LIGHT["pass"]


def primary_metric(scorecard: dict[str, Any] | None) -> dict[str, Any] | None:
    """The scorecard's primary metric entry, or ``None``."""
    for metric in (scorecard or {}).get("metrics", []):
        if metric.get("role") == "primary":
            return dict(metric)
    return None


def is_adaptive(scorecard: dict[str, Any] | None) -> bool:
    """Whether the scorecard carries stratified estimates (adaptive allocation: bandits), so the pooled ones are
    the biased, secondary view."""
    primary = primary_metric(scorecard)
    return primary is not None and any(isinstance(v.get("stratified"), dict) for v in primary.get("variants", []))


def estimate(variant: dict[str, Any], alpha: float = 0.05, pooled: bool = False) -> dict[str, Any]:
    """The numbers to read for one treatment: its stratified estimate when it has one that could be computed
    (adaptive allocation) and ``pooled`` is false, else the pooled one. Keys ``rel_lift``, ``rel_ci``, ``abs_lift``,
    ``abs_ci``, ``p_value``, ``significant`` and ``estimate`` (``"stratified"`` or ``"pooled"``); a stratified
    estimate is significant when its ``p_value`` < ``alpha``."""
    strat = variant.get("stratified")
    if not pooled and isinstance(strat, dict) and strat.get("rel_lift") is not None:
        p = strat.get("p_value")
        return {"rel_lift": strat.get("rel_lift"), "rel_ci": strat.get("rel_ci"), "abs_lift": strat.get("abs_lift"),
                "abs_ci": strat.get("abs_ci"), "p_value": p, "rel_ci_reason": None,
                "significant": isinstance(p, int | float) and p < alpha, "estimate": "stratified"}
    return {"rel_lift": variant.get("rel_lift"), "rel_ci": variant.get("rel_ci"), "abs_lift": variant.get("abs_lift"),
            "abs_ci": variant.get("abs_ci"), "p_value": variant.get("p_value"),
            "rel_ci_reason": variant.get("rel_ci_reason"), "significant": variant.get("significant"),
            "estimate": "pooled"}


def leader(scorecard: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The primary metric's leading treatment and its estimate (``estimate``): the best relative lift in the
    metric's direction (stratified for bandits); ``None`` when no treatment has a lift yet."""
    primary = primary_metric(scorecard)
    if primary is None:
        return None
    alpha = float((scorecard or {}).get("alpha") or 0.05)
    sign = -1.0 if primary.get("direction") == "lower_is_better" else 1.0
    scored = [(v, estimate(v, alpha)) for v in primary.get("variants", [])]
    scored = [(v, e) for v, e in scored if isinstance(e["rel_lift"], int | float) and math.isfinite(e["rel_lift"])]
    if not scored:
        return None
    return max(scored, key=lambda pair: sign * float(pair[1]["rel_lift"]))


def primary_lift(scorecard: dict[str, Any] | None) -> str:
    """The leading treatment's relative lift on the primary metric with its CI, as text (``"b: +3.1% [...]"``;
    bandits: the stratified estimate, marked)."""
    found = leader(scorecard)
    if found is None:
        return "—"
    variant, est = found
    marker = " (stratified)" if est["estimate"] == "stratified" else ""
    ci = fmt_ci(est["rel_ci"], reason=est["rel_ci_reason"])
    return f"{variant.get('variant')}: {fmt_pct(est['rel_lift'])} {ci}{marker}"


def exposed_units(scorecard: dict[str, Any] | None) -> int | None:
    """Total exposed units over variants (the scorecard's ``current_n``); None when absent."""
    if not scorecard or not isinstance(scorecard.get("current_n"), dict):
        return None
    return int(sum(scorecard["current_n"].values()))


def scorecard_rows(scorecard: dict[str, Any], pooled: bool = False) -> list[dict[str, Any]]:
    """One row per (metric, treatment variant) of a scorecard, for tables and the forest plot. Under adaptive
    allocation the primary metric's rows carry the stratified estimate (``estimate``: ``"stratified"``) unless
    ``pooled``; every other row is the pooled comparison (the only one the scorecard has for it)."""
    alpha = float(scorecard.get("alpha") or 0.05)
    adaptive = is_adaptive(scorecard)
    rows = []
    for metric in scorecard.get("metrics", []):
        for v in metric.get("variants", []):
            est = estimate(v, alpha, pooled=pooled or metric.get("role") != "primary")
            rel_ci = est["rel_ci"] or [None, None]
            rows.append({
                "metric": metric.get("metric"), "role": metric.get("role"), "variant": v.get("variant"),
                **({"estimate": est["estimate"]} if adaptive else {}),
                "n": v.get("n"), "mean": v.get("mean"), "control_n": v.get("control_n"),
                "control_mean": v.get("control_mean"), "rel_lift": est["rel_lift"],
                "rel_ci_low": rel_ci[0], "rel_ci_high": rel_ci[1], "rel_ci_reason": est["rel_ci_reason"],
                "p_value": est["p_value"], "significant": est["significant"],
                # P(beat) is the pooled posterior's: not shown beside a stratified estimate it does not describe
                "chance_to_beat": v.get("chance_to_beat") if est["estimate"] == "pooled" else None,
                "guardrail": GUARDRAIL_LIGHT.get(v.get("guardrail") or "", ""), "power": v.get("power"),
            })
    return rows


def scorecard_table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The scorecard rows as the page shows them: numbers as text (percent lifts and intervals, 4 significant
    digits), a ✔ for significant, and "—" wherever a value is missing (never "None")."""
    shown = []
    for r in rows:
        shown.append({  # what decides first (lift, interval, significance, guardrail), the counts after
            "metric": r["metric"], "role": r["role"], "variant": r["variant"],
            **({"estimate": r["estimate"]} if "estimate" in r else {}),
            "rel lift": fmt_pct(r.get("rel_lift")),
            "CI": fmt_ci([r.get("rel_ci_low"), r.get("rel_ci_high")], reason=r.get("rel_ci_reason")),
            "p": fmt_num(r.get("p_value"), 3),
            "significant": "✔" if r.get("significant") else "",
            "guardrail": r.get("guardrail") or "—",
            "P(beat)": "—" if r.get("chance_to_beat") is None else f"{r['chance_to_beat']:.1%}",
            "power": "—" if r.get("power") is None else f"{r['power']:.0%}",
            "n": "—" if r.get("n") is None else f"{r['n']:,}", "mean": fmt_num(r.get("mean")),
            "control n": "—" if r.get("control_n") is None else f"{r['control_n']:,}",
            "control mean": fmt_num(r.get("control_mean")),
        })
    return pd.DataFrame(shown)


def present(frame: pd.DataFrame) -> pd.DataFrame:
    """A table ready for ``st.dataframe``: every missing value (None, NaN) shown as "—", never as "None"; numeric
    columns with a gap become text (whole numbers with thousands separators, others 4 significant digits)."""
    out = frame.copy()
    for column in out.columns:
        missing = out[column].isna()
        if not missing.any():
            continue
        if pd.api.types.is_numeric_dtype(out[column]):
            out[column] = ["—" if gap else f"{int(x):,}" if float(x).is_integer() else fmt_num(float(x))
                           for x, gap in zip(out[column], missing, strict=True)]
        else:
            out[column] = out[column].astype(object).where(~missing, "—")
    return out


def segment_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    """A segment breakdown (``GET …/scorecard?segment=ATTR``) as rows: per value × metric × treatment, the units,
    relative lift and CI, the Benjamini–Hochberg adjusted p and whether it moves opposite to the overall effect."""
    rows = []
    for segment in card.get("segments") or []:
        if not isinstance(segment, dict):
            continue
        value = segment.get("value")
        for metric in segment.get("metrics") or []:
            for v in metric.get("variants") or []:
                rel_ci = v.get("rel_ci") or [None, None]
                rows.append({"value": "(missing)" if value is None else str(value), "metric": metric.get("metric"),
                             "role": metric.get("role"), "variant": v.get("variant"), "n": v.get("n"),
                             "control_n": v.get("control_n"), "rel_lift": v.get("rel_lift"),
                             "rel_ci_low": rel_ci[0], "rel_ci_high": rel_ci[1], "rel_ci_reason": v.get("rel_ci_reason"),
                             "p_value_adjusted": v.get("p_value_adjusted"), "opposite": bool(v.get("opposite"))})
    return rows


def forest_plot(rows: Iterable[dict[str, Any]]) -> alt.LayerChart | alt.FacetChart | None:
    """Relative lifts with their confidence intervals, one line per metric × variant, zero marked. A row whose
    interval is unbounded (Fieller, control mean ≈ 0) gets its point and an "unbounded" label, never a bar."""
    frame = pd.DataFrame([r for r in rows if r.get("rel_lift") is not None])
    if frame.empty:
        return None
    frame["label"] = frame["metric"] + " · " + frame["variant"]
    if "rel_ci_reason" in frame:
        unbounded = frame["rel_ci_reason"] == UNBOUNDED_CI
        frame.loc[unbounded, "label"] = frame.loc[unbounded, "label"] + " (CI unbounded)"
    y = alt.Y("label:N", title=None, sort=None, axis=alt.Axis(labelLimit=320, labelOverlap=False))
    base = alt.Chart(frame)
    bars = alt.Chart(frame.dropna(subset=["rel_ci_low", "rel_ci_high"])).mark_rule(strokeWidth=2).encode(
        x=alt.X("rel_ci_low:Q", title="relative lift", axis=alt.Axis(format="%")), x2="rel_ci_high:Q", y=y,
        color=alt.Color("role:N"))
    points = base.mark_point(filled=True, size=80).encode(
        x="rel_lift:Q", y=y, color="role:N",
        tooltip=["metric", "role", "variant", alt.Tooltip("rel_lift:Q", format="+.2%"),
                 alt.Tooltip("rel_ci_low:Q", format="+.2%"), alt.Tooltip("rel_ci_high:Q", format="+.2%")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return alt.layer(bars, points, zero).properties(height=60 + 36 * len(frame))


def context_spec(experiment: dict[str, Any]) -> dict[str, Any] | None:
    """``allocation.context`` of a contextual Thompson experiment (``{"attribute", "values"}``), else ``None``."""
    context = (experiment.get("allocation") or {}).get("context")
    if isinstance(context, dict) and context.get("attribute"):
        return {"attribute": str(context["attribute"]), "values": [str(v) for v in context.get("values") or []]}
    return None


def version_weights(version: dict[str, Any], value: str | None = None) -> dict[str, float]:
    """The weights units with context ``value`` were assigned under in an allocation version: the value's
    ``context_weights`` when the version has them, otherwise the pooled ``weights`` (``value=None``: pooled)."""
    by_value = version.get("context_weights") or {}
    if value is not None and isinstance(by_value.get(value), dict):
        return dict(by_value[value])
    return dict(version.get("weights") or {})


def _leader(prob_best: Any, named: Any = None) -> tuple[str | None, float | None]:
    """The leading arm (``named`` if given, else the highest P(best)) and its P(best); ``None`` without posteriors."""
    items = prob_best.items() if isinstance(prob_best, dict) else ()
    ranked = {k: float(p) for k, p in items if isinstance(p, int | float)}
    leader = named if isinstance(named, str) else max(ranked, key=lambda k: ranked[k], default=None)
    return leader, ranked.get(leader) if leader is not None else None


def context_weight_rows(version: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per declared context value of an allocation version, then ``OTHER_CONTEXT`` (the pooled weights
    that units with a missing or undeclared value get): the value, a weight per variant, the leader and its P(best).
    """
    details = version.get("details") or {}
    by_value = (details.get("context") or {}).get("values") or {}
    declared = list(context.get("values") or [])
    rows = []
    for value in [*declared, *(v for v in version.get("context_weights") or {} if v not in declared), None]:
        info = details if value is None else by_value.get(value) or {}
        leader, p_best = _leader(info.get("prob_best"), None if value is None else info.get("leader"))
        rows.append({context["attribute"]: OTHER_CONTEXT if value is None else value,
                     **version_weights(version, value), "leader": leader, "P(best)": p_best})
    return rows


def stratified_rows(scorecard: dict[str, Any]) -> list[dict[str, Any]]:
    """Bandit experiments: per primary-metric treatment, the stratified estimate (by allocation version, and by
    context value for contextual bandits) and then the pooled ("naive") one, which is biased when weights change."""
    rows = []
    for metric in scorecard.get("metrics", []):
        if metric.get("role") != "primary":
            continue
        for v in metric.get("variants", []):
            strat = v.get("stratified")
            if not isinstance(strat, dict):
                continue
            strata = strat.get("strata")
            if isinstance(strata, list) and strata and isinstance(strata[0], dict):  # contextual: (version, value)
                by = " × ".join(str(k) for k in strata[0])
                cells = f"{len(strata)} ({by})"
            else:
                cells = f"{len(strat.get('versions') or [])} (version)"
            by_version = ", ".join(f"v{ver}: {n:,}" for ver, n in zip(strat.get("versions") or [],
                                                                     strat.get("n_by_version") or [], strict=False))
            for label, est in (("stratified", strat), ("pooled (naive)", strat.get("naive") or {})):
                rel_ci = est.get("rel_ci") or [None, None]
                abs_ci = est.get("abs_ci") or [None, None]
                rows.append({
                    "metric": metric.get("metric"), "variant": v.get("variant"), "estimate": label,
                    "rel_lift": est.get("rel_lift"), "rel_ci_low": rel_ci[0], "rel_ci_high": rel_ci[1],
                    "abs_lift": est.get("abs_lift"), "abs_ci": fmt_ci_abs(abs_ci), "p_value": est.get("p_value"),
                    "strata": cells if label == "stratified" else "",
                    "units by version": by_version if label == "stratified" else "",
                })
    return rows


def context_effect_rows(scorecard: dict[str, Any]) -> list[dict[str, Any]]:
    """Contextual bandits: per primary-metric treatment and context value, its adaptively weighted effect within that
    value (the scorecard's ``stratified.context``): units, relative and absolute lift with their intervals, p and
    whether it is significant; declared values first, then the units outside them ("other / missing")."""
    rows = []
    for metric in scorecard.get("metrics", []):
        if metric.get("role") != "primary":
            continue
        for v in metric.get("variants", []):
            context = (v.get("stratified") or {}).get("context")
            if not isinstance(context, dict):
                continue
            cells = [(str(value), est) for value, est in (context.get("values") or {}).items()]
            if isinstance(context.get("others"), dict):
                cells.append((OTHER_CONTEXT, context["others"]))
            alpha = scorecard.get("alpha")
            for value, est in cells:
                if not isinstance(est, dict):
                    continue
                p = est.get("p_value")
                rows.append({
                    "metric": metric.get("metric"), "context value": value, "variant": v.get("variant"),
                    "n": est.get("n"), "control n": est.get("control_n"),
                    "rel lift": fmt_pct(est.get("rel_lift")), "CI": fmt_ci(est.get("rel_ci")),
                    "abs lift": fmt_num(est.get("abs_lift")), "abs CI": fmt_ci_abs(est.get("abs_ci")),
                    "p": fmt_num(p, 3),
                    "significant within value": ("✔" if isinstance(p, float) and isinstance(alpha, float)
                                                 and p < alpha else ""),
                })
    # why grouped by value: the contextual policy serves each value its own leader, so a value's arms are read together
    order = {value: i for i, value in enumerate(dict.fromkeys(r["context value"] for r in rows))}
    return sorted(rows, key=lambda r: order[r["context value"]])


def time_axis_format(start: datetime, end: datetime) -> str:
    """A d3 time format whose ticks differ over ``start``…``end``: seconds for spans under an hour (the simulator
    compresses days into seconds), minutes under two days, days beyond."""
    span = abs((end - start).total_seconds())
    if span < 3600:
        return "%H:%M:%S"
    if span < 2 * 86400:
        return "%b %d %H:%M"
    return "%b %d"


def allocation_chart(history: list[dict[str, Any]], context_value: str | None = None) -> alt.Chart | None:
    """Allocation weights over time as a stacked area (each version holds until the next); with
    ``context_value``, the weights units with that value of the context attribute got (``version_weights``)."""
    if not history:
        return None
    records = []
    # one point per version where it starts (step-after holds it until the next) and the newest again now: a
    # single point per (time, variant), since duplicates at a version boundary would tear the normalized stack
    points = [(v["created_at"], v) for v in history] + [(datetime.now(UTC).isoformat(), history[-1])]
    for at, version in points:
        for variant, weight in version_weights(version, context_value).items():
            records.append({"at": pd.Timestamp(at), "variant": variant, "weight": float(weight),
                            "version": version.get("version")})
    frame = pd.DataFrame(records)
    fmt = time_axis_format(frame["at"].min().to_pydatetime(), frame["at"].max().to_pydatetime())
    return alt.Chart(frame).mark_area(interpolate="step-after").encode(
        x=alt.X("at:T", title="time (UTC)", scale=alt.Scale(type="utc"),
                axis=alt.Axis(format=fmt, labelOverlap=True, labelAngle=-30)),
        y=alt.Y("weight:Q", stack="normalize", title="share of traffic", axis=alt.Axis(format="%")),
        color="variant:N", tooltip=["variant", "version", alt.Tooltip("weight:Q", format=".1%"),
                                    alt.Tooltip("at:T", format="%Y-%m-%d %H:%M:%S")],
    ).properties(height=220)


def experiment_picker(experiments: list[dict[str, Any]], label: str = "Experiment") -> str | None:
    """A selectbox of experiment keys, preselecting ``?key=`` from the URL; keeps the URL in step."""
    keys = [e["key"] for e in experiments]
    if not keys:
        st.info("No experiments yet — create one on the **New experiment** page.")
        return None
    wanted = st.query_params.get("key")
    index = keys.index(wanted) if wanted in keys else 0
    key = st.selectbox(label, keys, index=index, key="experiment_picker")
    if key and st.query_params.get("key") != key:
        st.query_params["key"] = key
    return key
