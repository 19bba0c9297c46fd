"""Ramp schedules: staged roll-out of the non-control variant(s), with automatic rollback.

A ramp is a list of steps ``{"fraction": 0.05, "min_units": 1000, "min_hours": 24}``; ``fraction``
is the share of eligible units served the non-control variant(s) at that step, the rest get
control (DESIGN.md, ``allocation.strategy = "ramp"``).  The scheduler calls ``next_ramp_action``
periodically with what happened at the current step and the guardrail statuses (computed by
``scorecards``), and publishes ``ramp_weights`` as a new allocation version when it advances.

Decision rule of ``next_ramp_action`` (evaluated in this order):

1. any guardrail ``"fail"``        → ``rollback`` (at once, in every mode, whatever the step);
2. step minimums not yet met       → ``hold`` (``min_units``, ``min_hours``, optionally the units
                                      needed for power on the guardrail margin, and with
                                      ``min_power`` the power to detect a harm of each guardrail's
                                      margin from the data so far);
3. on the last step                → ``complete`` (the final step has run its course, nothing failed);
4. otherwise                       → ``advance`` (``mode="auto"``) or ``suggest_advance``
                                      (``mode="suggest"``: a human confirms).

``"inconclusive"`` guardrails do not block advancing — a guardrail that needs more data gets it
from the larger next step, while a detected harm rolls back immediately.  Two ways make a step wait
until a harm of the guardrail margin would be detected: ``required_units`` (a unit count planned up
front, ``units_for_guardrail_power``) or a step's ``min_power`` with the *achieved* power of each
guardrail's test given the standard error measured so far (``guardrail_detection_power``) — the
auto-ramp idea of LinkedIn's SQR framework (Xu et al. 2018, "SQR: Balancing Speed, Quality and Risk in
Online Experiments", §4), which needs no variance guessed in advance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import special

from bandits.floors import exact_simplex

RampActionKind = Literal["advance", "hold", "rollback", "complete", "suggest_advance"]
GuardrailStatus = Literal["pass", "fail", "inconclusive"]
RampMode = Literal["auto", "suggest"]
_STATUSES = ("pass", "fail", "inconclusive")


@dataclass(frozen=True, slots=True)
class RampStep:
    """One ramp step: serve ``fraction`` of eligible units the treatment for at least the minimums."""

    fraction: float
    min_units: int = 0
    min_hours: float = 0.0
    min_power: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"ramp fraction must be in (0, 1], got {self.fraction}")
        if self.min_units < 0 or self.min_hours < 0:
            raise ValueError("min_units and min_hours must be >= 0")
        if self.min_power is not None and not 0.0 < self.min_power < 1.0:
            raise ValueError("min_power must be in (0, 1)")

    @classmethod
    def parse(cls, step: RampStep | Mapping[str, float | None]) -> RampStep:
        """Accept a ``RampStep`` or the JSON mapping of the REST contract."""
        if isinstance(step, RampStep):
            return step
        power = step.get("min_power")
        return cls(
            fraction=float(step["fraction"]),  # type: ignore[arg-type]
            min_units=int(step.get("min_units") or 0),
            min_hours=float(step.get("min_hours") or 0.0),
            min_power=None if power is None else float(power),
        )


@dataclass(frozen=True, slots=True)
class RampAction:
    """What the scheduler should do now.

    Attributes:
        action: ``advance | hold | rollback | complete | suggest_advance``.
        next_step_index: the step to be on after the action (current + 1 for ``advance`` and
            ``suggest_advance``, current for ``hold``/``complete``); ``None`` for ``rollback``
            (every unit returns to control).
        reasons: human-readable reasons, stored with the allocation history.
    """

    action: RampActionKind
    next_step_index: int | None
    reasons: tuple[str, ...]


def parse_steps(steps: Sequence[RampStep | Mapping[str, float | None]]) -> tuple[RampStep, ...]:
    """Validate a schedule: at least one step, fractions strictly increasing in (0, 1]."""
    parsed = tuple(RampStep.parse(s) for s in steps)
    if not parsed:
        raise ValueError("a ramp needs at least one step")
    for prev, cur in zip(parsed, parsed[1:], strict=False):
        if cur.fraction <= prev.fraction:
            raise ValueError("ramp fractions must be strictly increasing")
    return parsed


def next_ramp_action(
    steps: Sequence[RampStep | Mapping[str, float | None]],
    current_step_index: int,
    units_at_step: int,
    hours_at_step: float,
    guardrail_statuses: Mapping[str, GuardrailStatus],
    mode: RampMode = "auto",
    *,
    required_units: int | None = None,
    guardrail_power: Mapping[str, float | None] | None = None,
) -> RampAction:
    """Decide whether a ramp advances, holds, rolls back or completes (rule in the module doc).

    Args:
        steps: the schedule (``RampStep`` or ``{"fraction", "min_units", "min_hours"}`` mappings).
        current_step_index: index of the step now serving traffic.
        units_at_step: eligible units assigned since this step started.
        hours_at_step: hours since this step started.
        guardrail_statuses: guardrail metric key → ``"pass" | "fail" | "inconclusive"``.
        mode: ``"auto"`` advances by itself; ``"suggest"`` returns ``suggest_advance`` instead.
        required_units: optional extra unit minimum for this step (e.g. from
            ``units_for_guardrail_power``); the step waits for max(min_units, required_units).
        guardrail_power: guardrail metric key → achieved power to detect a harm of its margin
            (``guardrail_detection_power``; None when not computable yet); a step with ``min_power``
            waits until every guardrail reaches it.

    Returns:
        A frozen ``RampAction``.
    """
    parsed = parse_steps(steps)
    if not 0 <= current_step_index < len(parsed):
        raise ValueError(f"current_step_index {current_step_index} out of range for {len(parsed)} steps")
    if units_at_step < 0 or hours_at_step < 0:
        raise ValueError("units_at_step and hours_at_step must be >= 0")
    if mode not in ("auto", "suggest"):
        raise ValueError(f"mode must be auto or suggest, got {mode!r}")
    for key, status in guardrail_statuses.items():
        if status not in _STATUSES:
            raise ValueError(f"guardrail {key!r} has unknown status {status!r}")

    failed = sorted(k for k, s in guardrail_statuses.items() if s == "fail")
    if failed:
        return RampAction("rollback", None, tuple(f"guardrail {k} failed" for k in failed))

    step = parsed[current_step_index]
    min_units = max(step.min_units, required_units or 0)
    waiting: list[str] = []
    if units_at_step < min_units:
        waiting.append(f"{units_at_step} of {min_units} units at step {current_step_index}")
    if hours_at_step < step.min_hours:
        waiting.append(f"{hours_at_step:g} of {step.min_hours:g} hours at step {current_step_index}")
    if step.min_power is not None:
        for key in sorted(guardrail_statuses):
            achieved = (guardrail_power or {}).get(key)
            if achieved is None or not achieved >= step.min_power:
                shown = "not yet computable" if achieved is None else f"{achieved:.2f}"
                waiting.append(f"guardrail {key}: power to detect a harm of its margin {shown} "
                               f"< {step.min_power:g} at step {current_step_index}")
    if waiting:
        return RampAction("hold", current_step_index, tuple(waiting))

    pending = sorted(k for k, s in guardrail_statuses.items() if s == "inconclusive")
    notes = tuple(f"guardrail {k} inconclusive (not blocking)" for k in pending)
    if current_step_index == len(parsed) - 1:
        done = f"final step at fraction {step.fraction:g} done, no guardrail failed"
        return RampAction("complete", current_step_index, (done, *notes))
    nxt = parsed[current_step_index + 1]
    reason = f"step {current_step_index} minimums met; next fraction {nxt.fraction:g}"
    action: RampActionKind = "advance" if mode == "auto" else "suggest_advance"
    return RampAction(action, current_step_index + 1, (reason,) + notes)


def ramp_bucket_order(variant_keys: Sequence[str], control_key: str) -> tuple[str, ...]:
    """A variant order for bucketing under which ramping up never re-assigns a treated unit.

    Bucketing (spec/bucketing.md §3.5) gives variant i the contiguous bucket range between the
    cumulative boundaries of the weights in variant order.  With ``ramp_weights`` the treatments to
    the left of control occupy [0, i·f/m) and those to its right [1 − (m−i)·f/m, 1): both blocks only
    grow as the fraction f grows, so **whatever the order, a unit already in treatment never moves
    back to control**.  Within a block only the outermost treatment's range is nested, so:

    * one treatment: any order (returned unchanged) — e.g. control last gives treatment [0, f);
    * two treatments: ``[t1, control, t2]`` — t1 = [0, f/2), t2 = [1 − f/2, 1), each only grows,
      so no unit ever changes variant while ramping up;
    * three or more: treatments first, control last (treatment block [0, f) grows, so nobody returns
      to control), but contiguous ranges cannot also keep every unit on its treatment — ramp one
      treatment at a time if that matters.
    """
    keys = list(variant_keys)
    if control_key not in keys:
        raise ValueError(f"control {control_key!r} is not a variant")
    if len(set(keys)) != len(keys):
        raise ValueError("variant keys must be unique")
    treatments = [k for k in keys if k != control_key]
    if len(treatments) <= 1:
        return tuple(keys)
    if len(treatments) == 2:
        return (treatments[0], control_key, treatments[1])
    return (*treatments, control_key)


def ramp_weights(variant_keys: Sequence[str], control_key: str, fraction: float) -> dict[str, float]:
    """Weights of a ramp step, keyed by variant in ``variant_keys`` order.

    Control gets 1 − fraction; the m non-control variants share ``fraction`` equally (fraction/m
    each).  The dict follows ``variant_keys`` order, which is the bucket order: register the
    variants in ``ramp_bucket_order`` so that ramping up never moves a treated unit back to control
    (or, with at most two treatments, to another treatment).  ``math.fsum`` of the values is 1.0.
    """
    keys = list(variant_keys)
    if control_key not in keys:
        raise ValueError(f"control {control_key!r} is not a variant")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    m = len(keys) - 1
    if m == 0:
        return {control_key: 1.0}
    raw = [1.0 - fraction if k == control_key else fraction / m for k in keys]
    # why: only control may absorb the rounding residual, so every treatment keeps exactly f/m.
    lo = [0.0 if k == control_key else w for k, w in zip(keys, raw, strict=True)]
    hi = [1.0 if k == control_key else w for k, w in zip(keys, raw, strict=True)]
    exact = exact_simplex(raw, lo, hi)
    return {k: float(w) for k, w in zip(keys, exact, strict=True)}


def ramp_split(variant_keys: Sequence[str], control_key: str, fraction: float,
               registered: Sequence[float] | None = None) -> dict[str, float]:
    """Weights of a ramp step when the treatments were registered with weights: the one ramp-weights rule.

    Control gets 1 − fraction; the treatments share ``fraction`` in proportion to their ``registered`` weights
    (aligned with ``variant_keys``; control's entry is ignored): treatment i gets fraction·wᵢ/Σw and control
    1 − fsum(treatments). When the treatments' registered weights are all equal, sum to 0 or are not given,
    they share equally and this is exactly ``ramp_weights`` (f/m each, control absorbs the rounding).
    Used for allocation version 1 of a ramp (its first step) and for every ramp step after it.
    """
    keys = list(variant_keys)
    if registered is None:
        return ramp_weights(keys, control_key, fraction)
    if len(registered) != len(keys):
        raise ValueError("registered weights must align with variant_keys")
    base = ramp_weights(keys, control_key, fraction)
    treatments = [(k, w) for k, w in zip(keys, registered, strict=True) if k != control_key]
    shares = [w for _, w in treatments]
    total = math.fsum(shares)
    # why: equal weights keep ramp_weights' exact f/m split; only unequal ones need the proportional share.
    if len(set(shares)) > 1 and total > 0:
        for key, weight in treatments:
            base[key] = fraction * weight / total
        base[control_key] = 1.0 - math.fsum(base[key] for key, _ in treatments)
    return base


def guardrail_detection_power(rel_std_error: float, margin: float, alpha: float = 0.05) -> float:
    """Power of the one-sided level-α test of harm to detect a relative harm of exactly ``margin``, given the
    standard error of the relative lift measured so far: 1 − β = Φ(margin / SE − z_{1−α}).

    The achieved-power form of ``units_for_guardrail_power`` (same normal test): SE shrinks as the step
    collects units, so a step gated on it waits exactly until a harm of the margin would be seen.
    Returns NaN when SE is not a positive finite number (too few units to estimate it).
    """
    if not margin > 0:
        raise ValueError("margin must be > 0")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if not (rel_std_error > 0 and math.isfinite(rel_std_error)):
        return math.nan
    return float(special.ndtr(margin / rel_std_error - special.ndtri(1.0 - alpha)))


def units_for_guardrail_power(
    fraction: float,
    baseline_mean: float,
    sd: float,
    margin: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Total units a ramp step needs to detect a relative guardrail harm of ``margin``.

    One-sided test at level α with power 1 − β, treatment share f, control share 1 − f:

        N = (z_{1−α} + z_{1−β})² · σ² · (1/f + 1/(1 − f)) / (margin · μ)²

    the unequal-allocation form of n = (z_{1−α} + z_{1−β})²·2σ²/(margin·μ)² per arm (they agree at
    f = 1/2, where N = 2n); σ is the per-unit standard deviation (√(p(1 − p)) for proportions).
    At f = 1 there is no concurrent control, so no power requirement applies (returns 0).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError("alpha and power must be in (0, 1)")
    if sd <= 0 or margin <= 0 or baseline_mean == 0:
        raise ValueError("need sd > 0, margin > 0 and a non-zero baseline mean")
    if fraction == 1.0:
        return 0
    z = float(special.ndtri(1.0 - alpha) + special.ndtri(power))
    n = z**2 * sd**2 * (1.0 / fraction + 1.0 / (1.0 - fraction)) / (margin * baseline_mean) ** 2
    return math.ceil(n)
