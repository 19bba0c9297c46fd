"""The typed plan (``scorecards.plan``): stored documents and fingerprints written by the code before the typed
``Plan`` still verify and round-trip byte for byte; older documents take the defaults; readers get typed fields.

``data/plans_v1.json`` holds three plans as ``POST /v1/experiments/{key}/start`` stored them before the typed plan
(the DESIGN.md example; a contextual Thompson bandit with a floor; a sequential CUPED roll-out with ramp steps and
a power gate), each with the fingerprint stored beside it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from scorecards.plan import DECISION_RULE, AllocationPlan, Plan, PlanDesign, plan_fingerprint

STORED: dict[str, dict[str, Any]] = json.loads((Path(__file__).parent / "data" / "plans_v1.json").read_text())


def _reference_fingerprint(document: dict[str, Any]) -> str:
    """The fingerprint as the pre-typed code computed it (canonical JSON, SHA-256)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize("key", sorted(STORED))
def test_a_plan_stored_by_the_old_code_verifies_and_round_trips(key: str) -> None:
    document, stored = STORED[key]["plan"], STORED[key]["fingerprint"]
    assert _reference_fingerprint(document) == stored
    plan = Plan.from_document(document)
    assert plan.fingerprint == stored
    assert plan.to_document() == document
    assert plan_fingerprint(plan.to_document()) == stored
    assert plan.sealed().fingerprint == stored


def test_typed_fields_of_the_design_md_example() -> None:
    plan = Plan.from_document(STORED["ranker-v2"]["plan"])
    assert plan.type == "ab"
    assert plan.control == "control"
    assert plan.treatments == ("v2",)
    assert plan.served == ("control", "v2")
    assert plan.hypothesis_direction == "increase"
    assert [(m.role, m.key) for m in plan.metrics] == [("primary", "conversion"), ("secondary", "revenue"),
                                                      ("guardrail", "latency")]
    assert plan.primary.definition.kind == "proportion"
    (latency,) = plan.by_role("guardrail")
    assert latency.margin == 0.05
    assert latency.definition.direction == "lower_is_better"
    spec = latency.definition.spec()
    assert spec.kind == "ratio"
    assert spec.value.event == "serving.latency_ms"
    assert spec.denominator is not None
    assert spec.denominator.aggregation == "count"
    assert plan.design == PlanDesign(alpha=0.05, power=0.8, mde=0.05, sequential=False, cuped=False,
                                     cuped_lookback_days=14)
    assert plan.design.cuped_lookback_hours is None
    assert plan.allocation.strategy == "fixed"
    assert plan.decision_rule == DECISION_RULE
    assert plan.analysis_source is None
    assert plan.uses_metric("revenue")
    assert not plan.uses_metric("nope")


def test_typed_allocation_of_a_bandit_and_a_ramp() -> None:
    ctx = Plan.from_document(STORED["ctx"]["plan"]).allocation
    assert ctx.strategy == "thompson"
    assert ctx.floor == 0.1
    assert ctx.context_attribute == "platform"
    assert ctx.context is not None
    assert ctx.context.values == ("ios", "android")
    ramp = Plan.from_document(STORED["ramp"]["plan"])
    assert ramp.allocation.steps is not None
    assert [s.min_power for s in ramp.allocation.steps] == [None, 0.8]
    assert ramp.design.sequential
    assert ramp.design.cuped
    assert not ramp.design.cuped_applied  # CUPED is fixed-horizon only
    assert ramp.design.alpha == 0.1


def test_an_older_document_without_newer_keys_verifies_and_takes_the_defaults() -> None:
    document = copy.deepcopy(STORED["ranker-v2"]["plan"])
    del document["design"]["cuped_lookback_days"]
    del document["design"]["mde"]
    document["allocation"] = {"strategy": "thompson"}
    del document["metrics"]["primary"][0]["direction"]
    stored = _reference_fingerprint(document)
    plan = Plan.from_document(document)
    assert plan.fingerprint == stored
    assert plan.design.cuped_lookback_days == 14
    assert plan.design.mde is None  # no MDE: no planned sample size, as before
    assert plan.allocation == AllocationPlan(strategy="thompson")
    assert plan.allocation.prob_best_to_ship == 0.95
    assert plan.primary.definition.direction == "higher_is_better"


def test_a_named_analysis_source_is_part_of_the_plan_and_its_fingerprint() -> None:
    document = {**STORED["ranker-v2"]["plan"], "analysis": {"source": "lake"}}
    plan = Plan.from_document(document)
    assert plan.analysis_source == "lake"
    assert plan.to_document() == document
    assert plan.fingerprint != STORED["ranker-v2"]["fingerprint"]


def test_the_plan_is_frozen() -> None:
    plan = Plan.from_document(STORED["ranker-v2"]["plan"])
    with pytest.raises(AttributeError):
        plan.type = "rollout"  # type: ignore[misc]
    assert hash(plan.design) == hash(PlanDesign.from_document(STORED["ranker-v2"]["plan"]["design"]))
