"""Start MLServer from ``.venv-inference/`` on loopback serving the shipped MiniLM (the tests' fixture and
``bench/remote_serving.py`` both use it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = ROOT / ".venv-inference"
MLSERVER = VENV / "bin" / "mlserver"
SETUP = "bash tests/inference_server/setup.sh"


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def mlserver(root: Path, model_path: Path, models: Mapping[str, int], *, threads: int | None = None,
             timeout_s: float = 180.0) -> Iterator[str]:
    """Run MLServer in ``root`` serving ``models`` (name → injected latency in ms), each the embedding model at
    ``model_path`` through ``minilm_runtime.py``; yields its base URL once every model is ready and warmed up.

    Args:
        threads: torch threads in the server (``OMP_NUM_THREADS``); ``None`` leaves torch's default.
    """
    port = free_port()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                "parallel_workers": 0, "debug": False, "metrics_endpoint": None}
    (root / "settings.json").write_text(json.dumps(settings))
    for name, delay_ms in models.items():
        (root / name).mkdir(exist_ok=True)
        (root / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "minilm_runtime.TitrateTransformersRuntime",
            "parameters": {"extra": {"path": str(model_path), "task": "embedding", "delay_ms": delay_ms}},
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}],
        }))
    log = root / "mlserver.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with log.open("wb") as out:
        process = subprocess.Popen([str(MLSERVER), "start", str(root)], cwd=root, stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        pending = set(models)
        while pending:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MLServer did not become ready; its log:\n{log.read_text()[-4000:]}")
            for name in list(pending):
                try:
                    if httpx.get(f"{url}/v2/models/{name}/ready", timeout=1.0, trust_env=False).status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        for name in models:  # warm up: a model's first forward pass is far slower than the next ones
            body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["warm up"]}]}
            httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=30.0, trust_env=False).raise_for_status()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
