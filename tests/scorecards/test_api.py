"""The notebook API of DESIGN.md ("Python API of scorecards") works exactly as written."""

from __future__ import annotations

import pytest

import scorecards


def test_design_doc_snippet() -> None:
    from scorecards import SampleStats, compare, sample_size_per_arm, srm_p_value

    c = SampleStats(n=10000, sum=1000.0, sum_squares=1000.0)
    t = SampleStats(n=10000, sum=1100.0, sum_squares=1100.0)
    r = compare(c, t, kind="proportion", alpha=0.05)
    fields = (r.abs_lift, r.abs_ci, r.rel_lift, r.rel_ci, r.p_value, r.significant, r.chance_to_beat)
    assert len(r.abs_ci) == 2
    assert len(r.rel_ci) == 2
    assert isinstance(fields[5], bool)
    assert isinstance(sample_size_per_arm(kind="proportion", baseline=0.10, mde=0.05, alpha=0.05, power=0.8), int)
    assert 0.0 < srm_p_value(observed=[50000, 50550], weights=[0.5, 0.5]) < 1.0


def test_rest_field_names_are_present() -> None:
    r = scorecards.compare(scorecards.SampleStats.from_counts(50_007, 5_006),
                           scorecards.SampleStats.from_counts(50_211, 5_533), kind="proportion")
    row = r.as_dict()
    for key in ("control_n", "control_mean", "abs_lift", "abs_ci", "rel_lift", "rel_ci", "p_value",
                "significant", "chance_to_beat"):
        assert key in row
    # DESIGN.md's example row: abs_ci ≈ [0.0063, 0.0139]
    assert row["abs_ci"][0] == pytest.approx(0.0063, abs=1e-4)
    assert row["abs_ci"][1] == pytest.approx(0.0139, abs=1e-4)


def test_all_exports_resolve() -> None:
    for name in scorecards.__all__:
        assert hasattr(scorecards, name), name
    assert {"SampleStats", "compare", "sample_size_per_arm", "srm_p_value"} <= set(scorecards.__all__)
