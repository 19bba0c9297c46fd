from __future__ import annotations

import math

import numpy as np
import pytest

from models.monitoring import (
    PSI_EPSILON,
    embedding_norms_summary,
    label_agreement_rate,
    latency_percentiles,
    mean_cosine_similarity,
    population_stability_index,
)


def test_psi_identical_samples_is_zero() -> None:
    scores = np.random.default_rng(0).beta(2, 5, size=5000)
    assert population_stability_index(scores, scores) == pytest.approx(0.0, abs=1e-12)


def test_psi_same_distribution_is_small() -> None:
    rng = np.random.default_rng(1)
    assert population_stability_index(rng.normal(size=20000), rng.normal(size=20000)) < 0.01


def test_psi_shifted_distribution_is_large() -> None:
    rng = np.random.default_rng(2)
    assert population_stability_index(rng.normal(size=20000), rng.normal(loc=0.5, size=20000)) > 0.2


def test_psi_hand_computed() -> None:
    # Reference 0..99 with 4 bins: edges at the 25/50/75 % quantiles 24.75, 49.5, 74.25 -> 25 % per bin.
    reference = np.arange(100.0)
    # Current: 40 values in bin 0, 10 in bin 1, 20 in bin 2, 30 in bin 3.
    current = np.concatenate([np.full(40, 1.0), np.full(10, 30.0), np.full(20, 60.0), np.full(30, 90.0)])
    expected = sum((c - 0.25) * math.log(c / 0.25) for c in (0.4, 0.1, 0.2, 0.3))
    assert population_stability_index(reference, current, bins=4) == pytest.approx(expected, rel=1e-12)


def test_psi_empty_bin_uses_epsilon() -> None:
    reference = np.arange(100.0)
    current = np.full(50, 10.0)  # everything in bin 0; bins 1-3 empty
    expected = (1.0 - 0.25) * math.log(1.0 / 0.25) + 3 * (PSI_EPSILON - 0.25) * math.log(PSI_EPSILON / 0.25)
    assert population_stability_index(reference, current, bins=4) == pytest.approx(expected, rel=1e-12)


def test_psi_ties_merge_bins_and_values_outside_range_count() -> None:
    reference = np.array([1.0] * 90 + [0.5] * 10)  # quantile edges collapse to one
    assert population_stability_index(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert population_stability_index(np.arange(100.0), np.full(10, 1e6), bins=4) > 1.0


@pytest.mark.parametrize(
    ("reference", "current", "kwargs", "match"),
    [
        ([], [1.0], {}, "empty"),
        ([1.0], [float("nan")], {}, "NaN"),
        ([[1.0]], [1.0], {}, "one-dimensional"),
        ([1.0], [1.0], {"bins": 1}, "bins"),
    ],
)
def test_psi_rejects_bad_input(
    reference: list[float], current: list[float], kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        population_stability_index(reference, current, **kwargs)


def test_label_agreement_rate() -> None:
    assert label_agreement_rate(["a", "b", "a", "c"], ["a", "b", "b", "c"]) == 0.75
    assert label_agreement_rate(["x"], ["x"]) == 1.0
    with pytest.raises(ValueError, match="length"):
        label_agreement_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        label_agreement_rate([], [])


def test_mean_cosine_similarity() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [-3.0, -4.0]])
    # cosines 1, 0, -1
    assert mean_cosine_similarity(a, b) == pytest.approx(0.0, abs=1e-12)
    assert mean_cosine_similarity(a, a * 5) == pytest.approx(1.0)
    assert mean_cosine_similarity([[1.0, 1.0]], [[1.0, 0.0]]) == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ValueError, match="shape"):
        mean_cosine_similarity(a, b[:2])
    with pytest.raises(ValueError, match="zero-norm"):
        mean_cosine_similarity([[0.0, 0.0]], [[1.0, 0.0]])


def test_embedding_norms_summary() -> None:
    summary = embedding_norms_summary([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])  # norms 5, 1, 2
    assert (summary.n, summary.min, summary.median, summary.max) == (3, 1.0, 2.0, 5.0)
    assert summary.mean == pytest.approx(8 / 3)
    assert summary.std == pytest.approx(np.std([5.0, 1.0, 2.0], ddof=1))
    assert embedding_norms_summary([[1.0, 0.0]]).std == 0.0


def test_latency_percentiles() -> None:
    summary = latency_percentiles([1.0, 2.0, 3.0, 4.0])
    assert (summary.n, summary.p50_ms, summary.mean_ms) == (4, 2.5, 2.5)
    assert summary.p95_ms == pytest.approx(3.85)  # 1 + 0.95 * 3 on the linear scale of order statistics
    big = latency_percentiles(np.arange(1, 101, dtype=float))
    assert big.p50_ms == pytest.approx(50.5)
    assert big.p95_ms == pytest.approx(95.05)
    with pytest.raises(ValueError, match=">= 0"):
        latency_percentiles([-1.0])
