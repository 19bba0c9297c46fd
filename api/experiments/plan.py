"""Pre-registration: the analysis plan frozen when an experiment starts, and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from api.db.tables import Experiment

# Bumped whenever the decision rule in ``scorecards`` changes meaning, so old fingerprints stay honest.
DECISION_RULE = "titrate-decision-v1"


def metric_definition(metric: Any) -> dict[str, Any]:
    """The parts of a catalog metric that change what is measured."""
    return {
        "key": metric.key, "kind": metric.kind, "event": metric.event, "aggregation": metric.aggregation,
        "numerator": metric.numerator, "denominator": metric.denominator, "direction": metric.direction,
        "winsorize": metric.winsorize, "window_hours": metric.window_hours,
    }


def build_plan(experiment: Experiment) -> dict[str, Any]:
    """Everything the analysis depends on: hypothesis, type, allocation, variants, metrics by role with their
    definitions and guardrail margins, design (alpha, power, MDE, sequential, CUPED) and the decision rule."""
    links = experiment.metric_links
    return {
        "hypothesis": experiment.hypothesis,
        "type": experiment.type,
        "allocation": experiment.allocation,
        "salt": experiment.salt,
        "variants": [{"key": v.key, "control": v.is_control, "shadow": v.shadow} for v in experiment.variants],
        "metrics": {
            "primary": [metric_definition(link.metric) for link in links if link.role == "primary"],
            "secondary": [metric_definition(link.metric) for link in links if link.role == "secondary"],
            "guardrails": [
                {**metric_definition(link.metric), "margin": link.margin} for link in links if link.role == "guardrail"
            ],
        },
        "design": experiment.design,
        "decision_rule": DECISION_RULE,
    }


def fingerprint(plan: dict[str, Any]) -> str:
    """SHA-256 of the plan's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
