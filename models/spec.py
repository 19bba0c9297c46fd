"""``ModelSpec``: what the service needs to know to load and serve one model variant.

The spec is a plain frozen dataclass (no pydantic here: the API owns its request schemas and builds a
``ModelSpec`` from them), validated on construction so that an invalid spec never reaches the loader.
Checks that need the model directory (does the path exist, does the architecture fit the task) live in
:func:`models.loading.validate_model_dir`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from models.errors import ModelSpecError

Task = Literal["text-classification", "embedding"]
DType = Literal["float32", "bfloat16", "float16"]
Pooling = Literal["mean", "cls"]

TASKS: tuple[str, ...] = get_args(Task)
DTYPES: tuple[str, ...] = get_args(DType)
POOLINGS: tuple[str, ...] = get_args(Pooling)

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One servable model variant.

    Attributes:
        key: unique model key (``"ranker-v2-bf16"``); letters, digits and ``. _ : -``, at most 128 chars.
        task: ``"text-classification"`` (label + softmax score per input) or ``"embedding"``
            (L2-normalised vector per input).
        path: local directory of a transformers model saved with ``save_pretrained`` (model + tokenizer).
        dtype: requested weight/activation dtype; see :func:`models.loading.resolve_dtype` for fallbacks.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        max_batch: most texts in one forward pass (the dynamic batcher's cap, also the chunk size of
            ``predict_batch``).
        max_length: inputs are truncated to this many tokens (special tokens included).
        pooling: embeddings only: ``"mean"`` (attention-mask weighted mean of the last hidden state, as
            sentence-transformers does for all-MiniLM-L6-v2) or ``"cls"`` (first token).
    """

    key: str
    task: Task
    path: Path
    dtype: DType = "float32"
    device: str = "auto"
    max_batch: int = 64
    max_length: int = 128
    pooling: Pooling = field(default="mean")

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY_RE.match(self.key):
            raise ModelSpecError("key", f"must match {_KEY_RE.pattern}, got {self.key!r}")
        if self.task not in TASKS:
            raise ModelSpecError("task", f"must be one of {list(TASKS)}, got {self.task!r}")
        if not isinstance(self.path, (str, Path)) or str(self.path) == "":
            raise ModelSpecError("path", f"must be a non-empty directory path, got {self.path!r}")
        # Normalise to Path; the dataclass is frozen, hence object.__setattr__.
        object.__setattr__(self, "path", Path(self.path).expanduser())
        if self.dtype not in DTYPES:
            raise ModelSpecError("dtype", f"must be one of {list(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ModelSpecError("device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        for name in ("max_batch", "max_length"):
            value = getattr(self, name)
            # bool is an int subclass; True as a batch size is a bug, not a 1.
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelSpecError(name, f"must be a positive integer, got {value!r}")
        if self.pooling not in POOLINGS:
            raise ModelSpecError("pooling", f"must be one of {list(POOLINGS)}, got {self.pooling!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Build a spec from a JSON-like mapping (the ``POST /v1/models`` body); unknown keys are errors."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelSpecError(unknown[0], "unknown field")
        for required in ("key", "task", "path"):
            if required not in data:
                raise ModelSpecError(required, "field required")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (``path`` as a string)."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out
