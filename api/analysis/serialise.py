"""The REST JSON of a :class:`scorecards.scorecard.Scorecard` (DESIGN.md ``GET /scorecard``; field names fixed):
serialisation only — every number was computed by ``scorecards.build_scorecard``. Non-finite floats become null."""

from __future__ import annotations

from datetime import datetime

from api.analysis.schemas import finite
from api.analysis.wire import (
    AdaptiveNoteJson,
    ArmJson,
    ComparisonJson,
    ContextEffectJson,
    GroupSequentialJson,
    GroupSequentialNoteJson,
    GuardrailDetailJson,
    MetricJson,
    OppositeSegmentJson,
    ScorecardJson,
    SegmentRowJson,
    SegmentsJson,
    SrmDrillDownJson,
    SrmJson,
    StratifiedJson,
    VariantJson,
)
from api.db.tables import Experiment
from scorecards.adaptive import ContextEffect, StratifiedResult
from scorecards.frequentist import Comparison
from scorecards.gst import GstLook
from scorecards.guardrails import GuardrailResult
from scorecards.scorecard import MetricResult, Scorecard, SrmSummary, VariantResult
from scorecards.segments import Segments
from scorecards.stratified import ArmEstimates

MULTIPLE_TESTING = ("holm across variants for the primary metric and across variants x secondary metrics for the "
                    "secondary ones (p_value_adjusted); guardrails are not adjusted; segments: benjamini-hochberg "
                    "across the values of the attribute")


def _comparison(variant: str, c: Comparison) -> ComparisonJson:
    d = c.as_dict()
    return {"variant": variant, "n": d["treatment_n"], "mean": d["treatment_mean"], "control_n": d["control_n"],
            "control_mean": d["control_mean"], "abs_lift": d["abs_lift"], "abs_ci": d["abs_ci"],
            "rel_lift": d["rel_lift"], "rel_ci": d["rel_ci"], "p_value": d["p_value"], "p_value_adjusted": None,
            "significant": d["significant"], "chance_to_beat": d["chance_to_beat"],
            "rel_ci_delta": d["rel_ci_delta"], "rel_ci_reason": d["rel_ci_reason"]}


def _guardrail_detail(metric: str, g: GuardrailResult) -> GuardrailDetailJson:
    return {"margin": g.margin, "non_inferiority_bound": g.non_inferiority_bound,
            "non_inferiority_p_value": g.non_inferiority_p_value, "regression_p_value": g.regression_p_value,
            "sequential": g.sequential, "rel_std_error": g.rel_std_error, "reason": g.reason.value,
            "description": g.describe(metric)}


def _arm(est: ArmEstimates | None, k: int) -> ArmJson:
    """One treatment's numbers from ``scorecards.stratified`` (NaN → null via ``finite``)."""
    if est is None:
        return {"method": None, "mean": None, "mean_ci": [None, None], "control_mean": None, "abs_lift": None,
                "abs_ci": [None, None], "rel_lift": None, "rel_ci": [None, None], "p_value": None}
    c = est.control
    return {"method": est.method, "mean": float(est.mean[k]),
            "mean_ci": [float(est.mean_ci_low[k]), float(est.mean_ci_high[k])],
            "control_mean": float(est.mean[c]), "abs_lift": float(est.abs_lift[k]),
            "abs_ci": [float(est.abs_ci_low[k]), float(est.abs_ci_high[k])], "rel_lift": float(est.rel_lift[k]),
            "rel_ci": [float(est.rel_ci_low[k]), float(est.rel_ci_high[k])], "p_value": float(est.p_value[k])}


def _stratified(s: StratifiedResult) -> StratifiedJson:
    out: StratifiedJson = {
        **_arm(s.stratified, s.index), "versions": list(s.versions), "n_by_version": list(s.n_by_version),
        "control_n_by_version": list(s.control_n_by_version), "naive": _arm(s.naive, s.index)}
    if s.control_mean is not None:
        out["control_mean"] = s.control_mean
    if s.attribute is not None and s.strata is not None:
        out["strata"] = [{"version": v, s.attribute: value} for v, value in s.strata]
    if s.attribute is not None and s.by_context:
        effects = {e.value: _context_effect(e, s.index) for e in s.by_context}
        out["context"] = {"attribute": s.attribute,
                          "values": {value: effect for value, effect in effects.items() if value is not None},
                          "others": effects.get(None)}
    return out


def _context_effect(e: ContextEffect, k: int) -> ContextEffectJson:
    return {**_arm(e.estimates, k), "control_mean": e.control_mean, "n": e.n, "control_n": e.control_n}


def _variant(metric: str, v: VariantResult) -> VariantJson:
    d = v.comparison.as_dict()
    g = v.guardrail
    out: VariantJson = {
        **_comparison(v.variant, v.comparison), "p_value_adjusted": v.p_value_adjusted,
        "expected_loss": d["expected_loss"], "test": d["test"], "std_error": d["std_error"], "reason": d["reason"],
        "guardrail": g.status.value if g is not None else None,
        "guardrail_detail": None if g is None else _guardrail_detail(metric, g),
        "mde": v.mde, "power": v.power, "pending_units": v.pending_units,
        "cuped": None if v.cuped is None else {
            "theta": v.cuped.fit.theta, "correlation": v.cuped.fit.correlation,
            "variance_reduction": v.cuped.fit.variance_reduction, "reason": v.cuped.fit.reason.value,
            "lookback_hours": v.cuped.lookback_hours, "unadjusted_mean": v.cuped.unadjusted_mean,
            "unadjusted_control_mean": v.cuped.unadjusted_control_mean},
    }
    if v.stratified is not None:
        out["stratified"] = _stratified(v.stratified)
    return out


def _metric(m: MetricResult) -> MetricJson:
    d = m.metric.definition
    return {"metric": d.key, "role": m.metric.role, "kind": d.kind, "direction": d.direction,
            "margin": m.metric.margin, "window_hours": d.window_hours,
            "variants": [_variant(d.key, v) for v in m.variants], "pending_units": m.pending_units}


def _srm(s: SrmSummary) -> SrmJson:
    if s.result is None:
        # the SRM block when no unit was exposed yet
        return {"p_value": None, "ok": True, "test": "chi_square", "threshold": 0.001, "expected": None,
                "sequential_p_value": None, "reason": "no_units", "observed": dict(s.observed)}
    r = s.result
    return {"p_value": r.p_value, "ok": r.ok, "test": r.test, "threshold": r.threshold, "observed": dict(s.observed),
            "expected": dict(s.expected or {}), "sequential_p_value": s.sequential_p_value,
            "reason": r.reason.value, "other_variants": dict(s.other_variants or {})}


def _segments(s: Segments, served: list[str]) -> SegmentsJson:
    rows: list[SegmentRowJson] = [
        {"segment": s.attribute, "value": row.value, "current_n": dict(row.current_n),
         "metrics": [{"metric": pm.key, "role": pm.role, "variants": [
             {**_comparison(c.variant, c.comparison), "p_value_adjusted": c.p_value_adjusted,
              "opposite": c.opposite} for c in cells]} for pm, cells in row.metrics]} for row in s.rows]
    opposite: list[OppositeSegmentJson] = [
        {"value": o.value, "metric": o.metric, "variant": o.variant, "abs_lift": o.abs_lift,
         "overall_abs_lift": o.overall_abs_lift, "p_value_adjusted": o.p_value_adjusted} for o in s.opposite]
    drill: list[SrmDrillDownJson] = [
        {"value": d.segment, "observed": dict(zip(served, d.observed, strict=True)), "p_value": d.p_value,
         "p_value_adjusted": d.adjusted_p_value, "mismatch": d.mismatch} for d in s.drill_down]
    return {"segments": rows, "segment_attribute": s.attribute, "opposite_segments": opposite,
            "srm_drill_down": drill}


def _gst(g: GstLook) -> GroupSequentialJson:
    return {"look": g.look, "looks_planned": g.looks_planned, "information_fraction": g.information_fraction,
            "fractions": list(g.fractions), "boundary": g.boundary, "alpha_spent": g.alpha_spent, "final": g.final,
            "spending": g.spending}


def scorecard_json(experiment: Experiment, card: Scorecard, computed_at: datetime) -> ScorecardJson:
    """The REST scorecard of ``card`` (``experiment`` supplies key, status and the stored plan fingerprint;
    ``computed_at``: when its numbers were computed)."""
    plan = card.plan
    segments: SegmentsJson = ({"segments": [], "segment_attribute": None} if card.segments is None
                              else _segments(card.segments, list(plan.served)))
    adaptive: AdaptiveNoteJson = {} if card.adaptive_note is None else {"adaptive_allocation": card.adaptive_note}
    gst: GroupSequentialNoteJson = {} if card.gst is None else {"group_sequential": _gst(card.gst)}
    out: ScorecardJson = {
        "experiment": experiment.key, "plan_fingerprint": experiment.plan_fingerprint,
        "status": experiment.status, "type": plan.type, "as_of": card.as_of,
        "computed_at": computed_at, "alpha": float(plan.design.alpha),
        "sequential": plan.design.sequential, "cuped_applied": plan.design.cuped_applied, "control": plan.control,
        "srm": _srm(card.srm), "metrics": [_metric(m) for m in card.metrics],
        "planned_n_per_variant": card.planned_n_per_variant, "planned_n_reached": card.planned_n_reached,
        "current_n": dict(card.current_n),
        **segments,
        **adaptive,
        **gst,
        "excluded_rows": {"exposures": card.excluded_rows.exposures, "events": card.excluded_rows.events},
        "multiple_testing": MULTIPLE_TESTING,
    }
    return finite(out)  # type: ignore[no-any-return]
