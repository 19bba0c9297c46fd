"""The ``titrate`` command line (typer)."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from api.console import console_command
from simulator.options import DriverOptions
from simulator.overrides import Overrides
from simulator.presets import PRESETS

if TYPE_CHECKING:
    import subprocess

    from simulator.scenario import Scenario


def fail(message: str) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with status 2: a mistake the person fixes by changing the
    setting or flag the message names (no traceback)."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)


class _MistakesInOneLine(TyperGroup):
    """The command group: a configuration mistake (``api.mistakes.Mistake``) raised by any command becomes
    ``fail(message)``; anything else (a bug) keeps its traceback."""

    def invoke(self, ctx: Any) -> Any:
        from api.mistakes import Mistake

        try:
            return super().invoke(ctx)
        except Mistake as mistake:
            fail(str(mistake))


app = typer.Typer(help="titrate: experiments and A/B roll-outs for ML model variants", no_args_is_help=True,
                  cls=_MistakesInOneLine)
keys_app = typer.Typer(help="API keys", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _database_url() -> str:
    """TITRATE_DATABASE_URL once the settings are valid and the database answers (else a one-line mistake)."""
    from api.mistakes import check_database, load_settings

    url = load_settings().database_url
    check_database(url)
    return url


@app.command()
def migrate() -> None:
    """Upgrade the database (TITRATE_DATABASE_URL) to the newest schema."""
    from api import migrate as migrations
    from api.mistakes import database_errors

    url = _database_url()
    with database_errors(url):
        migrations.upgrade(url)
    typer.echo(f"database at {migrations.head_revision()}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate", help="migrate before serving")] = True,
) -> None:
    """Run the HTTP service (several worker processes share the database)."""
    import uvicorn

    from api.mistakes import load_settings
    from api.ports import require_free

    load_settings()
    require_free(host, port)  # before anything starts: a busy port is one line, not a half-started service
    if migrate_first:
        migrate()
    else:
        _database_url()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics aggregates across processes only through a shared directory.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="titrate-prom-")
    refresher = _start_refresh_worker()
    _stop_refresh_worker_on_sigterm(refresher)
    try:
        uvicorn.run("api.main:app", host=host, port=port, workers=workers, log_config=None,
                    timeout_graceful_shutdown=30)
    except SystemExit as stopped:
        if stopped.code not in (None, 0):
            require_free(host, port)  # someone took the port after the check: say so (exit 2), else uvicorn's code
        raise
    finally:
        _stop_refresh_worker(refresher)


#: How long ``titrate serve`` waits at exit for the refresh worker to finish the experiment it is refreshing.
REFRESH_WORKER_STOP_SECONDS = 30.0


def _start_refresh_worker() -> subprocess.Popen[bytes] | None:
    """``titrate refresh-worker`` beside the service's workers (one per host, whatever ``--workers``), when the
    settings run the scorecard refresh job in its own process (``scorecard_refresh_mode=process`` and
    ``scheduler_enabled``); None otherwise. It gets this process's environment (the same settings) and stops by
    itself if this process dies without stopping it."""
    import subprocess
    import sys

    from api.mistakes import load_settings

    settings = load_settings()
    if not (settings.scheduler_enabled and settings.scorecard_refresh_mode == "process"):
        return None
    return subprocess.Popen([sys.executable, "-m", "api.cli", "refresh-worker", "--parent-pid", str(os.getpid())])


def _stop_refresh_worker(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the refresh worker and wait for it (it finishes the experiment in progress); kill it past
    :data:`REFRESH_WORKER_STOP_SECONDS`."""
    import subprocess

    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=REFRESH_WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _stop_refresh_worker_on_sigterm(process: subprocess.Popen[bytes] | None) -> None:
    """Stop the refresh worker when SIGTERM ends this process. Why a handler and not only ``finally``: uvicorn
    shuts down gracefully on SIGTERM, puts back the handler it found and raises the signal again, so with the
    default handler this process would die there without running its ``finally``; this one stops the worker, then
    lets the signal end the process as before (the same exit status)."""
    import signal

    if process is None:
        return
    previous = signal.getsignal(signal.SIGTERM)

    def stop_then_exit(sig: int, _frame: object) -> None:
        _stop_refresh_worker(process)
        signal.signal(sig, previous)
        signal.raise_signal(sig)

    signal.signal(signal.SIGTERM, stop_then_exit)


@app.command("refresh-worker")
def refresh_worker(
    once: Annotated[bool, typer.Option("--once", help="run one refresh round now and exit")] = False,
    parent_pid: Annotated[int | None, typer.Option(
        hidden=True, help="stop when this process ends (set by titrate serve)")] = None,
) -> None:
    """Refresh the materialised scorecards of running and paused experiments every
    TITRATE_SCORECARD_REFRESH_SECONDS, in this process (titrate serve starts one beside its workers; with several
    replicas, each host may run one: on PostgreSQL one round runs at a time). Stops on SIGTERM or Ctrl-C after the
    experiment in progress. Runs at a lower CPU priority (TITRATE_SCORECARD_REFRESH_NICE) unless --once."""
    import signal
    import threading

    from api.analysis.published import publish_if_read
    from api.background import lower_cpu_priority
    from api.incremental.scheduler import run_worker
    from api.logging_setup import configure_logging
    from api.mistakes import database_errors, load_settings

    settings = load_settings()
    url = _database_url()
    configure_logging(settings.log_level, settings.log_json)
    if not once:  # why: analysis must not take the cores from assignment (issue 18); one round is an operator's call
        lower_cpu_priority(settings.scorecard_refresh_nice)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with database_errors(url):
            rounds = run_worker(settings, stop, parent_pid=parent_pid, once=once,
                                publish=publish_if_read(settings.scorecard_publish_read_hours))
    finally:  # run in-process (tests, an embedding program): leave its handlers as they were
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if once:
        typer.echo(f"refresh round {'done' if rounds else 'skipped: another replica holds the lock'}")


@app.command()
def demo(
    headless: Annotated[bool, typer.Option(help="run the scenarios, print a JSON summary and exit")] = False,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    units: Annotated[int, typer.Option(min=100, help="simulated visitors of the A/B scenario")] = 12_000,
    seed: Annotated[int, typer.Option(help="random seed of the simulation")] = 2026,
    model_requests: Annotated[int, typer.Option(min=0, help="requests served by the real MiniLM variants")] = 120,
    adaptive: Annotated[bool, typer.Option("--adaptive/--no-adaptive",
                                           help="also run the ramped roll-out and the bandit scenarios")] = True,
    console_port: Annotated[int, typer.Option(min=1, max=65535,
                                              help="TCP port of the console (not with --headless)")] = 8501,
) -> None:
    """The main job: start the service, run the demo scenarios (SDK traffic, real MiniLM variants), report."""
    from api.mistakes import database_errors, load_settings
    from api.ports import require_service_and_console_ports

    settings = load_settings()
    if settings.scorecard_refresh_mode == "process":  # the demo serves in this one process: refresh beside it
        settings = settings.model_copy(update={"scorecard_refresh_mode": "inline"})
    require_service_and_console_ports(host, port, console_port, console=not headless)  # before anything starts
    migrate()
    # heavy (the service, the simulator): only once the checks passed. The CLI is the one place that wires the
    # client-side scenario runner (simulator) into the service side (api.demo).
    from api.demo import run_demo
    from simulator.demo import DemoPlan, run_demo_scenarios

    plan = DemoPlan(units=units, seed=seed, model_requests=model_requests, adaptive=adaptive,
                    # the driver waits out the exposure writer's flush interval before each allocation step
                    settle_seconds=max(0.3, settings.exposure_flush_seconds * 2))
    with database_errors(settings.database_url):
        run_demo(settings, host=host, port=port, headless=headless, console_port=console_port,
                 scenarios=lambda base_url, key: run_demo_scenarios(base_url, key, plan))


@app.command()
def console(
    host: Annotated[str, typer.Option(help="interface to bind; 0.0.0.0 exposes the sign-in page to the network")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port of the console")] = 8501,
    api_url: Annotated[str, typer.Option(envvar="TITRATE_API_URL", help="the service's base URL")]
    = "http://127.0.0.1:8000",
    browser: Annotated[bool, typer.Option("--browser/--headless", help="open a browser tab on start")] = False,
) -> None:
    """Run the Streamlit console against the service at TITRATE_API_URL; each person signs in with their own key."""
    import sys

    from api.ports import require_free

    require_free(host, port)  # a busy port or a foreign --host is one line naming the flag, before Streamlit starts
    env = {**os.environ, "TITRATE_API_URL": api_url}
    env.pop("TITRATE_API_KEY", None)  # nobody acts with a shared key: each person signs in with their own
    os.chdir(Path(__file__).resolve().parent.parent)
    os.execve(sys.executable, console_command(host, port, browser), env)  # become streamlit: signals reach it


def _validation_message(error: Exception) -> str:
    """A pydantic ``ValidationError`` as ``field.path: message`` lines (the field named first)."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    messages = [(".".join(map(str, e["loc"])), str(e["msg"]).removeprefix("Value error, ")) for e in error.errors()]
    return "; ".join(f"{where}: {message}" if where else message for where, message in messages)


@app.command()
def simulate(
    preset: Annotated[str | None, typer.Option(help=f"a built-in scenario: {' | '.join(PRESETS)}")] = None,
    scenario_file: Annotated[Path | None, typer.Option(
        "--scenario", exists=True, dir_okay=False, readable=True,
        help="a scenario JSON file (simulator.scenario.Scenario)")] = None,
    api_url: Annotated[str, typer.Option(envvar="TITRATE_API_URL", help="the service's base URL")]
    = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(envvar="TITRATE_API_KEY", show_default=False,
                                         help="API key (admin: registers and runs the allocation step)")] = "",
    days: Annotated[int | None, typer.Option(min=1, help="simulated days")] = None,
    units_per_day: Annotated[float | None, typer.Option(min=0.001, help="mean arrivals per simulated day")] = None,
    lift: Annotated[float | None, typer.Option(help="relative effect of the treatment(s) on conversion, e.g. 0.1")]
    = None,
    harm_segment: Annotated[str | None, typer.Option(
        help="ATTRIBUTE=VALUE where the treatment(s) have --harm-effect instead, e.g. country=DE")] = None,
    harm_effect: Annotated[float | None, typer.Option(help="relative effect in --harm-segment "
                                                    f"[default: {Overrides.model_fields['harm_effect'].default}]")]
    = None,
    slower_ms: Annotated[float | None, typer.Option(help="the treatment(s) serve this many ms slower than control")]
    = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: the scenario's)")] = None,
    experiment: Annotated[str | None, typer.Option(help="drive this experiment key instead of the scenario's")]
    = None,
    register: Annotated[bool, typer.Option("--register/--no-register",
                                           help="create the scenario's metrics and experiment if missing, start "
                                                "it")] = True,
    step: Annotated[bool | None, typer.Option("--step/--no-step", show_default=False,
                                              help="run the allocation step after each simulated day "
                                                   "[default: the scenario's]")] = None,
    settle_seconds: Annotated[float | None, typer.Option(
        min=0, help="wait after each day for the service's exposure writer "
             f"[default: {DriverOptions.model_fields['settle_seconds'].default}]")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Simulate days of traffic against a running service; print a JSON summary as the last line."""
    import json

    import httpx
    from pydantic import ValidationError

    from simulator.driver import SimulationError, run_scenario
    from simulator.overrides import apply_overrides

    scenario = _load_scenario(preset, scenario_file)
    segment = _harm_segment(harm_segment, harm_effect)
    given = {"days": days, "units_per_day": units_per_day, "lift": lift, "harm_segment": segment,
             "harm_effect": harm_effect, "slower_ms": slower_ms, "seed": seed, "allocation_step": step,
             "experiment": experiment}
    try:
        scenario = apply_overrides(scenario, Overrides(**{k: v for k, v in given.items() if v is not None}))
    except ValidationError as error:
        raise typer.BadParameter(_validation_message(error), param_hint="the overrides") from None
    options = DriverOptions(register_missing=register, quiet=quiet,
                            **({} if settle_seconds is None else {"settle_seconds": settle_seconds}))
    if not api_key.strip():  # an empty bearer token is no header httpx can send: say what to pass instead
        fail(f"no API key for the service at {api_url}: pass --api-key or set TITRATE_API_KEY (an admin key: "
             "titrate keys create --role admin)")
    try:
        result = run_scenario(scenario, api_url, api_key, options)
    except (SimulationError, httpx.HTTPError) as error:
        typer.echo(f"simulation failed: {_simulation_failure(error, api_url)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result.model_dump(mode="json")))


def _simulation_failure(error: Exception, api_url: str) -> str:
    """What went wrong talking to the service at ``api_url``, in one line that names the URL."""
    import httpx

    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        if status in (401, 403):
            return (f"the service at {api_url} refused the API key (HTTP {status}): pass an admin key with "
                    f"--api-key or TITRATE_API_KEY — {error.response.text}")
        return f"HTTP {status} from {error.request.method} {error.request.url}: {error.response.text}"
    if isinstance(error, httpx.TransportError):
        reason = str(error) or type(error).__name__
        return (f"cannot reach the service at {api_url} ({reason}): is it running (titrate serve)? Otherwise "
                "pass its URL with --api-url or TITRATE_API_URL")
    return str(error)


def _load_scenario(preset: str | None, scenario_file: Path | None) -> Scenario:
    """The scenario of ``--preset`` or ``--scenario`` (exactly one), or a usage error naming the option."""
    from pydantic import ValidationError

    from simulator.presets import preset as build_preset
    from simulator.scenario import Scenario

    if (preset is None) == (scenario_file is None):
        raise typer.BadParameter("give exactly one of --preset or --scenario", param_hint="--preset / --scenario")
    if scenario_file is not None:
        try:
            return Scenario.model_validate_json(scenario_file.read_text())
        except ValidationError as error:
            raise typer.BadParameter(_validation_message(error), param_hint="--scenario") from None
    try:
        return build_preset(str(preset))
    except KeyError as error:
        raise typer.BadParameter(str(error.args[0]), param_hint="--preset") from None


def _harm_segment(harm_segment: str | None, harm_effect: float | None) -> tuple[str, str] | None:
    """``--harm-segment ATTRIBUTE=VALUE`` as a pair (``--harm-effect`` needs it), or a usage error."""
    if harm_segment is None:
        if harm_effect is not None:
            raise typer.BadParameter("--harm-effect needs --harm-segment", param_hint="--harm-effect")
        return None
    attribute, sep, value = harm_segment.partition("=")
    if not (sep and attribute and value):
        raise typer.BadParameter("expected ATTRIBUTE=VALUE, e.g. country=DE", param_hint="--harm-segment")
    return attribute, value


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="folder for exposures.parquet and events.parquet")],
    file_format: Annotated[str, typer.Option("--format", help="file format: parquet")] = "parquet",
    since: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S"],
        help="only exposures exposed and events received at or after this time (UTC unless an offset is given)")]
    = None,
    experiment: Annotated[str | None, typer.Option(
        help="only this experiment's exposures and the events of its exposed units")] = None,
    force: Annotated[bool, typer.Option(help="write into a non-empty --out folder (replacing the two files)")]
    = False,
) -> None:
    """Write titrate's own exposures and events (TITRATE_DATABASE_URL) as Parquet files for a warehouse."""
    from datetime import UTC

    from api.export import FORMATS, ExportError, export_parquet
    from api.mistakes import database_errors

    if file_format not in FORMATS:
        fail(f"--format {file_format!r} is not supported; use one of: {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        fail(f"--out {out} is not empty; choose an empty or new folder, or pass --force to replace its files")
    url = _database_url()
    with database_errors(url):
        try:
            result = export_parquet(url, out, experiment=experiment,
                                    since=None if since is None else
                                    since if since.tzinfo else since.replace(tzinfo=UTC))
        except ExportError as error:
            fail(str(error))
    typer.echo(f"exported {result.exposures} exposures to {out / 'exposures.parquet'} and {result.events} "
               f"events to {out / 'events.parquet'}")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="sdk | analyst | admin")],
    name: Annotated[str, typer.Option(help="who or what uses the key")] = "cli",
) -> None:
    """Create an API key and print it (shown once; stored hashed)."""
    from api.auth.keys import ROLE_RANK, create_api_key
    from api.db.engine import Database
    from api.mistakes import database_errors

    if role not in ROLE_RANK:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLE_RANK)}", param_hint="--role")
    url = _database_url()
    with database_errors(url):
        db = Database(url)
        try:
            with db.transaction() as session:
                _, secret = create_api_key(session, role, name)
        finally:
            db.dispose()
    typer.echo(secret)


@keys_app.command("list")
def keys_list(
    active: Annotated[bool, typer.Option("--active", help="only keys that are not revoked")] = False,
) -> None:
    """List API keys: id, role, name, public prefix, created and revoked times (never a secret)."""
    from api.auth.service import list_api_keys
    from api.db.engine import Database
    from api.mistakes import database_errors

    url = _database_url()
    with database_errors(url):
        db = Database(url)
        try:
            with db.read() as session:
                rows = [(str(r.id), r.role, r.name, r.prefix, f"{r.created_at:%Y-%m-%dT%H:%M:%SZ}",
                         f"{r.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if r.revoked_at else "-")
                        for r in list_api_keys(session) if not (active and r.revoked_at)]
        finally:
            db.dispose()
    header = ("id", "role", "name", "prefix", "created", "revoked")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not rows:
        typer.echo("(no keys yet: titrate keys create --role admin)" if not active else "(no active keys)")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Option(
        "--id", min=1, max=2**31 - 1,  # api_keys.id is a 32-bit INTEGER, as the route's MAX_KEY_ID says
        help="the key's id (GET /v1/keys)")]) -> None:
    """Revoke an API key (running services refuse it within their config refresh period)."""
    from api.auth.keys import Principal
    from api.auth.service import revoke_api_key
    from api.db.engine import Database
    from api.errors import DomainError
    from api.mistakes import database_errors

    url = _database_url()
    db = Database(url)
    try:
        with database_errors(url), db.transaction() as session:
            row, already = revoke_api_key(session, key_id, Principal(key_id=0, name="titrate keys revoke",
                                                                     role="admin", prefix="cli"))
            if already:  # idempotent, but say so: nothing was done now
                typer.echo(f"key {row.id} ({row.name}, {row.role}) was already revoked at "
                           f"{row.revoked_at:%Y-%m-%dT%H:%M:%SZ}; nothing changed")
            else:
                typer.echo(f"key {row.id} ({row.name}, {row.role}) revoked at {row.revoked_at:%Y-%m-%dT%H:%M:%SZ}")
    except DomainError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()


if __name__ == "__main__":
    app()
