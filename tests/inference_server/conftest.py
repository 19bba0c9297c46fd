"""A real inference server for the tests: MLServer (Open Inference Protocol v2) on loopback, from ``.venv-inference/``.

It serves the shipped all-MiniLM-L6-v2 (``models.shipped``; no download) through ``minilm_runtime.py`` on CPU as
three models: ``minilm``, ``minilm-slow`` (400 ms injected before each inference) and ``minilm-shadow`` (500 ms).
Without ``.venv-inference/`` the tests skip LOUDLY, naming the setup command; ``TITRATE_REQUIRE_INFERENCE_SERVER=1``
(CI) turns the skip into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.inference_server.launch import MLSERVER, SETUP, VENV
from tests.inference_server.launch import mlserver as run_mlserver

REQUIRE = os.environ.get("TITRATE_REQUIRE_INFERENCE_SERVER") == "1"
#: model name -> injected latency (ms)
MODELS = {"minilm": 0, "minilm-slow": 400, "minilm-shadow": 500}
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
    with run_mlserver(tmp_path_factory.mktemp("mlserver"), path, MODELS) as url:
        yield MLServer(url, path)
