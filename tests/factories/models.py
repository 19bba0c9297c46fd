"""Test helpers (not shipped: they lived in ``models/testing.py``): tiny on-disk models and misbehaving variants.

``make_tiny_bert`` writes a randomly initialised 2-layer BERT (hidden size 32) with its tokenizer to a
directory, exactly as ``save_pretrained`` would for a real model, so tests exercise the real loading
path in well under a second. ``SlowVariant`` and ``FailingVariant`` wrap variants to inject latency or
failures (latency-guardrail and error-path tests).
"""

from __future__ import annotations

import inspect
import string
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from models.spec import ModelSpec, Task
from models.variants import ModelVariant, check_texts

_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = [
    "the", "a", "is", "and", "of", "to", "in", "it", "good", "bad", "great", "terrible", "movie", "film",
    "cat", "cats", "dog", "dogs", "sat", "on", "mat", "hello", "world", "model", "variant", "test",
]  # fmt: skip


def tiny_vocab() -> list[str]:
    """A small WordPiece vocabulary: special tokens, some whole words, and every lowercase letter and
    digit both as a word start and as a ``##`` continuation, so any ASCII text tokenises without
    ``[UNK]`` (unknown words split into characters) and longer texts give longer token sequences."""
    chars = list(string.ascii_lowercase + string.digits)
    return _SPECIAL_TOKENS + list(string.punctuation) + _WORDS + chars + [f"##{c}" for c in chars]


def _write_tokenizer(directory: Path) -> Any:
    from transformers import BertTokenizer

    vocab = tiny_vocab()
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if "vocab_file" in inspect.signature(BertTokenizer.__init__).parameters:
        # transformers < 5: BertTokenizer is the slow Python one; build the Rust-backed fast one from the file.
        from transformers import BertTokenizerFast  # type: ignore[attr-defined,unused-ignore]

        return BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    # transformers >= 5: BertTokenizer is tokenizers-backed (BertTokenizerFast is an alias) and takes the vocab.
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)


def make_tiny_bert(
    directory: str | Path,
    task: Task,
    num_labels: int = 2,
    seed: int = 0,
    *,
    labels: Sequence[str] | None = None,
    max_position_embeddings: int = 128,
) -> Path:
    """Save a tiny random BERT for ``task`` (model + tokenizer) into ``directory`` and return it.

    Config: hidden size 32, 2 layers, 2 heads, intermediate 64, vocabulary :func:`tiny_vocab`.
    ``"text-classification"`` saves a ``BertForSequenceClassification`` whose ``id2label`` is ``labels``
    (default ``negative``/``positive`` for 2 labels, else ``label_0``...); ``"embedding"`` saves a
    ``BertModel`` (with its pooler, so ``AutoModel`` finds every weight). The weights depend only on
    ``seed`` (torch's global RNG is left untouched).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_tokenizer(path)
    if labels is None:
        labels = ["negative", "positive"] if num_labels == 2 else [f"label_{i}" for i in range(num_labels)]
    if len(labels) != num_labels:
        raise ValueError(f"{len(labels)} labels for num_labels={num_labels}")
    config = BertConfig(  # type: ignore[call-arg,unused-ignore]
        vocab_size=len(tiny_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
        num_labels=num_labels,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=0,
        # 10x BERT's 0.02: random logits then spread over the labels instead of all sitting at ~1/num_labels,
        # so tests can tell one input's (or one model's) output from another's.
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if task == "text-classification":
            model: Any = BertForSequenceClassification(config)
        elif task == "embedding":
            model = BertModel(config)
        else:
            raise ValueError(f"unknown task {task!r}")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_spec(
    directory: str | Path,
    task: Task,
    *,
    key: str | None = None,
    max_batch: int = 64,
    max_length: int = 64,
    pooling: Literal["mean", "cls"] = "mean",
) -> ModelSpec:
    """A CPU float32 spec for a directory written by :func:`make_tiny_bert`."""
    return ModelSpec(
        key=key or f"tiny-{task}",
        task=task,
        path=Path(directory),
        dtype="float32",
        device="cpu",
        max_batch=max_batch,
        max_length=max_length,
        pooling=pooling,
    )


class _WrappingVariant(ModelVariant):
    """Delegates everything to ``inner``; subclasses override ``predict_batch``."""

    def __init__(self, inner: ModelVariant) -> None:
        super().__init__(inner.spec)
        self.inner = inner

    @property
    def device(self) -> str:
        return self.inner.device

    @property
    def dtype(self) -> str:
        return self.inner.dtype

    def predict_batch(self, texts: Sequence[str]) -> list[Any]:
        return self.inner.predict_batch(texts)

    def _predict(self, texts: list[str]) -> list[Any]:  # pragma: no cover - predict_batch is overridden
        return self.inner.predict_batch(texts)

    def close(self) -> None:
        self.inner.close()


class SlowVariant(_WrappingVariant):
    """``inner`` plus a sleep of ``delay_s`` seconds per forward pass (plus ``per_text_s`` per text),
    in the worker thread, to test latency guardrails. Counts calls in ``calls``."""

    def __init__(self, inner: ModelVariant, delay_s: float, *, per_text_s: float = 0.0) -> None:
        super().__init__(inner)
        self.delay_s = delay_s
        self.per_text_s = per_text_s
        self.calls = 0
        self._lock = threading.Lock()

    def predict_batch(self, texts: Sequence[str]) -> list[Any]:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay_s + self.per_text_s * len(texts))
        return self.inner.predict_batch(texts)


class FailingVariant(ModelVariant):
    """A variant whose forward pass raises ``RuntimeError(message)``.

    Args:
        spec: the spec it pretends to serve.
        inner: when given, batches for which ``fail_on(texts)`` is false are delegated to it.
        fail_on: predicate over a batch's texts deciding whether it fails (default: always).
        message: the error message.

    Attributes:
        calls: forward passes attempted; ``failures``: how many raised.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        inner: ModelVariant | None = None,
        fail_on: Callable[[list[str]], bool] | None = None,
        message: str = "injected failure",
    ) -> None:
        super().__init__(spec)
        self.inner = inner
        self.fail_on = fail_on
        self.message = message
        self.calls = 0
        self.failures = 0
        self._lock = threading.Lock()

    def predict_batch(self, texts: Sequence[str]) -> list[Any]:
        items = check_texts(texts)
        failing = self.fail_on is None or self.fail_on(items)
        with self._lock:
            self.calls += 1
            self.failures += int(failing)
        if failing:
            raise RuntimeError(self.message)
        if self.inner is None:
            raise RuntimeError("FailingVariant without inner has nothing to delegate to")
        return self.inner.predict_batch(items)

    def _predict(self, texts: list[str]) -> list[Any]:  # pragma: no cover - predict_batch is overridden
        return self.predict_batch(texts)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
