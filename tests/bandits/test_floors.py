"""Floors and caps on allocation weights: reference cases and hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandits.floors import apply_floors, exact_simplex

TOL = 1e-12


def test_floor_raises_small_arms_and_keeps_ratios_of_the_rest() -> None:
    w = apply_floors([0.90, 0.06, 0.03, 0.01], floor=0.05)
    # the two small arms sit at the floor; 0.9 : 0.06 keeps its ratio in the remaining 0.9 of mass
    np.testing.assert_allclose(w, [0.9 * 0.9 / 0.96, 0.9 * 0.06 / 0.96, 0.05, 0.05], rtol=1e-12)
    assert math.fsum(w) == 1.0


def test_cap_moves_excess_to_the_others_proportionally() -> None:
    w = apply_floors([0.8, 0.15, 0.05], cap=0.5)
    np.testing.assert_allclose(w, [0.5, 0.375, 0.125], rtol=1e-12)


def test_water_fills_zero_weight_arms_when_positive_arms_are_capped() -> None:
    w = apply_floors([1.0, 0.0, 0.0, 0.0], floor=0.01, cap=[0.4, 1.0, 1.0, 0.1])
    # arm 0 capped at 0.4; the 0.6 left is poured evenly, arm 3 stops at its 0.1 cap
    np.testing.assert_allclose(w, [0.4, 0.25, 0.25, 0.1], rtol=1e-12)


def test_all_zero_weights_become_uniform_and_floor_equals_cap_pins_an_arm() -> None:
    np.testing.assert_allclose(apply_floors([0.0, 0.0, 0.0, 0.0]), [0.25] * 4)
    w = apply_floors([0.2, 0.7, 0.1], floor=[1 / 3, 0.0, 0.0], cap=[1 / 3, 1.0, 1.0])
    np.testing.assert_allclose(w, [1 / 3, 2 / 3 * 0.875, 2 / 3 * 0.125], rtol=1e-12)


def test_excluded_arm_gets_exactly_zero() -> None:
    w = apply_floors([0.5, 0.3, 0.2], floor=[0.1, 0.0, 0.1], cap=[1.0, 0.0, 1.0])
    assert w[1] == 0.0
    np.testing.assert_allclose(w, [0.5 / 0.7, 0.0, 0.2 / 0.7], rtol=1e-12)


@pytest.mark.parametrize(
    ("weights", "floor", "cap", "match"),
    [
        ([0.5, 0.5], 0.6, None, "infeasible"),
        ([0.5, 0.5], 0.0, 0.4, "infeasible"),
        ([0.5, -0.1], 0.0, None, "non-negative"),
        ([0.5, np.nan], 0.0, None, "finite"),
        ([0.5, 0.5], [0.3, 0.2, 0.1], None, "shape"),
        ([0.5, 0.5], 0.3, 0.2, "floor <= cap"),
    ],
)
def test_invalid_limits_raise(weights: list[float], floor: object, cap: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        apply_floors(weights, floor, cap)  # type: ignore[arg-type]


@st.composite
def limits(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = draw(st.integers(1, 25))
    unit = st.floats(0.0, 1.0, allow_nan=False)
    weights = np.array(draw(st.lists(unit, min_size=k, max_size=k)))
    # some exact zeros: arms the policy gave nothing (they must still reach their floors)
    zero = np.array(draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    weights[zero] = 0.0
    raw_floor = np.array(draw(st.lists(unit, min_size=k, max_size=k)))
    floor = raw_floor / max(1.0, raw_floor.sum()) * draw(st.floats(0.0, 1.0))
    raw_cap = np.array(draw(st.lists(unit, min_size=k, max_size=k)))
    cap = np.minimum(1.0, floor + raw_cap)
    if cap.sum() < 1.0:  # make the caps feasible by opening up one random arm
        cap[draw(st.integers(0, k - 1))] = 1.0
        if cap.sum() < 1.0:
            cap[:] = 1.0
    return weights, floor, cap


@settings(max_examples=300, deadline=None)
@given(limits())
def test_property_weights_sum_to_one_and_respect_limits(case: tuple[np.ndarray, ...]) -> None:
    weights, floor, cap = case
    w = apply_floors(weights, floor, cap)
    assert math.fsum(w.tolist()) == 1.0
    assert np.all(w >= floor - TOL)
    assert np.all(w <= cap + TOL)


@settings(max_examples=200, deadline=None)
@given(limits())
def test_property_unconstrained_arms_keep_the_policy_ratios(case: tuple[np.ndarray, ...]) -> None:
    weights, floor, cap = case
    w = apply_floors(weights, floor, cap)
    free = (weights > 1e-300) & (w > floor + 1e-9) & (w < cap - 1e-9)
    if free.sum() >= 2:
        ratio = w[free] / weights[free]
        # why atol on the weights: the final exact-simplex correction moves up to the feasibility tolerance
        # (1e-9) of mass onto one arm, which can shift that arm's ratio by more than 1e-9 relative
        np.testing.assert_allclose(w[free], ratio[0] * weights[free], rtol=1e-9, atol=2e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.001, 1.0), min_size=1, max_size=50))
def test_property_exact_simplex_makes_fsum_exactly_one(raw: list[float]) -> None:
    w = np.array(raw) / math.fsum(raw)
    fixed = exact_simplex(w)
    assert math.fsum(fixed.tolist()) == 1.0
    np.testing.assert_allclose(fixed, w, atol=1e-15)
