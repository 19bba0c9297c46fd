"""Test harness of remote model variants through the service: register, predict, settle, count."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.db.engine import Database
from bandits.bucketing import assign
from tests.conftest import Keys


@dataclass
class Remote:
    client: TestClient
    keys: Keys
    db: Database
    url: str
    server: Any = None  # the fake inference server, when the test steers one

    @property
    def admin(self) -> dict[str, str]:
        return self.keys.headers("admin")

    def register(self, key: str, model: str, task: str = "embedding", **endpoint: Any) -> Any:
        body = {"key": key, "task": task, "endpoint": {"url": self.url, "protocol": "v2", "model": model,
                                                       "timeout_ms": 2000, **endpoint}}
        return self.client.post("/v1/models", json=body, headers=self.admin)

    def predict(self, unit: str, inputs: list[str], experiment: str = "ranker-v2") -> Any:
        return self.client.post(f"/v1/experiments/{experiment}/predict", json={"unit_id": unit, "inputs": inputs},
                                headers=self.keys.headers("sdk"))

    def settle(self) -> None:
        app: Any = self.client.app
        self.client.portal.call(app.state.serving.wait_for_shadows)  # type: ignore[union-attr]
        app.state.serving.recorder.flush()
        app.state.exposure_writer.flush()

    def count(self, table: type, *where: Any) -> int:
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)

    def variant_of(self, unit: str, experiment: str = "ranker-v2") -> str:
        app: Any = self.client.app
        result = assign(app.state.snapshots.current.experiments[experiment], unit, {})
        assert result is not None
        return result.variant


class TcpProxy:
    """Forwards loopback connections to ``127.0.0.1:target_port`` until :meth:`stop`, which closes the listening
    socket and every forwarded connection: the endpoint behind it is then dead (connections refused)."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                if self._stopped:
                    client.close()
                    upstream.close()
                    return
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            self._stopped = True
            self._listener.close()
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
