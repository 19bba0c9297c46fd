"""The Streamlit console's command line, shared by ``titrate console`` (api/cli.py) and ``titrate demo``
(api/demo.py), so neither imports the other for it."""

from __future__ import annotations

import sys
from pathlib import Path

#: what ``ui/.streamlit/config.toml`` says, passed again as flags so no other Streamlit config can undo it
CONSOLE_STREAMLIT_FLAGS = ("--server.showEmailPrompt", "false", "--browser.gatherUsageStats", "false",
                           "--client.toolbarMode", "minimal", "--server.fileWatcherType", "none")


def console_command(host: str, port: int, browser: bool = False) -> list[str]:
    """The ``streamlit run`` command line of the console: bound to ``host``:``port``, headless unless ``browser``,
    never prompting and never sending usage statistics."""
    root = Path(__file__).resolve().parent.parent
    return [sys.executable, "-m", "streamlit", "run", str(root / "ui" / "app.py"), "--server.address", host,
            "--server.port", str(port), "--server.headless", str(not browser).lower(), *CONSOLE_STREAMLIT_FLAGS]
