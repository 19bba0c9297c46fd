"""Chance to beat control and expected loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scorecards import SampleStats, beta_chance_to_beat, compare, normal_chance_to_beat


def test_normal_summary_matches_monte_carlo() -> None:
    rng = np.random.default_rng(9)
    for diff, se in [(0.3, 0.2), (-0.1, 0.5), (0.0, 1.0)]:
        draws = rng.normal(diff, se, 400_000)
        res = normal_chance_to_beat(diff, se)
        assert float(res.chance_to_beat) == pytest.approx((draws > 0).mean(), abs=3e-3)
        assert float(res.expected_loss) == pytest.approx(np.maximum(-draws, 0).mean(), rel=0.01)
        down = normal_chance_to_beat(diff, se, "lower_is_better")
        assert float(down.expected_loss) == pytest.approx(np.maximum(draws, 0).mean(), rel=0.01)
    assert math.isnan(float(normal_chance_to_beat(1.0, 0.0).chance_to_beat))


def test_chance_to_beat_agrees_with_one_sided_p_value() -> None:
    r = compare(SampleStats.from_counts(8000, 800), SampleStats.from_counts(8000, 870), kind="proportion")
    assert r.chance_to_beat == pytest.approx(1 - r.p_value / 2, rel=1e-9)


def test_beta_closed_form_matches_monte_carlo_and_normal_limit() -> None:
    rng = np.random.default_rng(10)
    for (kc, nc, kt, nt) in [(3, 20, 7, 20), (0, 10, 1, 10), (40, 400, 52, 410)]:
        pc = rng.beta(kc + 1, nc - kc + 1, 400_000)
        pt = rng.beta(kt + 1, nt - kt + 1, 400_000)
        assert beta_chance_to_beat(kc, nc, kt, nt) == pytest.approx((pt > pc).mean(), abs=3e-3)
    # symmetric situation → exactly 1/2
    assert beta_chance_to_beat(5, 50, 5, 50) == pytest.approx(0.5, abs=1e-12)
    # large n: Beta posteriors ≈ the normal approximation used by compare()
    r = compare(SampleStats.from_counts(20_000, 2_000), SampleStats.from_counts(20_000, 2_080), kind="proportion")
    assert beta_chance_to_beat(2_000, 20_000, 2_080, 20_000) == pytest.approx(r.chance_to_beat, abs=2e-3)
    with pytest.raises(ValueError, match="successes"):
        beta_chance_to_beat(5, 4, 1, 4)
