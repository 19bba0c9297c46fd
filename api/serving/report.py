"""Prediction summaries and the per-variant serving report: plain data in, plain data out (no I/O).

Each prediction log row keeps a small summary of its outputs (``summarise``): the label and score of every
input for classifiers, the L2 norm of every vector for embeddings. The report reads the newest rows of
each variant and turns them into latency percentiles, output distributions, drift (population stability
index) against control and against the variant's own first day, and a daily series.

Drift compares like with like in time: the *current window* is the last 24 h of the experiment's predictions
(``window_start`` = newest prediction - 24 h). ``psi_vs_control`` compares a variant's current window with
control's; ``psi_vs_first_day`` compares it (minus any part still inside the first day) with the variant's
own first 24 h.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np

from api.serving.wire import (
    AgreementJson,
    DailyRow,
    LatencyJson,
    OutputDistribution,
    PredictionSummary,
    PredictionTotals,
    Quantiles,
    VariantReport,
)
from models.monitoring import (
    label_agreement_rate,
    latency_percentiles,
    mean_cosine_similarity,
    population_stability_index,
)

CLASSIFICATION = "text-classification"
FIRST_DAY = timedelta(days=1)


def summarise(task: str, outputs: Sequence[Any]) -> PredictionSummary:
    """The monitoring summary of one request's outputs (stored as the prediction row's ``summary``).

    Scores are rounded to 6 decimals: far below any drift a PSI bin can see, and it keeps rows small.
    """
    if task == CLASSIFICATION:
        return {"labels": [str(o["label"]) for o in outputs], "scores": [round(float(o["score"]), 6) for o in outputs]}
    if not outputs:
        return {"norms": [], "dim": 0}
    matrix = np.asarray(outputs, dtype=np.float64)
    return {"norms": [round(float(n), 6) for n in np.linalg.norm(matrix, axis=1)], "dim": int(matrix.shape[1])}


def agreement(task: str, control: Sequence[Any], shadow: Sequence[Any]) -> float | None:
    """How a shadow run agrees with control on the same inputs: the share of equal labels (classifiers) or the
    mean cosine similarity of the embeddings; None when the outputs cannot be compared (shapes differ)."""
    if len(control) != len(shadow) or not control:
        return None
    try:
        if task == CLASSIFICATION:
            return label_agreement_rate([o["label"] for o in control], [o["label"] for o in shadow])
        return mean_cosine_similarity(control, shadow)
    except (ValueError, TypeError, KeyError):
        return None


def _values(summaries: Sequence[PredictionSummary]) -> list[float]:
    """Per-input monitored values of many requests: classifier scores or embedding norms."""
    out: list[float] = []
    for summary in summaries:
        out.extend(summary.get("scores") or summary.get("norms") or [])
    return out


def _quantiles(values: Sequence[float]) -> Quantiles:
    array = np.asarray(values, dtype=np.float64)
    p10, p50, p90 = np.percentile(array, [10.0, 50.0, 90.0])
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "min": float(array.min()), "p10": float(p10), "p50": float(p50), "p90": float(p90),
            "max": float(array.max())}


def output_distribution(task: str | None, summaries: Sequence[PredictionSummary]) -> OutputDistribution | None:
    """Label shares and score quantiles (classifiers) or the norm summary (embeddings); None without data."""
    values = _values(summaries)
    if not values:
        return None
    if task == CLASSIFICATION:
        labels = Counter(label for summary in summaries for label in summary.get("labels", []))
        total = sum(labels.values())
        return {"n": len(values), "labels": {k: v / total for k, v in sorted(labels.items())},
                "score": _quantiles(values)}
    return {"n": len(values), "norm": _quantiles(values)}


def psi(reference: Sequence[float], current: Sequence[float]) -> float | None:
    """PSI of ``current`` against ``reference`` (10 quantile bins of the reference); None when either is empty."""
    if not reference or not current:
        return None
    return population_stability_index(reference, current)


def daily(rows: Sequence[Any]) -> list[DailyRow]:
    """Per UTC day: requests, errors, mean monitored value and median latency of successful requests."""
    days: dict[str, list[Any]] = {}
    for row in rows:
        days.setdefault(row.created_at.date().isoformat(), []).append(row)
    out: list[DailyRow] = []
    for day in sorted(days):
        group = days[day]
        ok = [r for r in group if r.error is None]
        values = _values([r.summary for r in ok])
        out.append({"date": day, "n": len(group), "errors": len(group) - len(ok),
                    "mean_value": float(np.mean(values)) if values else None,
                    "latency_p50_ms": float(np.median([r.latency_ms for r in ok])) if ok else None})
    return out


def variant_report(
    *, variant: str, model: str | None, shadow: bool, control: bool, task: str | None,
    totals: PredictionTotals | None, rows: Sequence[Any], first_day_rows: Sequence[Any],
    control_rows: Sequence[Any] | None, window_start: datetime | None,
) -> VariantReport:
    """One variant of the serving report.

    Args:
        totals: counts over every stored row of the variant (``n``, ``n_inputs``, ``errors``, ``agreement_n``,
            ``agreement_mean``, ``first_at``), or None when it has none.
        rows: its newest predictions (the sampled window), newest first.
        first_day_rows: its predictions in the 24 h after its first one (the drift reference).
        control_rows: control's newest predictions (None for control itself).
        window_start: start of the current window (see the module docstring); None without predictions.
    """
    notes: list[str] = []
    n = int(totals["n"]) if totals else 0
    errors = int(totals["errors"]) if totals else 0
    ok = [r for r in rows if r.error is None]
    latency: LatencyJson | None = None
    if ok:
        summary = latency_percentiles([r.latency_ms for r in ok])
        latency = {"n": summary.n, "mean_ms": summary.mean_ms, "p50_ms": summary.p50_ms, "p95_ms": summary.p95_ms,
                   "p99_ms": summary.p99_ms}
    current = [r for r in ok if window_start is not None and r.created_at >= window_start]
    psi_control = None
    if control:
        notes.append("psi_vs_control: this is the control")
    elif control_rows is not None:
        control_current = [r for r in control_rows
                           if r.error is None and window_start is not None and r.created_at >= window_start]
        psi_control = psi(_values([r.summary for r in control_current]), _values([r.summary for r in current]))
        if psi_control is None:
            notes.append("psi_vs_control: no successful predictions of this variant or of control in the last 24 h")
    psi_first_day = None
    first_at: datetime | None = totals.get("first_at") if totals else None
    if first_at is not None:
        later = [r for r in current if r.created_at >= first_at + FIRST_DAY]
        psi_first_day = psi(_values([r.summary for r in first_day_rows if r.error is None]), _values(
            [r.summary for r in later]))
        if psi_first_day is None:
            notes.append("psi_vs_first_day: no predictions after this variant's first day yet")
    else:
        notes.append("no predictions yet")
    agreement_out: AgreementJson | None = None
    if shadow:
        if totals and int(totals["agreement_n"]) > 0:
            # the mean is not null: it averages agreement_n > 0 non-null values
            agreement_out = {"measure": "label_agreement" if task == CLASSIFICATION else "mean_cosine",
                             "n": int(totals["agreement_n"]), "mean": float(cast(float, totals["agreement_mean"]))}
        else:
            notes.append("agreement_vs_control: no shadow run compared with control yet")
    return {
        "variant": variant, "model": model, "shadow": shadow, "control": control, "n": n,
        "n_inputs": int(totals["n_inputs"]) if totals else 0, "errors": errors,
        "error_rate": errors / n if n else None, "latency": latency,
        "outputs": output_distribution(task, [r.summary for r in ok]),
        "psi_vs_control": psi_control, "psi_vs_first_day": psi_first_day, "agreement_vs_control": agreement_out,
        "daily": daily(rows), "notes": notes,
    }
