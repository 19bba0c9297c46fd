from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.variants import ModelVariant, load_variant
from tests.factories.models import tiny_spec

# Inputs of very different lengths in one batch, so most rows are padded.
TEXTS = [
    "a",
    "the cat sat on the mat",
    "hello world",
    "good movie " * 20,
    "terrible film, 0/10, would not watch again!!",
    "",
    "xyz " * 40,  # truncated at max_length
]


def _unbatched(variant: ModelVariant, texts: list[str]) -> list[object]:
    return [variant.predict_batch([text])[0] for text in texts]


def test_classification_outputs(cls_a: ModelVariant, cls_b: ModelVariant) -> None:
    outputs = cls_a.predict_batch(TEXTS)
    assert len(outputs) == len(TEXTS)
    for output in outputs:
        assert set(output) == {"label", "score"}
        assert output["label"] in {"negative", "positive"}
        assert 0.5 <= output["score"] <= 1.0  # arg-max of two probabilities
    assert {o["label"] for o in cls_b.predict_batch(TEXTS)} <= {"label_0", "label_1", "label_2"}


def test_classification_batched_equals_unbatched(cls_a: ModelVariant) -> None:
    batched = cls_a.predict_batch(TEXTS)
    single = _unbatched(cls_a, TEXTS)
    for b, s in zip(batched, single, strict=True):
        assert b["label"] == s["label"]
        assert b["score"] == pytest.approx(s["score"], abs=1e-5)


def test_embedding_batched_equals_unbatched_and_unit_norm(emb: ModelVariant) -> None:
    batched = np.array(emb.predict_batch(TEXTS))
    single = np.array(_unbatched(emb, TEXTS))
    assert batched.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_cls_pooling_differs_from_mean(tiny_dirs: dict[str, Path], emb: ModelVariant) -> None:
    cls_pooled = load_variant(tiny_spec(tiny_dirs["emb"], "embedding", pooling="cls"))
    a = np.array(cls_pooled.predict_batch(TEXTS[:3]))
    b = np.array(emb.predict_batch(TEXTS[:3]))
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-3)


def test_chunks_beyond_max_batch(cls_a: ModelVariant) -> None:
    texts = [f"test {i} " + "cat " * (i % 7) for i in range(cls_a.spec.max_batch * 2 + 3)]
    outputs = cls_a.predict_batch(texts)
    assert len(outputs) == len(texts)
    assert outputs[-1]["score"] == pytest.approx(cls_a.predict_batch(texts[-1:])[0]["score"], abs=1e-5)


def test_empty_and_invalid_inputs(cls_a: ModelVariant) -> None:
    assert cls_a.predict_batch([]) == []
    with pytest.raises(TypeError):
        cls_a.predict_batch("not a list")
    with pytest.raises(TypeError):
        cls_a.predict_batch(["ok", 3])  # type: ignore[list-item]


def test_scores_are_finite_probabilities(cls_b: ModelVariant) -> None:
    for output in cls_b.predict_batch(TEXTS):
        assert math.isfinite(output["score"])
        assert 1 / 3 <= output["score"] <= 1.0
