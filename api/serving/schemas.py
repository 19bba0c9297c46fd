"""Schemas of the model registry, prediction and the serving report (DESIGN.md REST contract; names fixed)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from api.json_types import JsonObject
from api.schemas_common import Key, RequestModel, UnitId

Task = Literal["text-classification", "embedding"]
DType = Literal["float32", "bfloat16", "float16"]
Pooling = Literal["mean", "cls"]

MAX_INPUTS = 1024  # hard cap per request; the model's own max_batch is checked after assignment
MAX_INPUT_CHARS = 10_000
InputText = Annotated[str, StringConstraints(max_length=MAX_INPUT_CHARS)]


class ModelCreate(RequestModel):
    """A model variant spec: a local directory of a transformers model and how to run it."""

    key: Key
    task: Task
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    dtype: DType = "float32"
    device: Annotated[str, StringConstraints(pattern=r"^(auto|cpu|cuda|cuda:\d{1,2})$")] = "auto"
    max_batch: int = Field(64, ge=1, le=4096)
    max_length: int = Field(128, ge=1, le=32_768)
    pooling: Pooling = Field("mean", description="embeddings only: mean (attention-masked) or CLS pooling")


class ModelOut(BaseModel):
    """A registered model spec; ``loaded``/``runtime`` describe it in the worker that answered."""

    key: str
    task: Task
    path: str
    dtype: DType
    device: str
    max_batch: int
    max_length: int
    pooling: Pooling
    created_at: datetime
    loaded: bool = False
    runtime: dict[str, Any] | None = Field(None, description="resolved device, dtype and attention when loaded")


class PredictRequest(RequestModel):
    """Serve ``inputs`` with the model of the variant the unit is assigned to."""

    unit_id: UnitId
    attributes: JsonObject = Field(default_factory=dict)
    inputs: list[InputText] = Field(min_length=1, max_length=MAX_INPUTS)


class PredictResponse(BaseModel):
    """The variant and model that served, one output per input, and the model's latency."""

    variant: str
    model: str
    outputs: list[Any] = Field(description="classification: {label, score} per input; embedding: a vector per input")
    latency_ms: float = Field(description="queueing + forward pass in the model's batcher (not the first load)")
    request_id: str = Field(description="also the id of this request's prediction log row and serving events")


class LatencyOut(BaseModel):
    """Latency percentiles (ms) of successful requests."""

    n: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


class AgreementOut(BaseModel):
    """How a shadow variant agrees with control on the same requests."""

    measure: Literal["label_agreement", "mean_cosine"]
    n: int = Field(description="shadow runs compared")
    mean: float


class DailyOut(BaseModel):
    """One UTC day of a variant's predictions (within the sampled window)."""

    date: str
    n: int
    errors: int
    mean_value: float | None = Field(description="mean score (classifiers) or embedding norm")
    latency_p50_ms: float | None


class VariantServingOut(BaseModel):
    """Serving health and output distribution of one variant."""

    variant: str
    model: str | None
    shadow: bool
    control: bool
    n: int = Field(description="requests (shadow runs for a shadow variant)")
    n_inputs: int
    errors: int
    error_rate: float | None
    latency: LatencyOut | None
    outputs: dict[str, Any] | None = Field(
        description="classifiers: label shares and score quantiles; embeddings: norm summary"
    )
    psi_vs_control: float | None
    psi_vs_first_day: float | None
    agreement_vs_control: AgreementOut | None
    daily: list[DailyOut]
    notes: list[str] = Field(default_factory=list, description="why a figure could not be computed")


class ServingReportOut(BaseModel):
    """Per-variant serving guardrails and prediction monitoring of one experiment."""

    experiment: str
    status: str
    task: Task | None
    window_rows_per_variant: int
    variants: list[VariantServingOut]
