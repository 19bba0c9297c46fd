"""Model variants: one class per task behind an abstract base, and a factory choosing by spec.

The shape follows text-embeddings-inference: an abstract model with a synchronous batch call, one
implementation per task, a factory picking the class from the spec (task) and resolving device/dtype.
``predict_batch`` is synchronous and blocking on purpose: the :class:`models.batching.DynamicBatcher`
runs it in a dedicated worker thread, never inside the event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from models.errors import ModelSpecError
from models.spec import ModelSpec

if TYPE_CHECKING:
    import torch

    from models.loading import LoadedModel


class ClassificationOutput(TypedDict):
    """One text-classification prediction: the arg-max label and its softmax probability in [0, 1]."""

    label: str
    score: float


Embedding = list[float]
Output = ClassificationOutput | Embedding


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, raising ``TypeError`` unless it is a sequence of ``str``."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
    return out


class ModelVariant(ABC):
    """A loaded, servable model variant.

    Subclasses implement :meth:`_predict` for one chunk of at most ``spec.max_batch`` texts;
    :meth:`predict_batch` validates, chunks and runs it under ``torch.inference_mode()``.
    """

    task: ClassVar[str] = ""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @property
    def key(self) -> str:
        """The model key (``spec.key``)."""
        return self.spec.key

    @property
    def device(self) -> str:
        """The device actually used, as a string (``"cpu"``, ``"cuda:0"``)."""
        return "cpu"

    @property
    def dtype(self) -> str:
        """The dtype actually used (may differ from ``spec.dtype``; see ``resolve_dtype``)."""
        return "float32"

    def describe(self) -> dict[str, Any]:
        """What runs: key, task, resolved device and dtype, batch and length caps."""
        return {
            "key": self.key,
            "task": self.spec.task,
            "device": self.device,
            "dtype": self.dtype,
            "max_batch": self.spec.max_batch,
            "max_length": self.spec.max_length,
        }

    def predict_batch(self, texts: Sequence[str]) -> list[Any]:
        """Predict one output per text, in input order. Blocking; call from a worker thread.

        Inputs longer than ``spec.max_batch`` texts are run in consecutive chunks of at most
        ``max_batch``, so one huge request cannot exceed the memory budget the cap stands for.
        """
        items = check_texts(texts)
        if not items:
            return []
        import torch

        step = self.spec.max_batch
        outputs: list[Any] = []
        with torch.inference_mode():
            for start in range(0, len(items), step):
                outputs.extend(self._predict(items[start : start + step]))
        return outputs

    @abstractmethod
    def _predict(self, texts: list[str]) -> list[Any]:
        """Outputs for 1..max_batch texts; runs inside ``torch.inference_mode()``."""

    def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release resources (GPU memory). The variant must not be used afterwards."""


class TransformersVariant(ModelVariant):
    """Shared plumbing for variants backed by a transformers model + tokenizer."""

    def __init__(self, spec: ModelSpec, loaded: LoadedModel) -> None:
        super().__init__(spec)
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self._device = loaded.device
        self._dtype = loaded.dtype
        self.attn_implementation = loaded.attn_implementation

    @property
    def device(self) -> str:
        """The torch device the weights were loaded on, as a string (``"cpu"``, ``"cuda:0"``)."""
        return str(self._device)

    @property
    def dtype(self) -> str:
        """The loaded weights' torch dtype without the ``torch.`` prefix (``"bfloat16"``)."""
        return str(self._dtype).removeprefix("torch.")

    def describe(self) -> dict[str, Any]:
        """The base description plus the attention implementation the loader chose (``"sdpa"``, ``"eager"``)."""
        return {**super().describe(), "attn_implementation": self.attn_implementation}

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise with padding to the longest text of this batch (not to ``max_length``: a batch of
        short texts should not pay for 128 positions), truncating to ``spec.max_length`` tokens."""
        encoded = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.spec.max_length,
            return_tensors="pt",
        )
        return {name: tensor.to(self._device) for name, tensor in encoded.items()}

    def close(self) -> None:
        """Drops the model reference and, on CUDA, returns cached blocks to the driver."""
        import torch

        # Drop the references so the weights can be collected, then hand cached blocks back to CUDA.
        self.model = None  # type: ignore[assignment]
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


class TextClassificationVariant(TransformersVariant):
    """Sequence classification: softmax over the logits, arg-max label from ``config.id2label``."""

    task: ClassVar[str] = "text-classification"

    def __init__(self, spec: ModelSpec, loaded: LoadedModel) -> None:
        super().__init__(spec, loaded)
        id2label = getattr(self.model.config, "id2label", None) or {}
        num_labels = int(self.model.config.num_labels or len(id2label))
        # id2label keys may be ints or (from older JSON) strings; fall back to LABEL_i like transformers.
        self.labels: list[str] = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(num_labels)]

    def _predict(self, texts: list[str]) -> list[Any]:
        import torch

        logits = self.model(**self._encode(texts)).logits
        # Softmax in float32: bf16 has ~3 significant digits, too coarse for scores compared across variants.
        probs = torch.softmax(logits.float(), dim=-1)
        scores, indices = probs.max(dim=-1)
        return [
            ClassificationOutput(label=self.labels[index], score=score)
            for index, score in zip(indices.tolist(), scores.tolist(), strict=True)
        ]


class EmbeddingVariant(TransformersVariant):
    """Sentence embeddings: mean (attention-masked) or CLS pooling of the last hidden state, L2-normalised.

    Mean pooling is ``sum_t(mask_t * h_t) / max(sum_t mask_t, 1)``, as sentence-transformers'
    ``Pooling(mode="mean")`` does for all-MiniLM-L6-v2; unit vectors make the dot product the cosine.
    """

    task: ClassVar[str] = "embedding"

    @property
    def dimension(self) -> int:
        """Embedding size (``config.hidden_size``)."""
        return int(self.model.config.hidden_size)

    def describe(self) -> dict[str, Any]:
        """The base description plus the pooling mode and the embedding dimension."""
        return {**super().describe(), "pooling": self.spec.pooling, "dimension": self.dimension}

    def _predict(self, texts: list[str]) -> list[Any]:
        import torch

        encoded = self._encode(texts)
        # Pool in float32: summing up to max_length bf16 activations loses precision.
        hidden = self.model(**encoded).last_hidden_state.float()  # (batch, tokens, hidden)
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, tokens, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        normalised = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
        return normalised.cpu().tolist()


VARIANT_CLASSES: dict[str, type[TransformersVariant]] = {
    TextClassificationVariant.task: TextClassificationVariant,
    EmbeddingVariant.task: EmbeddingVariant,
}


def load_variant(spec: ModelSpec, *, validate: bool = True) -> ModelVariant:
    """Load ``spec`` from disk and wrap it in the variant class for its task. Blocking.

    Args:
        spec: the model variant spec.
        validate: run :func:`models.loading.validate_model_dir` first so errors name the field at fault.

    Raises:
        ModelSpecError: the spec or its directory is unusable.
    """
    from models.loading import load_model

    cls = VARIANT_CLASSES.get(spec.task)
    if cls is None:  # pragma: no cover - ModelSpec already rejects unknown tasks
        raise ModelSpecError("task", f"no variant class for task {spec.task!r}")
    return cls(spec, load_model(spec, validate=validate))
