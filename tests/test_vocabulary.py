"""One vocabulary: ``scorecards.kinds`` defines each literal type once for ``scorecards`` and ``api``. ``bandits``
may import only numpy and scipy (DESIGN.md's package rooms), so the few types it needs are spelled there again;
this test keeps each pair identical, so they cannot drift apart."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from bandits import posteriors, ramp, thompson
from scorecards import kinds

PAIRS: list[tuple[str, Any, Any]] = [
    ("MetricKind", posteriors.MetricKind, kinds.MetricKind),
    ("Direction", thompson.Direction, kinds.Direction),
    ("RampMode", ramp.RampMode, kinds.RampMode),
]


@pytest.mark.parametrize(("name", "in_bandits", "in_scorecards"), PAIRS, ids=[p[0] for p in PAIRS])
def test_bandits_spells_the_vocabulary_exactly_as_scorecards(name: str, in_bandits: Any, in_scorecards: Any) -> None:
    assert get_args(in_bandits) == get_args(in_scorecards), name


def test_the_ramp_reads_the_guardrail_verdicts_scorecards_give() -> None:
    from scorecards.guardrails import GuardrailStatus

    assert set(get_args(ramp.GuardrailStatus)) == {status.value for status in GuardrailStatus}
