"""Configuration mistakes on the command line: a bad ``TITRATE_*`` value, a database URL that cannot be parsed,
reached, opened or written, a busy port. Each is one line on stderr naming the setting or flag to change, exit
status 2, no traceback — and for ports, nothing is started first."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from api.cli import app
from api.ports import PortUnavailable, port_problem, require_free, require_service_and_console_ports
from api.settings import get_settings

ROOT = Path(__file__).resolve().parents[3]
POSTGRES_URL = os.environ.get("TITRATE_TEST_POSTGRES_URL")  # read before the ``cli`` fixture clears TITRATE_*


def _env(**settings: str) -> dict[str, str]:
    """This process's environment without any TITRATE_* variable, plus ``settings``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("TITRATE_")}, **settings}


def _titrate(*args: str, code: str | None = None, timeout: float = 180, **settings: str) -> (
        subprocess.CompletedProcess[str]):
    """Run ``titrate ARGS`` (or the Python ``code``) in a fresh process with ``settings`` as its environment."""
    command = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "api.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=_env(**settings), capture_output=True, text=True, timeout=timeout)


def _assert_one_line(code: int, stderr: str, output: str, *named: str) -> str:
    """Exit status 2, stderr one line naming each of ``named``, no traceback anywhere; the line."""
    assert "Traceback" not in output + stderr
    lines = stderr.strip().splitlines()
    assert (code, len(lines)) == (2, 1), stderr
    for name in named:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner in an environment without this process's TITRATE_* variables."""
    for variable in [k for k in os.environ if k.startswith("TITRATE_")]:
        monkeypatch.delenv(variable)
    return CliRunner()


def _invoke(cli: CliRunner, *args: str, **settings: str) -> tuple[int, str, str]:
    """Run ``titrate ARGS`` in this process with ``settings`` as the only TITRATE_* variables."""
    get_settings.cache_clear()
    result = cli.invoke(app, list(args), env=settings)
    get_settings.cache_clear()
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr, result.stdout


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port this test listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the database URL -------------------------------------------------------------------------------------------


def test_a_url_that_does_not_parse_is_one_line(tmp_path: Path) -> None:
    """The issue's case, end to end in a fresh process: ``TITRATE_DATABASE_URL=foo titrate migrate``."""
    done = _titrate("migrate", TITRATE_DATABASE_URL="foo")
    line = _assert_one_line(done.returncode, done.stderr, done.stdout, "TITRATE_DATABASE_URL", "'foo'")
    assert "not a usable database URL" in line


def _unopenable_urls(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """URLs SQLite cannot open or write even as root, with what the line must say."""
    (tmp_path / "a-file").write_text("not a folder")
    read_only = tmp_path / "read-only.db"
    sqlite3.connect(read_only).close()  # an existing database, opened read-only below (refuses writes, even as root)
    return {
        "missing folder": (f"sqlite:///{tmp_path}/missing/dir/t.db", f"{tmp_path}/missing/dir does not exist"),
        "parent is a file": (f"sqlite:///{tmp_path}/a-file/t.db", "is not a folder"),
        "opened read-only": (f"sqlite:///file:{read_only}?mode=ro&uri=true", "readonly"),
        "unknown dialect": ("nosuchdb://x/y", "not a usable database URL"),
        "driver not installed": ("mysql://u@127.0.0.1/x", "driver is not installed"),
    }


@pytest.mark.parametrize("case", ["missing folder", "parent is a file", "opened read-only", "unknown dialect",
                                  "driver not installed"])
def test_a_database_sqlite_cannot_use_is_one_line(cli: CliRunner, tmp_path: Path, case: str) -> None:
    url, reason = _unopenable_urls(tmp_path)[case]
    line = _assert_one_line(*_invoke(cli, "migrate", TITRATE_DATABASE_URL=url), "TITRATE_DATABASE_URL", reason)
    assert line.startswith("error: ")


def test_unreachable_postgresql_is_one_line_without_the_password(cli: CliRunner, closed_port: int) -> None:
    url = f"postgresql://titrate:hunter2@127.0.0.1:{closed_port}/titrate"
    code, stderr, stdout = _invoke(cli, "migrate", TITRATE_DATABASE_URL=url)
    _assert_one_line(code, stderr, stdout, "TITRATE_DATABASE_URL", f"port {closed_port}", "Connection refused")
    assert "hunter2" not in stderr + stdout


def test_keys_create_with_a_broken_database_url_is_one_line(cli: CliRunner, tmp_path: Path,
                                                            closed_port: int) -> None:
    for url, reason in (("foo", "not a usable database URL"),
                        (f"postgresql://u@127.0.0.1:{closed_port}/x", "Connection refused"),
                        (f"sqlite:///{tmp_path}/never-migrated.db", "titrate migrate")):
        _assert_one_line(*_invoke(cli, "keys", "create", "--role", "admin", TITRATE_DATABASE_URL=url),
                         "TITRATE_DATABASE_URL", reason)
    _assert_one_line(*_invoke(cli, "keys", "revoke", "--id", "1", TITRATE_DATABASE_URL="foo"), "TITRATE_DATABASE_URL")


def test_a_postgresql_database_that_does_not_exist_is_one_line(cli: CliRunner) -> None:
    if not POSTGRES_URL:
        pytest.skip("TITRATE_TEST_POSTGRES_URL not set")
    url = make_url(POSTGRES_URL).set(database="titrate_no_such_database").render_as_string(hide_password=False)
    _assert_one_line(*_invoke(cli, "keys", "create", "--role", "admin", TITRATE_DATABASE_URL=url),
                     "TITRATE_DATABASE_URL", "titrate_no_such_database", "does not exist")


def test_a_good_database_still_works(cli: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ok.db"
    code, stderr, stdout = _invoke(cli, "migrate", TITRATE_DATABASE_URL=url)
    assert (code, stderr) == (0, ""), stderr
    code, stderr, stdout = _invoke(cli, "keys", "create", "--role", "analyst", TITRATE_DATABASE_URL=url)
    assert code == 0, stderr
    assert stdout.startswith("tk_")


def test_keys_revoke_with_an_id_beyond_the_column_is_a_usage_error(cli: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ok.db"
    assert _invoke(cli, "migrate", TITRATE_DATABASE_URL=url)[0] == 0
    code, stderr, _ = _invoke(cli, "keys", "revoke", "--id", "999999999999999999999", TITRATE_DATABASE_URL=url)
    assert code == 2
    assert "--id" in stderr
    assert "Traceback" not in stderr


# --- other settings ---------------------------------------------------------------------------------------------


def test_an_invalid_setting_names_its_variable(cli: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    line = _assert_one_line(*_invoke(cli, "migrate", TITRATE_DATABASE_URL=url, TITRATE_DB_POOL_SIZE="abc",
                                     TITRATE_LOG_JSON="maybe"),
                            "TITRATE_DB_POOL_SIZE='abc'", "valid integer", "TITRATE_LOG_JSON")
    assert "invalid setting" in line
    _assert_one_line(*_invoke(cli, "serve", "--port", str(_free_port()), TITRATE_DATABASE_URL=url,
                              TITRATE_EXPOSURE_BATCH_SIZE="0"), "TITRATE_EXPOSURE_BATCH_SIZE", "greater than")
    assert not (tmp_path / "t.db").exists()  # refused before touching the database


# --- ports ------------------------------------------------------------------------------------------------------


def test_port_checks() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        problem = port_problem("127.0.0.1", busy)
        assert problem is not None
        assert problem.reason == "is in use"
        with pytest.raises(PortUnavailable, match=f"port {busy} on 127.0.0.1 is in use: pass --console-port"):
            require_service_and_console_ports("127.0.0.1", _free_port(), busy, console=True)
        require_service_and_console_ports("127.0.0.1", _free_port(), busy, console=False)  # headless: no console
    require_free("127.0.0.1", busy)  # closed: free again
    with pytest.raises(PortUnavailable, match="is the service's --port: pass another --console-port"):
        require_service_and_console_ports("127.0.0.1", busy, busy, console=True)
    with pytest.raises(PortUnavailable, match="pass --host"):
        require_free("192.0.2.1", busy)  # TEST-NET-1: never an address of this machine
    with pytest.raises(PortUnavailable, match="0-65535"):
        require_free("127.0.0.1", 70000)


def test_serve_on_a_busy_port_is_one_line_and_starts_nothing(busy_port: int, tmp_path: Path) -> None:
    database = tmp_path / "serve.db"
    done = _titrate("serve", "--port", str(busy_port), TITRATE_DATABASE_URL=f"sqlite:///{database}")
    line = _assert_one_line(done.returncode, done.stderr, done.stdout, "--port", str(busy_port))
    assert line == f"error: port {busy_port} on 127.0.0.1 is in use: pass --port"
    assert not database.exists()  # not even migrated


# Run in a fresh process: the check before starting misses the port (as when another process binds it between the
# check and uvicorn's bind), so uvicorn itself fails to bind.
_SERVE_AFTER_A_MISSED_CHECK = """
import api.ports as ports
real, calls = ports.port_problem, []
def first_check_misses(host, port):
    calls.append(port)
    return None if len(calls) == 1 else real(host, port)
ports.port_problem = first_check_misses
from api.cli import app
app(["serve", "--port", "{port}"])
"""


def test_serve_exits_2_when_uvicorn_cannot_bind(busy_port: int, tmp_path: Path) -> None:
    done = _titrate(code=_SERVE_AFTER_A_MISSED_CHECK.format(port=busy_port),
                    TITRATE_DATABASE_URL=f"sqlite:///{tmp_path}/race.db", TITRATE_SCHEDULER_ENABLED="false")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: port {busy_port} on 127.0.0.1 is in use: pass --port"


@pytest.mark.parametrize("which", ["--port", "--console-port"])
def test_demo_checks_both_ports_before_starting_anything(busy_port: int, tmp_path: Path, which: str) -> None:
    database = tmp_path / "demo.db"
    ports = {"--port": str(_free_port()), "--console-port": str(_free_port()), which: str(busy_port)}
    done = _titrate("demo", *[item for pair in ports.items() for item in pair],
                    TITRATE_DATABASE_URL=f"sqlite:///{database}")
    line = _assert_one_line(done.returncode, done.stderr, done.stdout, which)
    assert line == f"error: port {busy_port} on 127.0.0.1 is in use: pass {which}"
    assert not database.exists()  # nothing started, not even the migration


# The demo's checks miss the busy port (taken between the check and the bind): it must stop once its own service
# fails to listen, not drive whatever answers there.
_DEMO_AFTER_A_MISSED_CHECK = """
import api.ports as ports
ports.require_service_and_console_ports = lambda *args, **kwargs: None
from api.cli import app
app(["demo", "--headless", "--port", "{port}", "--units", "100", "--model-requests", "0", "--no-adaptive"])
"""


def test_demo_stops_when_its_service_cannot_bind(busy_port: int, tmp_path: Path) -> None:
    done = _titrate(code=_DEMO_AFTER_A_MISSED_CHECK.format(port=busy_port),
                    TITRATE_DATABASE_URL=f"sqlite:///{tmp_path}/race.db", TITRATE_SCHEDULER_ENABLED="false")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: port {busy_port} on 127.0.0.1 is in use: pass --port"
    assert "scenarios" not in done.stdout  # no summary: nothing was driven
