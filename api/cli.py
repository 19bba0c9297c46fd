"""The ``titrate`` command line (typer)."""

from __future__ import annotations

import os
import tempfile
from typing import Annotated

import typer

app = typer.Typer(help="titrate: experiments and A/B roll-outs for ML model variants", no_args_is_help=True)
keys_app = typer.Typer(help="API keys", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command()
def migrate() -> None:
    """Upgrade the database (TITRATE_DATABASE_URL) to the newest schema."""
    from api import migrate as migrations
    from api.settings import get_settings

    migrations.upgrade(get_settings().database_url)
    typer.echo(f"database at {migrations.head_revision()}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate", help="migrate before serving")] = True,
) -> None:
    """Run the HTTP service (several worker processes share the database)."""
    import uvicorn

    if migrate_first:
        migrate()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics aggregates across processes only through a shared directory.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="titrate-prom-")
    uvicorn.run("api.main:app", host=host, port=port, workers=workers, log_config=None,
                timeout_graceful_shutdown=30)


@app.command()
def demo(
    headless: Annotated[bool, typer.Option(help="run the scenarios, print a JSON summary and exit")] = False,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    units: Annotated[int, typer.Option(min=100, help="simulated visitors of the A/B scenario")] = 12_000,
    seed: Annotated[int, typer.Option(help="random seed of the simulation")] = 2026,
    model_requests: Annotated[int, typer.Option(min=0, help="requests served by the real MiniLM variants")] = 120,
    adaptive: Annotated[bool, typer.Option("--adaptive/--no-adaptive",
                                           help="also run the ramped roll-out and the bandit scenarios")] = True,
    console_port: Annotated[int, typer.Option(help="TCP port of the console (not with --headless)")] = 8501,
) -> None:
    """The main job: start the service, run the demo scenarios (SDK traffic, real MiniLM variants), report."""
    from api.demo import run_demo
    from api.settings import get_settings

    migrate()
    run_demo(get_settings(), host=host, port=port, units=units, seed=seed, headless=headless,
             model_requests=model_requests, adaptive=adaptive, console_port=console_port)


@app.command()
def console(
    port: Annotated[int, typer.Option(help="TCP port of the console")] = 8501,
    api_url: Annotated[str, typer.Option(envvar="TITRATE_API_URL", help="the service's base URL")]
    = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(envvar="TITRATE_API_KEY", show_default=False,
                                         help="API key (analyst; admin to act)")] = "",
    headless: Annotated[bool, typer.Option(help="do not open a browser")] = False,
) -> None:
    """Run the Streamlit console (talks to the service over REST at TITRATE_API_URL with TITRATE_API_KEY)."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TITRATE_API_URL": api_url, "TITRATE_API_KEY": api_key}
    command = [sys.executable, "-m", "streamlit", "run", str(root / "ui" / "app.py"), "--server.port", str(port),
               "--server.headless", str(headless).lower(), "--browser.gatherUsageStats", "false"]
    os.chdir(root)
    os.execve(sys.executable, command, env)  # become streamlit: signals (Ctrl-C, SIGTERM) reach it directly


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="sdk | analyst | admin")],
    name: Annotated[str, typer.Option(help="who or what uses the key")] = "cli",
) -> None:
    """Create an API key and print it (shown once; stored hashed)."""
    from api.auth.keys import ROLE_RANK, create_api_key
    from api.db.engine import Database
    from api.settings import get_settings

    if role not in ROLE_RANK:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLE_RANK)}", param_hint="--role")
    db = Database(get_settings().database_url)
    with db.transaction() as session:
        _, secret = create_api_key(session, role, name)
    db.dispose()
    typer.echo(secret)


if __name__ == "__main__":
    app()
