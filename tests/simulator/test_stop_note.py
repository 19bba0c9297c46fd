"""A simulation that ends early says why (issue 17 leftovers): the roll-out's progress bar stopped at "1/12" looked
stalled; the driver now ends it with a note naming the rollback and the guardrail behind it."""

from __future__ import annotations

from simulator.driver import stop_note
from simulator.result import AllocationStep

ROLLBACK = AllocationStep(action="rolled_back", version=2, weights={"control": 1.0, "v2": 0.0},
                          reasons=["ramp step 1: guardrail latency failed"],
                          decision={"decision": "rollback", "variant": None, "reasons": [
                              "automatic rollback at ramp step 1 (fraction 0.1): v2: guardrail latency: +30.12% vs "
                              "control — fail: significantly worse"]})


def test_a_rollback_is_named_as_on_purpose_with_the_guardrail_behind_it() -> None:
    note = stop_note(0, 12, "rolled_back", ROLLBACK)
    assert note == ("rolled back on purpose after day 1 of 12: a guardrail was significantly worse than control — "
                    "automatic rollback at ramp step 1 (fraction 0.1): v2: guardrail latency: +30.12% vs control — "
                    "fail: significantly worse; the remaining days are not simulated")


def test_the_steps_reasons_stand_in_without_a_decision_and_nothing_is_invented_without_a_step() -> None:
    bare = AllocationStep(action="rolled_back", version=2, weights={}, reasons=["guardrail errors failed"])
    assert stop_note(2, 12, "rolled_back", bare).endswith("than control — guardrail errors failed; the remaining days "
                                                          "are not simulated")
    assert stop_note(11, 12, "rolled_back", None) == ("rolled back on purpose after day 12 of 12: a guardrail was "
                                                      "significantly worse than control")


def test_other_statuses_say_what_the_experiment_became() -> None:
    assert stop_note(4, 7, "stopped", None) == ("ended after day 5 of 7: the experiment is stopped; the remaining "
                                                "days are not simulated")
    assert stop_note(6, 7, "shipped", None) == "ended after day 7 of 7: the experiment is shipped"
