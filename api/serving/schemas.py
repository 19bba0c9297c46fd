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


HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")]
TensorName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class EndpointIn(RequestModel):
    """Where an inference server serves the variant (DESIGN.md, Serving; field names fixed)."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+(/\S*)?$", max_length=2048)] = Field(
        description="the server's base URL, e.g. http://host:port")
    protocol: Literal["openai", "v2"] = Field(
        description="openai: POST {url}/v1/embeddings; v2: Open Inference Protocol POST {url}/v2/models/{model}/infer")
    model: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^/]+$")] = Field(
        description="the model's name on that server")
    timeout_ms: int = Field(2000, ge=1, le=600_000, description="deadline of one inference request, retries included")
    headers: dict[HeaderName, Annotated[str, StringConstraints(max_length=8192)]] = Field(
        default_factory=dict, max_length=32,
        description="sent with every request; ${ENV} references are read from the environment at use, never stored")
    input_name: TensorName = Field("text", description="v2: the BYTES input tensor")
    output_name: TensorName | None = Field(
        None, description="v2: the output tensor read (default: the model's only output, from its metadata)")


class ModelCreate(RequestModel):
    """A model variant spec: a local directory of a transformers model and how to run it, or (``endpoint``, without
    ``path``/``dtype``/``device``) a model on an inference server."""

    key: Key
    task: Task
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    endpoint: EndpointIn | None = None
    dtype: DType = "float32"
    device: Annotated[str, StringConstraints(pattern=r"^(auto|cpu|cuda|cuda:\d{1,2})$")] = "auto"
    max_batch: int = Field(64, ge=1, le=4096)
    max_length: int = Field(128, ge=1, le=32_768)
    pooling: Pooling = Field("mean", description="embeddings only: mean (attention-masked) or CLS pooling")


class ModelOut(BaseModel):
    """A registered model spec; ``loaded``/``runtime`` describe it in the worker that answered. A remote variant has
    ``endpoint`` (headers as registered, ``${ENV}`` unexpanded) and no ``path``/``dtype``/``device``."""

    key: str
    task: Task
    path: str | None
    dtype: DType | None
    device: str | None
    max_batch: int
    max_length: int | None
    pooling: Pooling | None
    endpoint: dict[str, Any] | None = None
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
