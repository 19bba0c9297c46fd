"""The allocation updater's view of the guardrails: the scorecard's verdicts (``Scorecard.guardrails``) as the
dicts stored in allocation details and audit rows, their failure sentences, and the ramp's detection power."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TypedDict

from sqlalchemy.orm import Session

from api.analysis.scorecard import load_scorecard
from api.db.tables import Experiment
from api.experiments.plan import plan_of
from bandits.ramp import guardrail_detection_power


class GuardrailView(TypedDict):
    """One guardrail of one variant as allocation details and audit rows store it (None: not computable)."""

    status: str
    description: str | None
    rel_lift: float | None
    n: int
    control_n: int
    mean: float | None
    control_mean: float | None
    non_inferiority_bound: float | None
    regression_p_value: float | None
    margin: float | None
    rel_std_error: float | None


#: variant → guardrail metric → its view.
Guards = dict[str, dict[str, GuardrailView]]


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, None when NaN or infinite (the stored JSON holds no non-finite numbers)."""
    return float(x) if math.isfinite(x) else None


def by_variant(session: Session, experiment: Experiment, now: datetime) -> Guards:
    """variant → guardrail metric → {status, description, rel_lift, ...} from the scorecard's guardrails
    (``Scorecard.guardrails``; numbers that cannot be computed are None)."""
    if not plan_of(experiment).by_role("guardrail"):
        return {}
    out: Guards = {}
    for variant, by_metric in load_scorecard(session, experiment, now).guardrails.items():
        for metric, (g, c) in by_metric.items():
            out.setdefault(variant, {})[metric] = {
                "status": g.status.value, "description": g.describe(metric), "rel_lift": finite_or_none(c.rel_lift),
                "n": c.treatment_n, "control_n": c.control_n, "mean": finite_or_none(c.treatment_mean),
                "control_mean": finite_or_none(c.control_mean),
                "non_inferiority_bound": finite_or_none(g.non_inferiority_bound),
                "regression_p_value": finite_or_none(g.regression_p_value), "margin": finite_or_none(g.margin),
                "rel_std_error": finite_or_none(g.rel_std_error),
            }
    return out


def failures(guards: Guards, variant: str) -> list[str]:
    """Human-readable reasons (metric and numbers) for each failing guardrail of ``variant``."""
    return [f"{variant}: {g['description'] or f'guardrail {metric} failed'}"
            for metric, g in sorted(guards.get(variant, {}).items()) if g["status"] == "fail"]


def detection_power(guards: Guards, alpha: float) -> dict[str, float | None]:
    """Guardrail metric → the lowest power across treatments to detect a harm of its margin, from the standard
    error of the relative lift measured so far (``bandits.ramp.guardrail_detection_power``); None until every
    treatment has one."""
    out: dict[str, float | None] = {}
    for per_metric in guards.values():
        for metric, g in per_metric.items():
            se, margin = g.get("rel_std_error"), g.get("margin")
            achieved = guardrail_detection_power(float(se), float(margin), alpha) if (
                isinstance(se, int | float) and isinstance(margin, int | float) and margin > 0) else math.nan
            if not math.isfinite(achieved):
                out[metric] = None
            elif metric not in out:
                out[metric] = achieved
            elif (previous := out[metric]) is not None:
                out[metric] = min(previous, achieved)
    return out
