"""Literal vocabularies shared by the statistics, the plan and the API schemas (spelled exactly as in the REST
contract). Each is defined here once; ``api`` schemas import them. (``bandits`` keeps its own spelling of
``MetricKind``/``Direction``: by DESIGN.md it imports only numpy and scipy.)"""

from __future__ import annotations

from typing import Literal, get_args

MetricKind = Literal["proportion", "mean", "ratio"]
#: what the metrics catalog and the plan accept: the per-unit kinds above, or "quantile" (the q-quantile of
#: per-event values, ``scorecards.quantile``; computed from a histogram, not from per-unit sums)
CatalogMetricKind = Literal["proportion", "mean", "ratio", "quantile"]
Direction = Literal["higher_is_better", "lower_is_better"]
HypothesisDirection = Literal["increase", "decrease"]
ExperimentType = Literal["ab", "rollout"]
Aggregation = Literal["sum", "count", "any"]
AllocationStrategy = Literal["fixed", "ramp", "thompson"]
RampMode = Literal["auto", "suggest"]
MetricRole = Literal["primary", "secondary", "guardrail"]
DecisionKind = Literal["ship", "no_ship", "rollback", "keep_running"]
#: the rule that took a decision (its reasons come from that rule alone)
DecisionRule = Literal["bandit_stopping", "gst", "msprt", "fixed_horizon", "rollout_guardrails"]
PowerKind = Literal["proportion", "mean"]

METRIC_KINDS: tuple[str, ...] = get_args(MetricKind)
DIRECTIONS: tuple[str, ...] = get_args(Direction)


def check_kind(kind: str, allowed: tuple[str, ...] = METRIC_KINDS) -> None:
    """Raise ``ValueError`` for a kind outside ``allowed``."""
    if kind not in allowed:
        raise ValueError(f"kind must be one of {allowed}, got {kind!r}")


def check_direction(direction: str) -> None:
    """Raise ``ValueError`` for a metric direction outside the REST vocabulary."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def sign_of(direction: Direction) -> float:
    """+1 when larger values are better, −1 otherwise (flips 'better' into 'larger')."""
    return 1.0 if direction == "higher_is_better" else -1.0
