"""Validating and loading transformers models from a local directory.

Nothing here touches the network: every ``from_pretrained`` call passes ``local_files_only=True``, so a
spec pointing at a hub id rather than a directory fails validation instead of downloading.

torch and transformers are imported inside the functions, so ``import models`` stays cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import ModelSpecError
from models.spec import ModelSpec

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Weight files ``from_pretrained`` can read, in its own order of preference.
WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Files a saved tokenizer is made of (one suffices). Checked explicitly because recent transformers
# versions build an empty default tokenizer for a known model type when none is saved.
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
# Architecture suffixes that are generative decoders / seq2seq heads: not embedding encoders.
_GENERATIVE_SUFFIXES: tuple[str, ...] = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready for inference, with everything needed to run it.

    Attributes:
        model: the transformers model, in ``eval()`` mode, on ``device`` in ``dtype``.
        tokenizer: the tokenizer saved next to it.
        device: the resolved torch device.
        dtype: the resolved torch dtype (may differ from ``spec.dtype``; see :func:`resolve_dtype`).
        attn_implementation: ``"sdpa"`` unless the architecture does not support it (then ``"eager"``).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    attn_implementation: str


def resolve_device(spec: ModelSpec) -> torch.device:
    """The torch device a spec runs on.

    ``"auto"`` means the current CUDA device when CUDA is available, else CPU. An explicit ``"cuda"``
    or ``"cuda:N"`` on a machine without that device is a :class:`ModelSpecError` on ``device``
    rather than a silent CPU fallback: an experiment comparing a GPU variant must not quietly measure
    a CPU one.
    """
    import torch

    if spec.device == "cpu":
        return torch.device("cpu")
    if spec.device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        raise ModelSpecError("device", f"{spec.device!r} requested but CUDA is not available here")
    device = torch.device(spec.device)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ModelSpecError(
            "device", f"{spec.device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return device


def _cpu_bfloat16_works() -> bool:
    """Whether a bfloat16 matmul + softmax runs on this CPU build of torch."""
    import torch

    try:
        a = torch.ones(4, 4, dtype=torch.bfloat16)
        torch.softmax(a @ a, dim=-1)
    except (RuntimeError, TypeError):  # pragma: no cover - depends on the torch build
        return False
    return True


def resolve_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """The torch dtype a spec runs in on ``device``.

    Rules (why in brackets):

    - ``float32`` is always honoured.
    - On CUDA, ``bfloat16`` is honoured when the GPU supports it (Ampere and later), else falls back to
      ``float16`` [pre-Ampere GPUs have fast fp16 tensor cores but emulate bf16]; ``float16`` is honoured.
    - On CPU, ``float16`` falls back to ``float32`` [many CPU kernels lack fp16 or run it slower than
      fp32, and fp16's 5-bit exponent overflows in unscaled activations]; ``bfloat16`` is honoured when a
      probe matmul works [bf16 keeps fp32's exponent range, and CPUs with AVX512-BF16/AMX run it fast;
      elsewhere it is correct but may be slower than fp32 -- the spec asked for it, so we honour it].

    The resolved dtype is exposed on the variant so the API can report what actually runs.
    """
    import torch

    requested = getattr(torch, _TORCH_DTYPES[spec.dtype])
    if requested is torch.float32:
        return torch.float32
    if device.type == "cuda":
        if requested is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return torch.float16
        return requested
    if requested is torch.float16:
        return torch.float32
    return torch.bfloat16 if _cpu_bfloat16_works() else torch.float32


def _read_config_json(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelSpecError("path", f"{str(path)!r} has no config.json (not a saved transformers model)")
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSpecError("path", f"config.json in {str(path)!r} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelSpecError("path", f"config.json in {str(path)!r} is not a JSON object")
    return data


def _check_architecture(spec: ModelSpec, config: Any) -> None:
    """Raise on ``task`` when the saved architecture cannot serve the spec's task."""
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING, MODEL_MAPPING

    architectures: list[str] = list(getattr(config, "architectures", None) or [])
    shown = architectures or f"model_type {config.model_type!r} without architectures"
    if spec.task == "text-classification":
        # A checkpoint without a trained classification head would get a randomly initialised one:
        # its "predictions" would be noise, so require the head to be in the checkpoint.
        if not any(arch.endswith("ForSequenceClassification") for arch in architectures):
            raise ModelSpecError(
                "task", f"text-classification needs a *ForSequenceClassification checkpoint, got {shown}"
            )
        if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
            raise ModelSpecError("task", f"{config.model_type!r} has no sequence-classification model")
        return
    # embedding: an encoder whose last hidden state we pool.
    if type(config) not in MODEL_MAPPING:
        raise ModelSpecError("task", f"{config.model_type!r} has no base model to embed with")
    generative = [arch for arch in architectures if arch.endswith(_GENERATIVE_SUFFIXES)]
    if generative or getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        raise ModelSpecError("task", f"embedding needs an encoder checkpoint, got {shown}")


def _check_weights(path: Path) -> None:
    """Raise on ``path`` when no weight file exists or a safetensors header cannot be read."""
    present = [name for name in WEIGHT_FILES if (path / name).is_file()]
    if not present:
        raise ModelSpecError("path", f"{str(path)!r} has no weights (expected one of {list(WEIGHT_FILES)})")
    if present[0] == "model.safetensors":
        # Reading the header is cheap (no tensor data) and catches truncated or non-safetensors files,
        # the common "copy went wrong" failure.
        from safetensors import safe_open

        try:
            with safe_open(str(path / "model.safetensors"), framework="pt") as handle:
                if not list(handle.keys()):
                    raise ModelSpecError("path", f"model.safetensors in {str(path)!r} holds no tensors")
        except ModelSpecError:
            raise
        except Exception as exc:  # safetensors raises its own SafetensorError and OSError variants
            raise ModelSpecError("path", f"model.safetensors in {str(path)!r} is unreadable: {exc}") from exc


def validate_model_dir(spec: ModelSpec, *, full: bool = False) -> None:
    """Check, without running the model, that ``spec.path`` can serve ``spec.task``.

    Cheap checks, in order, each raising :class:`ModelSpecError` naming the field at fault:

    1. ``path``: exists and is a directory; has a readable ``config.json`` that ``AutoConfig`` accepts;
       has a tokenizer that ``AutoTokenizer`` loads; has a weight file (a safetensors header is read).
    2. ``task``: the architecture fits the task (a ``*ForSequenceClassification`` checkpoint for
       text-classification; an encoder for embedding).
    3. ``max_length``: not above the model's ``max_position_embeddings``.
    4. ``device``: the device exists (see :func:`resolve_device`).

    Args:
        spec: the spec to check.
        full: also load the weights (:func:`load_model`) and report any failure on ``path``; this costs
            a full model load, so the API does it once at registration, not per request.
    """
    from transformers import AutoConfig, AutoTokenizer

    path = spec.path
    if not path.exists():
        raise ModelSpecError("path", f"{str(path)!r} does not exist")
    if not path.is_dir():
        raise ModelSpecError("path", f"{str(path)!r} is not a directory")
    _read_config_json(path)
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelSpecError("path", f"config.json in {str(path)!r} is not a valid model config: {exc}") from exc
    _check_architecture(spec, config)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelSpecError("path", f"{str(path)!r} has no tokenizer (expected one of {list(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # tokenizer loading raises OSError, ValueError, TypeError, tokenizers errors...
        raise ModelSpecError("path", f"no usable tokenizer in {str(path)!r}: {exc}") from exc
    vocab_size = getattr(config, "vocab_size", None)
    if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:
        # Token ids past the embedding table would fail (or read garbage on GPU) at the first request.
        raise ModelSpecError("path", f"tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab_size}")
    _check_weights(path)
    max_positions = getattr(config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and spec.max_length > max_positions:
        raise ModelSpecError(
            "max_length", f"{spec.max_length} exceeds the model's max_position_embeddings ({max_positions})"
        )
    resolve_device(spec)
    if full:
        loaded = load_model(spec, validate=False)
        del loaded


def _dtype_kwarg() -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"


def load_model(spec: ModelSpec, *, validate: bool = True) -> LoadedModel:
    """Load ``spec``'s model and tokenizer from disk, on its device, in its dtype, in eval mode.

    Uses PyTorch's scaled-dot-product attention (``attn_implementation="sdpa"``: fused kernels on CUDA,
    fewer temporaries on CPU); architectures without SDPA support fall back to ``"eager"``.

    Args:
        spec: the model variant spec.
        validate: run :func:`validate_model_dir` first (cheap), so failures name the field at fault.

    Raises:
        ModelSpecError: on ``path`` when the weights fail to load, or as raised by validation.
    """
    if validate:
        validate_model_dir(spec)
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    device = resolve_device(spec)
    dtype = resolve_dtype(spec, device)
    auto_cls = AutoModelForSequenceClassification if spec.task == "text-classification" else AutoModel
    kwargs: dict[str, Any] = {"local_files_only": True, _dtype_kwarg(): dtype}
    attn = "sdpa"
    try:
        try:
            model = auto_cls.from_pretrained(str(spec.path), attn_implementation=attn, **kwargs)
        except ValueError as exc:
            if "sdpa" not in str(exc).lower():
                raise
            attn = "eager"
            model = auto_cls.from_pretrained(str(spec.path), attn_implementation=attn, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(spec.path), local_files_only=True)
    except ModelSpecError:
        raise
    except Exception as exc:  # any failure to materialise weights is the directory's fault
        raise ModelSpecError("path", f"weights in {str(spec.path)!r} failed to load: {exc}") from exc
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=dtype, attn_implementation=attn)
