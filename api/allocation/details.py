"""What an allocation step stores in ``Allocation.details`` and reports in its ``StepResult``: the wire shapes.

``TypedDict``s, so the JSON written to the allocation row (and shown by ``GET /allocations`` and the recompute
endpoint) is exactly the dicts built in ``api.allocation.service``, now with their keys and value types named.
Rows written by older versions may lack keys added later: readers use ``.get``.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from api.allocation.guardrails import GuardrailView, Guards
from scorecards.kinds import DecisionKind


class DecisionDetails(TypedDict):
    """A stopping-rule decision as stored (``decide_thompson`` / ``decide_contextual``, or a ramp rollback)."""

    decision: DecisionKind
    variant: str | None
    reasons: list[str]


class ExcludedVariant(TypedDict):
    """A treatment given weight 0 because a guardrail fails, with the failing guardrails."""

    variant: str
    reasons: list[str]
    guardrails: dict[str, GuardrailView]


class PosteriorDetails(TypedDict):
    """One arm's Thompson posterior on the primary metric."""

    n: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    prob_best: float | None
    pending: int


class ContextValueDetails(TypedDict):
    """The contextual bandit's posterior summary within one declared value of the context attribute."""

    status: str
    prob_best: dict[str, float | None]
    mean: dict[str, float | None]
    leader: str | None


class ContextDetails(TypedDict):
    """Per-value posteriors of a contextual bandit."""

    attribute: str
    kind: str
    values: dict[str, ContextValueDetails]
    others: str


class ThompsonDetails(TypedDict):
    """A Thompson update: the posteriors, P(best), floors, exclusions and the stopping-rule decision."""

    strategy: str
    metric: str
    kind: str
    direction: str
    as_of: str
    status: str
    draws: int
    top_two: bool
    floor: dict[str, float]
    posterior: dict[str, PosteriorDetails]
    prob_best: dict[str, float | None]
    excluded: list[ExcludedVariant]
    units_since_previous: int | None
    due: str
    decision: DecisionDetails
    basis: str
    context: NotRequired[ContextDetails]


class RampSummary(TypedDict):
    """Where a ramp stands: the step in force, its exposure so far and the guardrails' worst status."""

    step: int
    fraction: float
    units_at_step: int
    hours_at_step: float
    guardrails: dict[str, str]
    version: int
    guardrail_power: dict[str, float | None]


class RampAdvanceDetails(TypedDict):
    """A ramp advanced to ``step``; ``previous`` is where it stood."""

    strategy: str
    step: int
    fraction: float
    reasons: list[str]
    previous: RampSummary


class RampRollbackDetails(RampSummary):
    """A ramp rolled back automatically because a guardrail failed: where it stood, and why."""

    strategy: str
    rollback: bool
    reasons: list[str]
    guardrail_detail: Guards


class RampProposal(TypedDict):
    """The next ramp step a suggest-mode ramp proposes (an admin accepts it with ``?accept=true``)."""

    version: int
    suggested_step: int
    fraction: float
    weights: dict[str, float]


class RampSuggestDetails(RampSummary):
    """A suggest-mode ramp ready for its next step: where it stands and the proposal."""

    proposal: RampProposal


class NoDetails(TypedDict):
    """A step that published nothing and has nothing to report (``{}``)."""


#: What one step stores (``Allocation.details``) and reports (``StepResult.details``).
StepDetails = (ThompsonDetails | RampAdvanceDetails | RampRollbackDetails | RampSuggestDetails | RampSummary
               | NoDetails)
