"""Run the real service as a subprocess (uvicorn) for tests that need real concurrency or real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A uvicorn process serving ``api.main:app`` against a database URL."""

    def __init__(self, database_url: str, port: int | None = None, workers: int = 1,
                 extra_env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.port = port or free_port()
        self.workers = workers
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="titrate-live-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "TITRATE_DATABASE_URL": self.database_url, "TITRATE_LOG_JSON": "false",
               "TITRATE_LOG_LEVEL": "WARNING", "TITRATE_EXPOSURE_FLUSH_SECONDS": "0.1", **self.extra_env}
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = self._spawn(env, log)
        self._wait_healthy(timeout)

    def _spawn(self, env: dict[str, str], log: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(self.workers), "--no-access-log", "--timeout-graceful-shutdown", "30"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,  # type: ignore[arg-type]
        )

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def live_server(database_url: str, **kwargs: object) -> Iterator[LiveServer]:
    server = LiveServer(database_url, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
