"""The shapes of the serving report (``GET /v1/experiments/{key}/serving``, also the scorecard's ``serving``) and of
what it is computed from, as ``TypedDict``s: plain dicts, the JSON unchanged; ``api.serving.schemas`` keeps the
pydantic response model (the OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import NotRequired, TypedDict


class PredictionSummary(TypedDict, total=False):
    """A prediction row's monitoring summary: ``labels`` and ``scores`` (classifiers) or ``norms`` and ``dim``
    (embeddings), one entry per input."""

    labels: list[str]
    scores: list[float]
    norms: list[float]
    dim: int


class PredictionTotals(TypedDict):
    """Counts over every stored prediction of one (variant, shadow)."""

    variant: str
    shadow: bool
    n: int
    n_inputs: int
    errors: int
    agreement_n: int
    agreement_mean: float | None
    first_at: datetime | None
    last_at: datetime | None


class Quantiles(TypedDict):
    """Summary of a monitored value (classifier scores or embedding norms)."""

    mean: float
    std: float
    min: float
    p10: float
    p50: float
    p90: float
    max: float


class OutputDistribution(TypedDict):
    """Label shares and score quantiles (classifiers) or the norm quantiles (embeddings)."""

    n: int
    labels: NotRequired[dict[str, float]]
    score: NotRequired[Quantiles]
    norm: NotRequired[Quantiles]


class DailyRow(TypedDict):
    """One UTC day of a variant's predictions."""

    date: str
    n: int
    errors: int
    mean_value: float | None
    latency_p50_ms: float | None


class LatencyJson(TypedDict):
    """Latency percentiles of successful requests."""

    n: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


class AgreementJson(TypedDict):
    """How a shadow variant agrees with control on the same inputs."""

    measure: str
    n: int
    mean: float


class VariantReport(TypedDict):
    """One variant of the serving report."""

    variant: str
    model: str | None
    shadow: bool
    control: bool
    n: int
    n_inputs: int
    errors: int
    error_rate: float | None
    latency: LatencyJson | None
    outputs: OutputDistribution | None
    psi_vs_control: float | None
    psi_vs_first_day: float | None
    agreement_vs_control: AgreementJson | None
    daily: list[DailyRow]
    notes: list[str]


class ServingReport(TypedDict):
    """The serving report of one experiment."""

    experiment: str
    status: str
    task: str | None
    window_rows_per_variant: int
    variants: list[VariantReport]
