"""``titrate demo``, the service side: start the service on the configured database (SQLite by default), hand its
address and a fresh admin key to the scenario runner the CLI passes in (``simulator.demo.run_demo_scenarios``:
seeded scenarios driven through the real service and the Python SDK), print their JSON summary, and — unless
``--headless`` — keep the service and the Streamlit console up to explore them.

This module imports nothing of the client-side tools (``simulator``, ``titrate_sdk``): ``api.cli`` wires them in.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console

from api.app import create_app
from api.auth.keys import create_api_key
from api.console import console_command
from api.db.engine import Database
from api.ports import require_free, require_service_and_console_ports
from api.settings import Settings

#: Runs the demo's scenarios against the service at a base URL with an admin API key; their JSON summary.
ScenarioRunner = Callable[[str, str], dict[str, Any]]


class _Server(threading.Thread):
    def __init__(self, settings: Settings, host: str, port: int) -> None:
        super().__init__(daemon=True)
        config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning", log_config=None)
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(timeout=30)


def _start_console(base_url: str, host: str, port: int) -> subprocess.Popen[bytes]:
    """The Streamlit console (as ``titrate console``), pointed at the demo's service and bound to the demo's
    ``host``; nobody is signed in: each person signs in with their own key (the demo prints an admin key)."""
    env = {**os.environ, "TITRATE_API_URL": base_url}
    env.pop("TITRATE_API_KEY", None)
    return subprocess.Popen(console_command(host, port), cwd=Path(__file__).resolve().parent.parent, env=env)


def _wait_until_listening(server: _Server, host: str, port: int, timeout_s: float = 120.0) -> None:
    """Return once the demo's own service listens. If its thread ended first — someone took the port between the
    check and the bind, or its start-up failed — raise rather than drive whatever else answers on that port."""
    deadline = time.monotonic() + timeout_s
    while not server.server.started:
        if not server.is_alive() or time.monotonic() > deadline:
            require_free(host, port, port_flag="--port")  # PortUnavailable when the port was taken meanwhile
            raise RuntimeError(f"the demo's service did not start on {host}:{port} (see the log above)")
        time.sleep(0.05)


def run_demo(settings: Settings, *, host: str, port: int, headless: bool, scenarios: ScenarioRunner,
             console_port: int = 8501) -> dict[str, Any]:
    """Start the service, run ``scenarios`` against it and return their JSON summary (also printed as the last
    line of stdout); unless headless, keep serving with the console until interrupted.

    Raises ``api.ports.PortUnavailable`` before starting anything when a port is taken.
    """
    require_service_and_console_ports(host, port, console_port, console=not headless)
    console = Console(stderr=True)
    # The demo talks to its own service thousands of times: per-request client logs would bury its results.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    db = Database(settings.database_url)
    with db.transaction() as session:
        _, key = create_api_key(session, "admin", "demo")
    server = _Server(settings, host, port)
    server.start()
    _wait_until_listening(server, host, port)
    base_url = f"http://{host}:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    summary = scenarios(base_url, key)
    if not headless:
        ui = _start_console(base_url, host, console_port)
        console.print(f"service at {base_url} (OpenAPI: {base_url}/docs); console at http://{host}:{console_port}; "
                      f"sign in to the console with the demo's admin key:\n{key}\nCtrl-C to stop.")
        try:
            while server.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            ui.terminate()
            ui.wait(timeout=30)
    server.stop()
    db.dispose()
    print(json.dumps(summary))
    return summary
