"""A small in-process inference server speaking the Open Inference Protocol v2 and OpenAI embeddings, on loopback.

The tests of remote variants through the service use it when they need to steer the server (answer slowly, fail,
go away, count requests and batch sizes); the real MLServer tests (``test_mlserver.py``) check real numerics.
Outputs are a pure function of the text: an embedding is a unit vector from the text's SHA-256, a classification
``{"label": "long" | "short", "score"}`` from its length.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

DIM = 8


def fake_embedding(text: str) -> list[float]:
    """The fake server's embedding of ``text``: ``DIM`` values from SHA-256, L2-normalised."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:DIM]]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def fake_label(text: str) -> dict[str, Any]:
    """The fake server's classification of ``text``."""
    return {"label": "long" if len(text) > 12 else "short", "score": round(0.5 + (len(text) % 10) / 20, 6)}


@dataclass
class FakeModel:
    """One model on the fake server: its task, injected delay and failure, and what it saw."""

    task: str = "embedding"
    delay_s: float = 0.0
    fail_status: int | None = None  # answer this status to inference (and readiness) requests
    ready: bool = True
    input_name: str = "text"
    outputs: tuple[str, ...] = ("embedding",)
    batch_sizes: list[int] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0


class FakeInferenceServer:
    """The server (uvicorn in a thread) and its models; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, models: dict[str, FakeModel] | None = None, token: str | None = None) -> None:
        self.models: dict[str, FakeModel] = models or {}
        self.token = token
        self.requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def _model(self, name: str) -> FakeModel:
        model = self.models.get(name)
        if model is None:
            raise HTTPException(404, f"Model {name} not found")
        return model

    def _auth(self, request: Request) -> None:
        self.requests += 1
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            raise HTTPException(401, "invalid token")

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v2/models/{name}/ready")
        async def ready(name: str, request: Request) -> JSONResponse:
            self._auth(request)
            model = self._model(name)
            status = 200 if model.ready and model.fail_status is None else 503
            return JSONResponse({"name": name, "ready": status == 200}, status_code=status)

        @app.get("/v2/models/{name}")
        async def metadata(name: str, request: Request) -> dict[str, Any]:
            self._auth(request)
            model = self._model(name)
            return {"name": name, "platform": "fake", "inputs": [{"name": model.input_name, "datatype": "BYTES",
                                                                   "shape": [-1]}],
                    "outputs": [{"name": o, "datatype": "FP32" if model.task == "embedding" else "BYTES",
                                 "shape": [-1, DIM] if model.task == "embedding" else [-1]} for o in model.outputs]}

        @app.post("/v2/models/{name}/infer")
        async def infer(name: str, request: Request) -> Any:
            self._auth(request)
            model = self._model(name)
            body = await request.json()
            tensor = next((i for i in body["inputs"] if i["name"] == model.input_name), None)
            if tensor is None:
                raise HTTPException(400, f"no input named {model.input_name}")
            texts: list[str] = tensor["data"]
            outputs = await self._run(model, texts)
            if isinstance(outputs, JSONResponse):
                return outputs
            if model.task == "embedding":
                tensors = [{"name": o, "datatype": "FP32", "shape": [len(texts), DIM],
                            "data": [v for row in outputs for v in row]} for o in model.outputs]
            else:
                tensors = [{"name": o, "datatype": "BYTES", "shape": [len(texts)],
                            "data": [json.dumps(x) for x in outputs]} for o in model.outputs]
            return {"model_name": name, "outputs": tensors}

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Any:
            self._auth(request)
            body = await request.json()
            model = self._model(body["model"])
            outputs = await self._run(model, body["input"])
            if isinstance(outputs, JSONResponse):
                return outputs
            # Reversed on purpose: clients must order by index.
            data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(outputs)][::-1]
            return {"object": "list", "model": body["model"], "data": data}

        return app

    async def _run(self, model: FakeModel, texts: list[str]) -> list[Any] | JSONResponse:
        model.batch_sizes.append(len(texts))
        model.concurrent += 1
        model.max_concurrent = max(model.max_concurrent, model.concurrent)
        try:
            if model.delay_s:
                await asyncio.sleep(model.delay_s)
            if model.fail_status is not None:
                return JSONResponse({"error": f"model failed with {model.fail_status}"}, status_code=model.fail_status)
            return [fake_embedding(t) if model.task == "embedding" else fake_label(t) for t in texts]
        finally:
            model.concurrent -= 1

    def start(self) -> FakeInferenceServer:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake inference server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (a later connection is refused)."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
