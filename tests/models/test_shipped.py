from __future__ import annotations

import numpy as np

from models.shipped import MINILM_DIMENSION, shipped_minilm_path, shipped_minilm_spec
from models.variants import load_variant


def test_shipped_minilm_embeds_offline() -> None:
    path = shipped_minilm_path()
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()
    variant = load_variant(shipped_minilm_spec(device="cpu"))
    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome.",
        "The stock market fell sharply today.",
    ]
    vectors = np.array(variant.predict_batch(sentences))
    assert vectors.shape == (4, MINILM_DIMENSION)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.6  # paraphrases
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    assert similarity[0, 1] > similarity[0, 3] + 0.3
