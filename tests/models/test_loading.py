from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from models import ModelSpec, ModelSpecError, load_model, resolve_device, resolve_dtype, validate_model_dir
from models.variants import EmbeddingVariant, TextClassificationVariant, load_variant
from tests.factories.models import tiny_spec


def test_loads_both_tasks_from_disk(tiny_dirs: dict[str, Path]) -> None:
    classifier = load_variant(tiny_spec(tiny_dirs["cls_a"], "text-classification"))
    embedder = load_variant(tiny_spec(tiny_dirs["emb"], "embedding"))
    assert isinstance(classifier, TextClassificationVariant)
    assert isinstance(embedder, EmbeddingVariant)
    assert classifier.labels == ["negative", "positive"]
    assert embedder.dimension == 32
    assert classifier.describe()["attn_implementation"] == "sdpa"
    assert not classifier.model.training
    assert (classifier.device, classifier.dtype) == ("cpu", "float32")


def test_missing_path_names_path(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(tiny_spec(tmp_path / "nope", "embedding"))
    assert info.value.field == "path"
    assert "does not exist" in info.value.message


def test_file_instead_of_dir_names_path(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(tiny_spec(tmp_path / "f", "embedding"))
    assert info.value.field == "path"


def test_dir_without_config_names_path(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError) as info:
        load_variant(tiny_spec(tmp_path, "text-classification"))
    assert info.value.field == "path"
    assert "config.json" in info.value.message


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def test_garbled_config_names_path(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    broken = _copy(tiny_dirs["emb"], tmp_path / "m")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(tiny_spec(broken, "embedding"))
    assert info.value.field == "path"


def test_missing_weights_names_path(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    broken = _copy(tiny_dirs["emb"], tmp_path / "m")
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(tiny_spec(broken, "embedding"))
    assert info.value.field == "path"
    assert "no weights" in info.value.message


def test_truncated_weights_name_path(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    broken = _copy(tiny_dirs["emb"], tmp_path / "m")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelSpecError) as info:
        load_variant(tiny_spec(broken, "embedding"))
    assert info.value.field == "path"


def test_weights_of_wrong_shape_fail_full_validation(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    # The cheap check passes (a valid safetensors file exists); loading it into the config's shapes fails.
    broken = _copy(tiny_dirs["emb"], tmp_path / "m")
    config = json.loads((broken / "config.json").read_text())
    config["hidden_size"] = 64
    config["intermediate_size"] = 128
    (broken / "config.json").write_text(json.dumps(config))
    spec = tiny_spec(broken, "embedding")
    validate_model_dir(spec)
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(spec, full=True)
    assert info.value.field == "path"
    assert "failed to load" in info.value.message


def test_missing_tokenizer_names_path(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    broken = _copy(tiny_dirs["emb"], tmp_path / "m")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (broken / name).unlink(missing_ok=True)
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(tiny_spec(broken, "embedding"))
    assert info.value.field == "path"


def test_headless_checkpoint_cannot_classify(tiny_dirs: dict[str, Path]) -> None:
    # A BertModel checkpoint has no trained classification head: it does not fit the task.
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(tiny_spec(tiny_dirs["emb"], "text-classification"))
    assert info.value.field == "task"


def test_decoder_checkpoint_cannot_embed(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    broken = _copy(tiny_dirs["emb"], tmp_path / "m")
    config = json.loads((broken / "config.json").read_text())
    config["architectures"] = ["BertLMHeadModel"]
    config["is_decoder"] = True
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(tiny_spec(broken, "embedding"))
    assert info.value.field == "task"


def test_classifier_checkpoint_may_embed(tiny_dirs: dict[str, Path]) -> None:
    validate_model_dir(tiny_spec(tiny_dirs["cls_a"], "embedding"))


def test_max_length_beyond_positions_names_max_length(tiny_dirs: dict[str, Path]) -> None:
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(tiny_spec(tiny_dirs["emb"], "embedding", max_length=512))
    assert info.value.field == "max_length"


def test_device_and_dtype_resolution_on_cpu(tiny_dirs: dict[str, Path]) -> None:
    def spec(**kw: str) -> ModelSpec:
        return ModelSpec(key="m", task="embedding", path=tiny_dirs["emb"], **kw)  # type: ignore[arg-type]

    cpu = torch.device("cpu")
    assert resolve_device(spec(device="cpu")) == cpu
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(spec(device="auto")).type == expected_auto
    assert resolve_dtype(spec(dtype="float32"), cpu) is torch.float32
    assert resolve_dtype(spec(dtype="float16"), cpu) is torch.float32  # documented CPU fallback
    assert resolve_dtype(spec(dtype="bfloat16"), cpu) is torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ModelSpecError) as info:
            resolve_device(spec(device="cuda:0"))
        assert info.value.field == "device"


def test_bfloat16_on_cpu_loads_and_runs(tiny_dirs: dict[str, Path]) -> None:
    spec = ModelSpec(key="m", task="text-classification", path=tiny_dirs["cls_a"], dtype="bfloat16", device="cpu")
    loaded = load_model(spec)
    assert loaded.dtype is torch.bfloat16
    assert next(loaded.model.parameters()).dtype is torch.bfloat16
    variant = load_variant(spec)
    assert variant.dtype == "bfloat16"
    [output] = variant.predict_batch(["the cat sat on the mat"])
    assert 0.0 <= output["score"] <= 1.0


def test_tokenizer_larger_than_embeddings_names_path(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    broken = _copy(tiny_dirs["emb"], tmp_path / "m")
    config = json.loads((broken / "config.json").read_text())
    config["vocab_size"] = 10
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError) as info:
        validate_model_dir(tiny_spec(broken, "embedding"))
    assert info.value.field == "path"
    assert "tokenizer has" in info.value.message
