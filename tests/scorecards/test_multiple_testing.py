"""Holm and Benjamini–Hochberg against hand-computed values."""

from __future__ import annotations

import math

import pytest

from scorecards import adjust_p_values, benjamini_hochberg, holm


def test_holm_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 × (4, 3, 2, 1) = 0.02, 0.03, 0.06, 0.04 → monotone 0.02, 0.03, 0.06, 0.06
    res = holm(p)
    assert res.raw == tuple(p)
    assert res.adjusted == pytest.approx((0.03, 0.06, 0.06, 0.02))
    assert res.rejected == (True, False, False, True)


def test_bh_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted × m/rank: 0.005·4 = 0.02, 0.01·2 = 0.02, 0.03·4/3 = 0.04, 0.04 → step-up minimum
    res = benjamini_hochberg(p)
    assert res.adjusted == pytest.approx((0.02, 0.04, 0.04, 0.02))
    assert all(res.rejected)


def test_nan_entries_are_left_out_of_the_family() -> None:
    res = holm([0.01, math.nan, 0.02])
    assert math.isnan(res.adjusted[1])
    assert not res.rejected[1]
    assert res.adjusted[0] == pytest.approx(0.02)
    assert res.adjusted[2] == pytest.approx(0.02)
    assert holm([]).adjusted == ()
    with pytest.raises(ValueError, match="method"):
        adjust_p_values([0.1], "bonferroni")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.2])


def test_holm_equals_statsmodels_on_random_families() -> None:
    import numpy as np
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(12)
    for m in (1, 2, 5, 17, 60):
        p = np.concatenate([rng.uniform(0, 1, m), rng.uniform(0, 0.01, m // 2)])
        ours = holm(list(p), alpha=0.05)
        rej, adj, _, _ = multipletests(p, alpha=0.05, method="holm")
        assert ours.adjusted == pytest.approx(tuple(adj), rel=1e-12)
        assert ours.rejected == tuple(bool(r) for r in rej)
        bh_rej, bh_adj, _, _ = multipletests(p, alpha=0.05, method="fdr_bh")
        assert benjamini_hochberg(list(p)).adjusted == pytest.approx(tuple(bh_adj), rel=1e-12)


@pytest.mark.parametrize(("m", "alpha"), [(11, 0.05), (22, 0.1), (44, 0.2), (3, 0.05), (7, 0.01)])
def test_holm_rejects_floating_point_ties_at_the_threshold_as_statsmodels_does(m: int, alpha: float) -> None:
    """p = α/m for all m tests: the smallest sits exactly at its threshold; 11·(0.05/11) = 0.05000000000000001."""
    from statsmodels.stats.multitest import multipletests

    p = [alpha / m] * m
    ours = holm(p, alpha)
    reference, _, _, _ = multipletests(p, alpha=alpha, method="holm")
    assert list(ours.rejected) == list(reference)
    assert ours.rejected == (True,) * m
