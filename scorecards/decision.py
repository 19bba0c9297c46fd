"""The ship / no-ship / rollback / keep-running decision, as a pure function of the statistics.

Rules (DESIGN.md "decide" step). Every decision carries the ``rule`` that took it, and its reasons are that rule's
story alone — never another rule's "keep running":

A/B experiment (``experiment_type="ab"``), read by its design's rule — ``fixed_horizon`` (at the planned sample),
``msprt`` (always-valid, at any time) or ``gst`` (group-sequential, at its looks) — per variant:
  * *loss*: a guardrail failed (always-valid, so at any look), or — once the primary comparison may
    be read (planned sample reached; any time under mSPRT; from the first look under GST) — the primary metric
    moved significantly against the hypothesis;
  * *win*: readable, primary significant in the hypothesised direction, every guardrail passing;
  * otherwise pending.
  Decision: a sample ratio mismatch → ``no_ship`` (the split is broken, so no effect can be trusted
  and more data will not repair it); else any win → ``ship`` the win with the largest lift in the
  hypothesised direction; else every variant a loss → ``no_ship``; else planned sample reached (GST: the final
  look) → ``no_ship`` (no significant improvement with guardrails passing); else ``keep_running``.

Roll-out (``experiment_type="rollout"``, rule ``rollout_guardrails``): a failed guardrail on any variant →
``rollback`` at once; else a sample ratio mismatch → ``keep_running`` (it blocks shipping; investigate); else at
the planned sample with every guardrail passing → ``ship``; else ``keep_running``.  The primary metric is
reported but does not gate a roll-out.

Bandits (rule ``bandit_stopping``): :func:`decide_thompson` and :func:`decide_contextual` (the allocation updater
stores the result with each allocation version; the scorecard reads it back).

Reasons are full sentences with the numbers behind them; a number that cannot be computed yet is said in words
(never ``nan``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from scorecards.frequentist import Comparison
from scorecards.gst import GstLook
from scorecards.guardrails import GuardrailResult, GuardrailStatus
from scorecards.kinds import DecisionKind, DecisionRule, ExperimentType, HypothesisDirection


@dataclass(frozen=True)
class Decision:
    """REST ``GET /v1/experiments/{key}/decision`` payload: what to do, the ``rule`` that decided it (its reasons
    come from that rule alone) and the reasons."""

    decision: DecisionKind
    variant: str | None
    reasons: list[str] = field(default_factory=list)
    rule: DecisionRule = "fixed_horizon"


def _p(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3g}"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2%}"


def describe_primary(variant: str, metric: str, c: Comparison) -> str:
    """Sentence with the primary comparison's numbers; without a computable lift (an arm with no units, or too
    few), the counts and what is missing instead of ``nan``."""
    level = f"{1 - c.alpha:.0%}"
    what = {"msprt": "always-valid p", "gst": "repeated p"}.get(c.test, "p")
    if c.treatment_n == 0 or c.control_n == 0:
        where = "either arm" if c.treatment_n == c.control_n == 0 else "control" if c.control_n == 0 else variant
        return (f"{variant}: {metric}: no units with data yet in {where} (n = {c.treatment_n} vs {c.control_n} in "
                "control), so there is no lift to read")
    if not (math.isfinite(c.abs_lift) and math.isfinite(c.abs_ci[0]) and math.isfinite(c.abs_ci[1])):
        return (f"{variant}: {metric}: lift not computable yet ({str(c.reason).replace('_', ' ')}; n = "
                f"{c.treatment_n} vs {c.control_n} in control)")
    if math.isnan(c.rel_lift):
        lift = f"{c.abs_lift:+.4g} (absolute)"
        ci = f"{level} CI [{c.abs_ci[0]:+.4g}, {c.abs_ci[1]:+.4g}]"
    elif math.isinf(c.rel_ci[0]) and math.isinf(c.rel_ci[1]):
        # why: Fieller's set is unbounded when the control mean is not distinguishable from 0; the absolute
        # interval is what can be stated honestly.
        lift = _pct(c.rel_lift)
        ci = (f"relative {level} CI unbounded (control mean not distinguishable from 0), absolute "
              f"[{c.abs_ci[0]:+.4g}, {c.abs_ci[1]:+.4g}]")
    else:
        lift = _pct(c.rel_lift)
        ci = f"{level} CI [{_pct(c.rel_ci[0])}, {_pct(c.rel_ci[1])}]"
    return (
        f"{variant}: {metric} {lift} vs control ({c.treatment_mean:.4g} vs {c.control_mean:.4g}, "
        f"{ci}, {what} = {_p(c.p_value)}, n = {c.treatment_n} vs {c.control_n})"
    )


def _srm_sentence(p_value: float | None) -> str:
    p = "" if p_value is None else f" (p = {_p(p_value)})"
    return (
        f"sample ratio mismatch{p}: units are not split as configured, so the comparison cannot be "
        "trusted; investigate assignment and exposure logging"
    )


def gst_sentence(g: GstLook) -> str:
    """Where a group-sequential design stands: the look, its boundary and the α spent (or that the first look is
    not reached yet)."""
    if g.look == 0:
        return (f"group-sequential design ({g.spending}, {g.looks_planned} looks): the first look is not reached "
                f"yet (information fraction {g.information_fraction:.2f}); nothing is read before it")
    return (f"group-sequential look {g.look} of {g.looks_planned}{' (final)' if g.final else ''} at information "
            f"fraction {g.information_fraction:.2f}: significant when |z| >= {g.boundary:.3f} ({g.spending} "
            f"spending, alpha spent {g.alpha_spent:.4g})")


def decide(
    experiment_type: ExperimentType,
    hypothesis_direction: HypothesisDirection,
    primary: Mapping[str, Comparison],
    guardrails: Mapping[str, Mapping[str, GuardrailResult]] | None = None,
    *,
    srm_mismatch: bool = False,
    srm_p_value: float | None = None,
    planned_n_reached: bool = False,
    sequential: bool = False,
    gst: GstLook | None = None,
    primary_metric: str = "primary metric",
) -> Decision:
    """Decide what to do with an experiment (see module docstring for the rules).

    Args:
        experiment_type: "ab" or "rollout".
        hypothesis_direction: "increase" or "decrease" — the hypothesised move of the primary metric.
        primary: variant key → primary-metric :class:`Comparison` vs control (non-control variants).
            In sequential mode pass always-valid comparisons (:func:`compare_sequential`); under GST the
            comparisons at the current look (:func:`compare_gst`).
        guardrails: variant key → guardrail metric → :class:`GuardrailResult`.
        srm_mismatch: the SRM check flagged the experiment; ``srm_p_value`` is quoted in the reason.
        planned_n_reached: every arm has reached the planned sample size.
        sequential: comparisons are always-valid (mSPRT) and may be acted on before the planned sample.
        gst: a group-sequential design's current look: read from look 1 on, its final look counts as the planned
            sample (rule ``gst``; ``sequential`` is then ignored).
        primary_metric: metric name used in the reasons.
    """
    if experiment_type not in ("ab", "rollout"):
        raise ValueError(f"experiment_type must be 'ab' or 'rollout', got {experiment_type!r}")
    if hypothesis_direction not in ("increase", "decrease"):
        raise ValueError(f"hypothesis_direction must be 'increase' or 'decrease', got {hypothesis_direction!r}")
    guards: Mapping[str, Mapping[str, GuardrailResult]] = guardrails or {}
    variants = list(dict.fromkeys([*primary, *guards]))
    if len(variants) == 0:
        raise ValueError("need at least one non-control variant")
    if experiment_type == "rollout":
        return _decide_rollout(variants, hypothesis_direction, primary, guards, srm_mismatch, srm_p_value,
                               planned_n_reached, primary_metric)
    rule: DecisionRule = "gst" if gst is not None else "msprt" if sequential else "fixed_horizon"
    return _decide_ab(variants, hypothesis_direction, primary, guards, srm_mismatch, srm_p_value,
                      planned_n_reached or (gst is not None and gst.final), rule, gst, primary_metric)


def _not_significant(rule: DecisionRule, gst: GstLook | None, hypothesis: HypothesisDirection, metric: str) -> str:
    """Why a readable variant is pending, in its rule's words."""
    if rule == "gst" and gst is not None:
        return f"not significant at look {gst.look} of {gst.looks_planned} (|z| < {gst.boundary:.3f})"
    if rule == "msprt":
        return "not significant yet (always-valid test, read at every look)"
    return f"no significant {hypothesis} in {metric}"


def _keep_running_head(rule: DecisionRule, gst: GstLook | None, hypothesis: HypothesisDirection,
                       metric: str) -> str:
    if rule == "gst" and gst is not None:
        if gst.look == 0:
            return "keep running: the first group-sequential look is not reached yet"
        return (f"keep running: no variant crossed the group-sequential boundary at look {gst.look} of "
                f"{gst.looks_planned} with every guardrail passing")
    if rule == "msprt":
        return (f"keep running: no variant is significant yet for an {hypothesis} in {metric} with every guardrail "
                "passing (always-valid test: it may be read at any time)")
    return "keep running: the planned sample is not reached yet; the fixed-horizon test is read only then"


def _decide_ab(
    variants: list[str],
    hypothesis: HypothesisDirection,
    primary: Mapping[str, Comparison],
    guards: Mapping[str, Mapping[str, GuardrailResult]],
    srm_mismatch: bool,
    srm_p_value: float | None,
    planned_n_reached: bool,
    rule: DecisionRule,
    gst: GstLook | None,
    metric: str,
) -> Decision:
    sign = 1.0 if hypothesis == "increase" else -1.0
    readable = planned_n_reached or rule == "msprt" or (gst is not None and gst.look >= 1)
    reasons: list[str] = []
    wins: list[tuple[float, str]] = []
    losses: list[str] = []
    for v in variants:
        gr = guards.get(v, {})
        failed = [m for m, g in gr.items() if g.status is GuardrailStatus.FAIL]
        not_passing = [m for m, g in gr.items() if g.status is not GuardrailStatus.PASS]
        cmp_ = primary.get(v)
        if cmp_ is None:
            reasons.append(f"{v}: no primary-metric comparison available")
            right = wrong = False
        else:
            reasons.append(describe_primary(v, metric, cmp_))
            moved = sign * cmp_.abs_lift
            right = cmp_.significant and moved > 0
            wrong = cmp_.significant and moved < 0
        for m in failed:
            reasons.append(f"{v}: {gr[m].describe(m)}")
        if failed:
            losses.append(v)
            reasons.append(f"{v}: a guardrail failed, so it cannot ship")
        elif readable and wrong:
            losses.append(v)
            reasons.append(f"{v}: {metric} moved significantly against the hypothesis ({hypothesis})")
        elif readable and right and not not_passing:
            assert cmp_ is not None
            wins.append((sign * cmp_.rel_lift if not math.isnan(cmp_.rel_lift) else sign * cmp_.abs_lift, v))
            reasons.extend(f"{v}: {gr[m].describe(m)}" for m in gr)
        elif readable and right:
            reasons.extend(f"{v}: {gr[m].describe(m)}" for m in not_passing)
            reasons.append(f"{v}: significant {hypothesis} in {metric}, but not every guardrail passes yet")
        elif readable:
            reasons.append(f"{v}: {_not_significant(rule, gst, hypothesis, metric)}")
        # (not readable yet: the keep-running head says why, once for every variant)
    if gst is not None:
        reasons.append(gst_sentence(gst))

    if srm_mismatch:
        return Decision("no_ship", None, [_srm_sentence(srm_p_value), *reasons], rule)
    if wins:
        wins.sort(key=lambda w: (-w[0], w[1]))
        best = wins[0][1]
        head = f"ship {best}: {metric} moved significantly in the hypothesised direction ({hypothesis}) "
        head += "and every guardrail passes"
        return Decision("ship", best, [head, *reasons], rule)
    if len(losses) == len(variants):
        return Decision("no_ship", None, ["no variant can ship: every variant lost or failed a guardrail",
                                         *reasons], rule)
    if planned_n_reached:
        at = "final group-sequential look" if rule == "gst" else "planned sample"
        return Decision("no_ship", None, [
            f"{at} reached without a significant {hypothesis} in {metric} with every guardrail "
            "passing", *reasons], rule)
    return Decision("keep_running", None, [_keep_running_head(rule, gst, hypothesis, metric), *reasons], rule)


def _decide_rollout(
    variants: list[str],
    hypothesis: HypothesisDirection,
    primary: Mapping[str, Comparison],
    guards: Mapping[str, Mapping[str, GuardrailResult]],
    srm_mismatch: bool,
    srm_p_value: float | None,
    planned_n_reached: bool,
    metric: str,
) -> Decision:
    rule: DecisionRule = "rollout_guardrails"
    reasons: list[str] = []
    failed: list[str] = []
    pending: list[str] = []
    for v in variants:
        for m, g in guards.get(v, {}).items():
            reasons.append(f"{v}: {g.describe(m)}")
            if g.status is GuardrailStatus.FAIL:
                failed.append(v)
            elif g.status is not GuardrailStatus.PASS:
                pending.append(v)
        cmp_ = primary.get(v)
        if cmp_ is not None:
            reasons.append(describe_primary(v, metric, cmp_) + " (informational for a roll-out)")
    if failed:
        v = failed[0]
        return Decision("rollback", v, [f"roll back {v}: a guardrail is significantly worse than control",
                                        *reasons], rule)
    if srm_mismatch:
        return Decision("keep_running", None, [_srm_sentence(srm_p_value) + "; shipping is blocked", *reasons],
                        rule)
    if planned_n_reached and not pending:
        sign = 1.0 if hypothesis == "increase" else -1.0

        def score(v: str) -> float:
            c = primary.get(v)
            return sign * c.rel_lift if c is not None and not math.isnan(c.rel_lift) else -math.inf

        best = sorted(variants, key=lambda v: (-score(v), v))[0]
        return Decision("ship", best, [f"ship {best}: planned sample reached and every guardrail passes",
                                       *reasons], rule)
    if planned_n_reached:
        return Decision("keep_running", None, [
            "planned sample reached but not every guardrail passes yet: keep running", *reasons], rule)
    return Decision("keep_running", None, ["keep running: planned sample not reached and no guardrail failed",
                                           *reasons], rule)


# --- Bandit stopping rules (thompson; the allocation updater stores the result with the allocation version) ---

_BANDIT: DecisionRule = "bandit_stopping"


@dataclass(frozen=True, slots=True)
class ContextLeaders:
    """One context value of a contextual bandit: the leading arm (None without data) and P(best) per arm
    (None where not computable)."""

    leader: str | None
    prob_best: Mapping[str, float | None]


def decide_thompson(arms: Sequence[str], control: str, prob_best: Sequence[float], posterior_ok: bool,
                    threshold: float, guardrails: Mapping[str, Mapping[str, str | None]],
                    excluded: Mapping[str, Sequence[str]]) -> Decision:
    """Thompson stopping rule: an arm with P(best) ≥ ``threshold`` whose guardrails all pass → ``ship`` (the
    control best → ``no_ship``); otherwise ``keep_running``.

    Args:
        arms: the served arms, in the order of ``prob_best``.
        control: the control arm's key.
        prob_best: P(best) per arm (Monte Carlo, ``bandits.thompson``).
        posterior_ok: every arm's posterior is proper (enough data).
        threshold: ``allocation.prob_best_to_ship``.
        guardrails: arm → guardrail metric → its status ("pass", "fail", "inconclusive").
        excluded: arm → the reasons it was given weight 0 (quoted first).
    """
    reasons = [f"{variant} excluded: {r}" for variant, rs in excluded.items() for r in rs]
    if not posterior_ok:
        return Decision("keep_running", None,
                        [*reasons, "posterior not yet proper for every arm (insufficient data)"], _BANDIT)
    best = max(range(len(arms)), key=lambda i: prob_best[i])
    p = prob_best[best]
    variant = arms[best]
    if p < threshold:
        return Decision("keep_running", None, [*reasons, f"highest P(best) is {variant} at {p:.4f} < {threshold:g}"],
                        _BANDIT)
    if variant == control:
        return Decision("no_ship", None, [*reasons, f"control {control} is best with P(best) {p:.4f} >= {threshold:g}"],
                        _BANDIT)
    statuses = guardrails.get(variant, {})
    pending = sorted(m for m, s in statuses.items() if s != "pass")
    if pending:
        return Decision("keep_running", variant, [
            *reasons, f"{variant} has P(best) {p:.4f} >= {threshold:g} but guardrails "
            + ", ".join(f"{m} {statuses[m]}" for m in pending) + " (must pass to ship)"], _BANDIT)
    return Decision("ship", variant, [*reasons, f"{variant} has P(best) {p:.4f} >= {threshold:g}"
                                      + (" and every guardrail passes" if statuses else " (no guardrails)")], _BANDIT)


def decide_contextual(pooled: Decision, threshold: float, attribute: str,
                      values: Mapping[str, ContextLeaders]) -> Decision:
    """A contextual bandit ships one arm everywhere only if every declared value agrees: the pooled rule
    (:func:`decide_thompson`) says ship and that arm also has P(best) ≥ ``threshold`` within each value. When
    values prefer different arms, serving each value its own best is the point — ``keep_running``, naming the
    leaders."""
    if pooled.decision != "ship":
        return replace(pooled, rule=_BANDIT)
    variant = pooled.variant
    disagree = {value: v for value, v in values.items()
                if ((v.prob_best or {}).get(variant or "") or 0.0) < threshold}
    if not disagree:
        return Decision(pooled.decision, variant, [
            *pooled.reasons, f"{variant} also leads within every {attribute} value with P(best) >= {threshold:g}"],
            _BANDIT)
    shown = ", ".join(
        f"{value}: {v.leader or 'no data'}"
        + (f" ({p:.2f})" if (p := ((v.prob_best or {}).get(v.leader) if v.leader else None)) is not None else "")
        for value, v in sorted(disagree.items()))
    return Decision("keep_running", None, [
        *pooled.reasons,
        f"but not within every {attribute} value (leader and P(best): {shown}); the contextual policy keeps "
        f"serving each value its own best rather than shipping {variant} everywhere"], _BANDIT)
