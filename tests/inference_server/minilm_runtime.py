"""An MLServer custom runtime serving a transformers model with titrate's own model code (``models.variants``).

Runs inside ``.venv-inference/`` (MLServer's process), with the repository root on ``PYTHONPATH``: the remote
variant and the local one then compute with the same code, torch and transformers, so their outputs agree to
float tolerance. ``parameters.extra``: ``path`` (a saved transformers model), ``task`` (``"embedding"`` or
``"text-classification"``), ``delay_ms`` (latency injected before every inference: the slow endpoint of the
tests), ``max_batch``.

Protocol (Open Inference Protocol v2): one BYTES input tensor ``text`` of shape ``[n]``; an embedding model
answers an FP32 ``embedding`` tensor ``[n, d]``, a classifier a BYTES ``label`` tensor ``[n]`` whose elements
are JSON ``{"label", "score"}`` (the convention of MLServer's HuggingFace runtime).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

# Imported here, in MLServer's main thread: transformers resolves these names lazily, and MLServer loads its models
# concurrently in worker threads, where that lazy import races ("cannot import name 'AutoConfig'").
from transformers import AutoConfig, AutoModel, AutoTokenizer  # noqa: F401

# MLServer loads its models concurrently; transformers' lazy imports are not safe to race from several threads.
_LOAD_LOCK = threading.Lock()


def _load(spec: Any) -> Any:
    from models.variants import load_variant

    with _LOAD_LOCK:
        return load_variant(spec)


class TitrateTransformersRuntime(MLModel):
    """Loads ``parameters.extra.path`` with ``models.variants.load_variant`` on CPU and serves it."""

    async def load(self) -> bool:
        from models.spec import ModelSpec

        extra: dict[str, Any] = dict(self.settings.parameters.extra or {}) if self.settings.parameters else {}
        self._task = extra.get("task", "embedding")
        self._delay_s = float(extra.get("delay_ms", 0)) / 1000.0
        spec = ModelSpec(key=self.name, task=self._task, path=extra["path"], dtype="float32", device="cpu",
                         max_batch=int(extra.get("max_batch", 64)), max_length=int(extra.get("max_length", 128)))
        self._variant = await asyncio.to_thread(_load, spec)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        request_input = next((i for i in payload.inputs if i.name == "text"), None)
        if request_input is None:
            raise ValueError(f"no input tensor named 'text' (got {[i.name for i in payload.inputs]})")
        texts = [t if isinstance(t, str) else t.decode("utf-8") for t in StringCodec.decode_input(request_input)]
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        # torch runs in a worker thread: MLServer's event loop keeps answering readiness probes meanwhile.
        outputs = await asyncio.to_thread(self._variant.predict_batch, texts)
        if self._task == "embedding":
            dim = len(outputs[0]) if outputs else 0
            flat = [value for row in outputs for value in row]
            out = ResponseOutput(name="embedding", shape=[len(outputs), dim], datatype="FP32", data=flat)
        else:
            out = StringCodec.encode_output("label", [json.dumps(o) for o in outputs])
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[out])
