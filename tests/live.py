"""Run the real service as a subprocess (uvicorn) for tests that need real concurrency or real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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


def start_ranker_v2(server: LiveServer, admin_headers: dict[str, str]) -> None:
    """Register the DESIGN.md metrics and start the example experiment ``ranker-v2`` on a live server."""
    from tests.factories import METRICS, experiment_body

    with httpx.Client(base_url=server.url, headers=admin_headers, timeout=30) as http:
        for metric in METRICS.values():
            assert http.post("/v1/metrics", json=metric).status_code == 201
        assert http.post("/v1/experiments", json=experiment_body()).status_code == 201
        assert http.post("/v1/experiments/ranker-v2/start").status_code == 200


class AssignmentLoad:
    """``workers`` threads assigning a new unit per request to a live server until :meth:`stop` (or the server
    goes away); ``acknowledged`` maps each unit answered 200 with ``experiment`` to when (``time.monotonic``)."""

    def __init__(self, server: LiveServer, headers: dict[str, str], experiment: str = "ranker-v2",
                 workers: int = 4, prefix: str = "") -> None:
        self.acknowledged: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(server.url, headers, experiment, f"{prefix}w{w}"))
                         for w in range(workers)]

    def _run(self, url: str, headers: dict[str, str], experiment: str, worker: str) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            i = 0
            while not self._stop.is_set():
                unit = f"{worker}-u{i}"
                try:
                    response = http.post("/v1/assign", json={"unit_id": unit})
                except httpx.HTTPError:
                    return
                if response.status_code == 200 and experiment in response.json()["assignments"]:
                    self.acknowledged[unit] = time.monotonic()
                i += 1

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
