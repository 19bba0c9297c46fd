"""How the console is started: ``titrate console`` binds 127.0.0.1 unless ``--host`` says otherwise, and neither
it nor a bare ``streamlit run ui/app.py`` stops at Streamlit's e-mail prompt or sends usage statistics — with
stdin closed, from any working directory and with no Streamlit config in HOME.

The listening address is read from the kernel's socket table (``/proc/net/tcp``, ``/proc/net/tcp6``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.live import free_port
from tests.ui.conftest import ROOT

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp*
TELEMETRY_NOTICE = "Collecting usage statistics"  # printed by Streamlit when nobody set browser.gatherUsageStats
EMAIL_PROMPT = "Email:"

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")


def _address(hex_address: str) -> str:
    """An address of /proc/net/tcp*: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    swapped = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(swapped)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def listening_addresses(port: int) -> set[str]:
    """Every local address with a listening TCP socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == LISTEN and int(hex_port, 16) == port:
                found.add(_address(address))
    return found


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """A first run on a desktop: an empty HOME (no ~/.streamlit: no credentials, no config), ``DISPLAY`` set, and a
    key in the environment that the console must not pick up."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update({"HOME": str(home), "TITRATE_API_URL": "http://127.0.0.1:9", "TITRATE_API_KEY": "tk_shared-by-all",
                "PYTHONPATH": str(ROOT),  # started from another directory: this checkout's packages
                "DISPLAY": ":99"})  # as on a desktop, where Streamlit's own default would be to prompt and open a tab
    return env


@contextmanager
def started(command: list[str], env: dict[str, str], cwd: Path, port: int,
            log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` with stdin closed until its health check answers on 127.0.0.1 (or it exits: fail)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90  # generous: a shared, busy machine
        while True:
            assert process.poll() is None, f"exited {process.returncode}: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"never healthy: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def titrate_console(*flags: str) -> list[str]:
    return [sys.executable, "-m", "api.cli", "console", *flags]


def test_titrate_console_binds_loopback_without_prompting_or_a_shared_key(bare_env: dict[str, str],
                                                                          tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "console.log"
    with started(titrate_console("--port", str(port)), bare_env, tmp_path, port, log) as process:
        assert listening_addresses(port) == {"127.0.0.1"}
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")  # the exec'd streamlit
        assert not [v for v in environ if v.startswith(b"TITRATE_API_KEY=")]
        assert b"TITRATE_API_URL=http://127.0.0.1:9" in environ
    output = log.read_text()
    assert EMAIL_PROMPT not in output
    assert TELEMETRY_NOTICE not in output  # set (to false) on purpose, so Streamlit does not announce collecting
    assert not (Path(bare_env["HOME"]) / ".streamlit" / "credentials.toml").exists()


def test_titrate_console_binds_every_interface_only_when_told(bare_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    with started(titrate_console("--host", "0.0.0.0", "--port", str(port)), bare_env, tmp_path, port,
                 tmp_path / "console.log"):
        assert listening_addresses(port) == {"0.0.0.0"}


def test_titrate_console_names_the_flag_when_the_port_is_taken(bare_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(titrate_console("--port", str(port)), cwd=tmp_path, env=bare_env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: port {port} on 127.0.0.1 is in use: pass --port"]


def test_bare_streamlit_run_from_elsewhere_is_headless_loopback_and_quiet(bare_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    """``streamlit run ui/app.py`` with nothing but a port, from another directory: the config shipped next to the
    app still applies."""
    port = free_port()
    log = tmp_path / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "ui" / "app.py"), "--server.port", str(port)]
    with started(command, bare_env, tmp_path, port, log):
        assert listening_addresses(port) == {"127.0.0.1"}
    output = log.read_text()
    assert EMAIL_PROMPT not in output
    assert TELEMETRY_NOTICE not in output


RESOLVE = """
import json, sys
from streamlit import config
config._main_script_path = sys.argv[1]  # what `streamlit run <script>` sets before reading the config files
config.get_config_options(force_reparse=True)
names = ["server.headless", "server.showEmailPrompt", "server.address", "browser.gatherUsageStats",
         "client.toolbarMode"]
print(json.dumps({name: config.get_option(name) for name in names}))
"""


@pytest.mark.parametrize("home_config", ["", "[browser]\ngatherUsageStats = true\n[server]\nheadless = false\n"
                                             "showEmailPrompt = true\naddress = \"0.0.0.0\"\n"])
def test_the_shipped_config_wins_over_home_and_working_directory(bare_env: dict[str, str], tmp_path: Path,
                                                                 home_config: str) -> None:
    """Streamlit's own resolution (defaults < ~/.streamlit < ./.streamlit < next to the script < flags): the
    console's file decides, even against a HOME or working-directory config that asks for the opposite."""
    if home_config:
        for folder in (Path(bare_env["HOME"]) / ".streamlit", tmp_path / ".streamlit"):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.toml").write_text(home_config)
    out = subprocess.run([sys.executable, "-c", RESOLVE, str(ROOT / "ui" / "app.py")], cwd=tmp_path, env=bare_env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=True)
    options = json.loads(out.stdout.strip().splitlines()[-1])
    assert options == {"server.headless": True, "server.showEmailPrompt": False, "server.address": "127.0.0.1",
                       "browser.gatherUsageStats": False, "client.toolbarMode": "minimal"}
