"""``titrate simulate`` without a key, or against a service that is not there, says what to do and names the URL
(issue 17 item 6: it said "Illegal header value b'Bearer '" and "[Errno 111] Connection refused")."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from api.cli import app


def _simulate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["simulate", "--preset", "checkout-ab", "--days", "1", "--quiet", *args],
                                env={"TITRATE_API_KEY": None, "TITRATE_API_URL": None})
    return result.exit_code, " ".join(result.output.split())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_without_a_key_it_names_the_option_and_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    code, output = _simulate("--api-url", url)
    assert code == 2
    assert f"no API key for the service at {url}" in output
    assert "--api-key" in output
    assert "TITRATE_API_KEY" in output
    assert "Illegal header" not in output


def test_with_the_service_down_it_names_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    code, output = _simulate("--api-url", url, "--api-key", "tk_whatever")
    assert code == 1
    assert f"simulation failed: cannot reach the service at {url}" in output
    assert "--api-url" in output
    assert "Traceback" not in output
