"""A real inference server for the tests: MLServer (Open Inference Protocol v2) on loopback, from ``.venv-inference/``.

It serves the shipped all-MiniLM-L6-v2 (``models.shipped``; no download) through ``minilm_runtime.py`` on CPU as
three models: ``minilm``, ``minilm-slow`` (150 ms injected before each inference) and ``minilm-shadow`` (500 ms).
Without ``.venv-inference/`` the tests skip LOUDLY, naming the setup command; ``TITRATE_REQUIRE_INFERENCE_SERVER=1``
(CI) turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = ROOT / ".venv-inference"
MLSERVER = VENV / "bin" / "mlserver"
SETUP = "bash tests/inference_server/setup.sh"
REQUIRE = os.environ.get("TITRATE_REQUIRE_INFERENCE_SERVER") == "1"
#: model name -> injected latency (ms)
MODELS = {"minilm": 0, "minilm-slow": 150, "minilm-shadow": 500}
_skipped: list[str] = []


def pytest_report_header(config: pytest.Config) -> str | None:
    if MLSERVER.exists():
        return f"titrate: real inference-server tests on MLServer from {VENV}"
    return (f"titrate: !!! {VENV} is missing — the real inference-server (MLServer) tests WILL BE SKIPPED "
            f"(run `{SETUP}`) !!!")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped:
        terminalreporter.write_sep("!", f"the MLServer tests were SKIPPED: {VENV} is missing; run `{SETUP}`",
                                   red=True, bold=True)


@dataclass(frozen=True)
class MLServer:
    """The running server: ``url`` and the path of the model it serves."""

    url: str
    model_path: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLServer]:
    """MLServer serving :data:`MODELS` on loopback for the session."""
    if not MLSERVER.exists():
        message = f"MLServer is not installed: {VENV} is missing — run `{SETUP}` to create it"
        if REQUIRE:
            pytest.fail(f"TITRATE_REQUIRE_INFERENCE_SERVER=1 but {message}")
        _skipped.append(message)
        pytest.skip(message)
    from models.shipped import shipped_minilm_path

    path = shipped_minilm_path()
    root = tmp_path_factory.mktemp("mlserver")
    port = _free_port()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": _free_port(), "metrics_port": _free_port(),
                "parallel_workers": 0, "debug": False, "metrics_endpoint": None}
    (root / "settings.json").write_text(json.dumps(settings))
    for name, delay_ms in MODELS.items():
        (root / name).mkdir()
        (root / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "minilm_runtime.TitrateTransformersRuntime",
            "parameters": {"extra": {"path": str(path), "task": "embedding", "delay_ms": delay_ms}},
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}],
        }))
    log = root / "mlserver.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen([str(MLSERVER), "start", str(root)], cwd=root, stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        pending = set(MODELS)
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
        for name in MODELS:  # warm up: a model's first forward pass is far slower than the next ones
            body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["warm up"]}]}
            httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=30.0, trust_env=False).raise_for_status()
        yield MLServer(url, path, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
