"""Mixed load on one ``titrate serve`` worker: assignments + event batches, with and without scorecard reads.

Usage:

    python bench/mixed_load_scorecards.py                            # SQLite (+ PostgreSQL when configured)
    python bench/mixed_load_scorecards.py --backend sqlite --units 20000 --seconds 10 --repeats 1   # quick
    python bench/mixed_load_scorecards.py --units 1000000            # the issue's 1M units × 10M events
    git archive 5a1c576 | tar -x -C /tmp/before && \
        TITRATE_BENCH_TREE=/tmp/before python bench/mixed_load_scorecards.py --label before   # older code

PostgreSQL runs when ``TITRATE_BENCH_POSTGRES_URL`` (or ``TITRATE_TEST_POSTGRES_URL``) names a server; a scratch
database ``titrate_bench_mixed`` is created there and dropped afterwards.

Set-up per database: the migrated schema, an admin key, three catalogue metrics (conversion: proportion, purchase,
72 h window; revenue: mean of Σ purchase, winsorized; latency: ratio Σ serving.latency_ms / count serving.request,
as a guardrail) and one running 2-variant experiment ``mixed`` whose history is ``--units`` exposed units and
``--events-per-unit`` × as many events, bulk-loaded with ``bench.bench_scorecard``'s seeded generator (exposures
over the last 14 days, events after them). Then a real ``titrate serve`` process (one worker, defaults otherwise)
and this process as the load generator (httpx + asyncio), three phases alternating ``--repeats`` times,
``--seconds`` each:

* ``assign only``: the assignments below alone (issue 18 item 3's "its p99 alone");
* ``no reads`` (baseline): ``POST /v1/assign`` open-loop at ``--assign-rate`` requests/s (a new unit each, so
  every request also queues an exposure), and ``POST /v1/events`` open-loop at ``--event-rate`` batches/s of
  ``--event-batch`` events (existing units, the metrics' event names, timestamped now);
* ``with reads``: the same, plus one analyst reading ``GET /v1/experiments/mixed/scorecard`` in a closed loop
  (the next read ``--read-pause`` s after the previous answer).

Latency per request: from handing it to the client until its answer is read (both processes share the machine's
cores, so the client's own scheduling delay is part of every figure, equally in both phases). Reported per route
and phase: p50 and p99 over all repeats, the number of requests and of non-2xx answers. Prints a Markdown section;
writes nothing to ``bench/RESULTS.md``.

Where the scorecard refresh job runs: ``--refresh-modes`` lists ``TITRATE_SCORECARD_REFRESH_MODE`` values to
measure one after the other on the same seeded database (``process``: ``titrate refresh-worker`` beside the
worker, the default; ``inline``: a thread of the serving worker, as before issue 18 item 3), each with a refresh
every ``--refresh-seconds`` so rounds overlap both phases. The script polls ``scorecard_refreshes`` during each
phase and reports how many refreshes were stored in it (``rounds``). ``--server-cpus`` / ``--client-cpus`` pin the
server (``taskset``; the refresh worker inherits it) and this load generator (``os.sched_setaffinity``) to CPU
lists, e.g. ``0`` and ``1``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

#: The source tree whose service is measured (its ``api`` is imported here and served): this checkout, or another
#: one named by ``TITRATE_BENCH_TREE`` (e.g. ``git archive <commit>`` unpacked) to compare code before and after a
#: change on the same machine in the same session.
ROOT = Path(os.environ.get("TITRATE_BENCH_TREE") or Path(__file__).resolve().parents[1]).resolve()
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from api import migrate  # noqa: E402
from api.auth.keys import Principal, create_api_key  # noqa: E402
from api.db.engine import Database, normalise_url  # noqa: E402
from api.experiments import service  # noqa: E402
from api.experiments.schemas import ExperimentCreate  # noqa: E402
from api.metrics_catalog.schemas import MetricCreate  # noqa: E402
from api.metrics_catalog.service import create_metric  # noqa: E402
from bench.bench_assign import machine  # noqa: E402
from bench.bench_scorecard import NAMES, NOW, _rows, _ts  # noqa: E402

ACTOR = Principal(0, "bench", "admin", "tk_bench")
EXPERIMENT = "mixed"
METRICS = [
    {"key": "conversion", "kind": "proportion", "event": "purchase", "window_hours": 72},
    {"key": "revenue", "kind": "mean", "event": "purchase", "aggregation": "sum", "winsorize": 1000.0},
    {"key": "latency", "kind": "ratio", "numerator": {"event": "serving.latency_ms", "aggregation": "sum"},
     "denominator": {"event": "serving.request", "aggregation": "count"}, "direction": "lower_is_better"},
]
PHASES = ("assign only", "no reads", "with reads")


def seed(url: str, units: int, events_per_unit: float) -> str:
    """Migrate ``url``, create the key, metrics and running experiment through the service, bulk-load its history
    (raw driver: ``executemany`` on SQLite, ``COPY`` on PostgreSQL); the admin key's secret."""
    migrate.upgrade(url)
    db = Database(url)
    with db.transaction() as session:
        _, key = create_api_key(session, "admin", "bench")
        for metric in METRICS:
            create_metric(session, MetricCreate.model_validate(metric), ACTOR)
    spec = {"key": EXPERIMENT, "name": "mixed load", "owner": "bench",
            "metrics": {"primary": "conversion", "secondary": ["revenue"],
                        "guardrails": [{"metric": "latency", "margin": 0.05}]},
            "hypothesis": {"change": "x", "metric": "conversion", "direction": "increase", "rationale": "y"},
            "variants": [{"key": "control", "control": True, "weight": 0.5}, {"key": "v2", "weight": 0.5}]}
    with db.transaction() as session:
        service.create_experiment(session, ExperimentCreate.model_validate(spec), ACTOR)
        service.start(session, EXPERIMENT, ACTOR)
    dialect = db.dialect
    with db.engine.connect() as conn:
        exp_id, version = conn.execute(text(
            "SELECT e.id, max(a.version) FROM experiments e JOIN allocations a ON a.experiment_id = e.id "
            "WHERE e.key = :k GROUP BY e.id"), {"k": EXPERIMENT}).one()
    exposures, events = _rows(units, events_per_unit, seed=1)
    raw = db.engine.raw_connection()
    try:
        cur: Any = raw.cursor()
        if dialect == "sqlite":
            cur.execute("BEGIN")
            cur.executemany("INSERT INTO exposures (experiment_id, unit_id, variant, allocation_version, exposed_at, "
                            "attributes, source) VALUES (?, ?, ?, ?, ?, '{}', 'server')",
                            ((exp_id, u, v, version, _ts(at, dialect)) for u, v, at in exposures))
            now = _ts(NOW, dialect)
            cur.executemany("INSERT INTO events (event_id, unit_id, name, value, timestamp, attributes, received_at) "
                            "VALUES (?, ?, ?, ?, ?, '{}', ?)",
                            ((eid, u, n, v, _ts(at, dialect), now) for eid, u, n, v, at in events))
            cur.execute("COMMIT")
            cur.execute("ANALYZE")
        else:
            with cur.copy("COPY exposures (experiment_id, unit_id, variant, allocation_version, exposed_at, "
                          "attributes, source) FROM STDIN") as copy:
                for u, v, at in exposures:
                    copy.write_row((exp_id, u, v, version, at, "{}", "server"))
            with cur.copy("COPY events (event_id, unit_id, name, value, timestamp, attributes, received_at) "
                          "FROM STDIN") as copy:
                for eid, u, n, v, at in events:
                    copy.write_row((eid, u, n, v, at, "{}", NOW))
            raw.commit()
            cur.execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()
    db.dispose()
    return key


def start_server(url: str, port: int, env: dict[str, str], cpus: str = "",
                 log: Path | None = None) -> subprocess.Popen[bytes]:
    """``titrate serve --port PORT`` (one worker) on ``url``, once ``/healthz`` answers; pinned to ``cpus``
    (``taskset -c``) when given; its stderr (and its refresh worker's) appended to ``log`` when given."""
    titrate = Path(sys.executable).parent / "titrate"
    pin = ["taskset", "-c", cpus] if cpus else []
    # why PYTHONPATH: the console script's own directory comes first on its path, so ROOT must be named for the
    # service to run that tree's code rather than the installed (editable) checkout's.
    process = subprocess.Popen([*pin, str(titrate), "serve", "--port", str(port), "--no-migrate"], cwd=ROOT,
                               env={**os.environ, "TITRATE_DATABASE_URL": url, "TITRATE_LOG_LEVEL": "WARNING",
                                    "PYTHONPATH": str(ROOT), **env},
                               stdout=subprocess.DEVNULL, stderr=log.open("ab") if log else subprocess.PIPE)
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"titrate serve exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("titrate serve did not start")


class Route:
    """One route's latencies (seconds) and non-2xx answers within a phase."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.failures = 0
        self.repeat_p99: list[float] = []  # per phase repeat, when merged (the spread the pooled p99 hides)

    async def call(self, request: Callable[[], Awaitable[httpx.Response]]) -> None:
        started = time.perf_counter()
        try:
            response = await request()
            ok = response.is_success
        except httpx.HTTPError:
            ok = False
        self.latencies.append(time.perf_counter() - started)
        self.failures += not ok


async def open_loop(rate: float, until: float, fire: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Start ``fire()`` at ``rate`` per second on a fixed schedule (not waiting for answers) until ``until``."""
    loop = asyncio.get_running_loop()
    start, k = loop.time(), 0
    tasks: set[asyncio.Task[None]] = set()
    while (due := start + k / rate) < until:
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(fire())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        k += 1
    if tasks:
        await asyncio.gather(*tasks)


def refresh_stamps(url: str) -> Callable[[], set[Any]]:
    """A poller of the stored refresh states (``computed_at`` of each experiment's ``scorecard_refreshes`` row):
    each call returns the set seen so far, so the number of refreshes stored during a phase can be counted."""
    engine = create_engine(normalise_url(url))
    seen: set[Any] = set()

    def poll() -> set[Any]:
        with engine.connect() as conn:
            seen.update(conn.execute(text("SELECT experiment_id, computed_at FROM scorecard_refreshes")).all())
        return seen

    return poll


async def count_refreshes(poll: Callable[[], set[Any]], until: float) -> int:
    """Refreshes stored between now and ``until`` (the table polled every 0.5 s in a thread)."""
    loop = asyncio.get_running_loop()
    before = len(await asyncio.to_thread(poll))
    while loop.time() < until:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(poll)
    return len(await asyncio.to_thread(poll)) - before


def _sender_apart(base: str, key: str, given: dict[str, Any], reads: bool, units: int, ready: Any, go: Any,
                  results: Any) -> None:
    """``--apart``: the event batches (and the reads) of one phase from a process of their own."""
    if given["client_cpus"]:
        os.sched_setaffinity(0, {int(c) for c in given["client_cpus"].split(",")})
    got, _ = asyncio.run(phase(base, key, argparse.Namespace(**given), reads, units, assign_too=False,
                               start=(ready, go)))
    results.put({name: (route.latencies, route.failures) for name, route in got.items()})


async def phase_apart(base: str, key: str, args: argparse.Namespace, reads: bool, units: int,
                      poll: Callable[[], set[Any]] | None) -> tuple[dict[str, Route], int]:
    """A phase with events whose assignments are timed here and whose event batches and reads come from a second
    load-generator process, started together."""
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Event(), context.Event(), context.Queue()
    sender = context.Process(target=_sender_apart, args=(base, key, vars(args), reads, units, ready, go, results))
    sender.start()
    await asyncio.to_thread(ready.wait)
    got, rounds = await phase(base, key, args, False, units, poll, events_too=False, start=(None, go))
    for name, (latencies, failures) in (await asyncio.to_thread(results.get)).items():
        got[name].latencies += latencies
        got[name].failures += failures
    await asyncio.to_thread(sender.join)
    return got, rounds


async def phase(base: str, key: str, args: argparse.Namespace, reads: bool, units: int,
                poll: Callable[[], set[Any]] | None = None, events_too: bool = True, assign_too: bool = True,
                start: tuple[Any, Any] | None = None) -> tuple[dict[str, Route], int]:
    """One phase; the routes' measurements and the refreshes stored during it. ``start``: (an event to set when
    ready, one to wait for before starting), to start with another load-generator process."""
    routes = {"assign": Route(), "events": Route(), "scorecard": Route()}
    headers = {"Authorization": f"Bearer {key}"}
    rnd = random.Random()
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)) as client:
        loop = asyncio.get_running_loop()

        async def assign() -> None:
            body = {"unit_id": f"m-{uuid.uuid4().hex}"}
            await routes["assign"].call(lambda: client.post("/v1/assign", json=body))

        # why built before the phase: encoding a batch is the load generator's CPU, which would delay its own
        # measurement of the assignments answered meanwhile (only in the phases with events)
        now = datetime.now(UTC).isoformat()
        bodies = iter([json.dumps({"events": [
            {"event_id": uuid.uuid4().hex, "unit_id": f"u{rnd.randrange(units)}", "name": rnd.choice(NAMES),
             "value": round(rnd.expovariate(0.05), 3), "timestamp": now} for _ in range(args.event_batch)]}).encode()
            for _ in range(int(args.event_rate * args.seconds) + 2)])
        json_headers = {"content-type": "application/json"}
        if start is not None:
            ready, go = start
            if ready is not None:
                ready.set()
            else:
                go.set()
            await asyncio.to_thread(go.wait)
        until = loop.time() + args.seconds

        async def events() -> None:
            body = next(bodies)
            await routes["events"].call(lambda: client.post("/v1/events", content=body, headers=json_headers))

        async def reader() -> None:
            while loop.time() < until:
                await routes["scorecard"].call(lambda: client.get(f"/v1/experiments/{EXPERIMENT}/scorecard"))
                await asyncio.sleep(args.read_pause)

        jobs: list[Coroutine[Any, Any, Any]] = [open_loop(args.assign_rate, until, assign)] if assign_too else []
        if events_too:
            jobs.append(open_loop(args.event_rate, until, events))
        if reads:
            jobs.append(reader())
        counted = count_refreshes(poll, until) if poll is not None else asyncio.sleep(0, 0)
        *_, rounds = await asyncio.gather(*jobs, counted)
    return routes, int(rounds)


def percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds (NaN when there are no values)."""
    if not values:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(np.asarray(values) * 1000, [50, 99])
    return float(p50), float(p99)


def run_backend(label: str, url: str, args: argparse.Namespace, port: int) -> dict[str, dict[str, dict[str, Route]]]:
    """Seed once, then per refresh mode serve and run the alternating phases; per mode and phase the merged route
    measurements (``rounds``: refreshes stored during the phase's repeats, in ``Route.failures`` of a pseudo-route
    ``refreshes``)."""
    started = time.perf_counter()
    key = seed(url, args.units, args.events_per_unit)
    print(f"{label}: seeded {args.units:,} units in {time.perf_counter() - started:.0f} s", flush=True)
    return {mode: run_mode(label, url, key, args, port, mode) for mode in args.refresh_modes.split(",")}


def run_mode(label: str, url: str, key: str, args: argparse.Namespace, port: int,
             mode: str) -> dict[str, dict[str, Route]]:
    """One server with the refresh job ``mode``; per phase the merged route measurements."""
    label = f"{label} [{mode}]"
    env = {"TITRATE_SCORECARD_REFRESH_MODE": mode, "TITRATE_SCORECARD_REFRESH_SECONDS": str(args.refresh_seconds)}
    if args.server_log_level:
        env["TITRATE_LOG_LEVEL"] = args.server_log_level
    server = start_server(url, port, env, args.server_cpus,
                          Path(f"{args.server_log}.{label.split()[0]}.{mode}") if args.server_log else None)
    poll = refresh_stamps(url)
    merged: dict[str, dict[str, Route]] = {p: {r: Route() for r in ("assign", "events", "scorecard", "refreshes")}
                                           for p in PHASES}
    try:
        base = f"http://127.0.0.1:{port}"
        first = httpx.get(f"{base}/v1/experiments/{EXPERIMENT}/scorecard",
                          headers={"Authorization": f"Bearer {key}"}, timeout=300)
        first.raise_for_status()
        print(f"{label}: first scorecard read {first.elapsed.total_seconds():.2f} s; keys "
              f"{sorted(first.json())[:8]}", flush=True)
        # why a warm-up: the first seconds open the client's connections and warm the service's caches; they would
        # land in whichever phase came first
        asyncio.run(phase(base, key, argparse.Namespace(**{**vars(args), "seconds": 3.0}), False, args.units))
        for repeat in range(args.repeats):
            for name in PHASES:
                if args.apart and name != "assign only":
                    got, rounds = asyncio.run(phase_apart(base, key, args, name == "with reads", args.units, poll))
                else:
                    got, rounds = asyncio.run(phase(base, key, args, name == "with reads", args.units, poll,
                                                    events_too=name != "assign only"))
                merged[name]["refreshes"].failures += rounds
                for route, measured in got.items():
                    merged[name][route].latencies += measured.latencies
                    merged[name][route].failures += measured.failures
                    if measured.latencies:
                        merged[name][route].repeat_p99.append(percentiles(measured.latencies)[1])
                summary = ", ".join(f"{r} n={len(m.latencies)} p50/p99 {percentiles(m.latencies)[0]:.1f}/"
                                    f"{percentiles(m.latencies)[1]:.1f} ms" for r, m in got.items() if m.latencies)
                print(f"{label} repeat {repeat + 1} {name}: {summary}; {rounds} refreshes stored", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return merged


def postgres_database(base: str) -> tuple[str, Callable[[], None]]:
    """A fresh scratch database ``titrate_bench_mixed`` on the server of ``base``; its URL and a dropper."""
    url = make_url(normalise_url(base))
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "titrate_bench_mixed" WITH (FORCE)'))
        conn.execute(text('CREATE DATABASE "titrate_bench_mixed"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "titrate_bench_mixed" WITH (FORCE)'))
        admin.dispose()

    return url.set(database="titrate_bench_mixed").render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--events-per-unit", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one phase")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--assign-rate", type=float, default=200.0, help="assign requests per second")
    parser.add_argument("--event-rate", type=float, default=2.0, help="event batches per second")
    parser.add_argument("--event-batch", type=int, default=500, help="events per batch")
    parser.add_argument("--read-pause", type=float, default=0.5, help="seconds between scorecard reads")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--port", type=int, default=8170)
    parser.add_argument("--label", default="", help="a note printed in the section title, e.g. before/after")
    parser.add_argument("--refresh-modes", default="process",
                        help="TITRATE_SCORECARD_REFRESH_MODE values to measure in turn, e.g. process,inline")
    parser.add_argument("--refresh-seconds", type=float, default=10.0, help="TITRATE_SCORECARD_REFRESH_SECONDS")
    parser.add_argument("--server-cpus", default="", help="taskset CPU list for the server, e.g. 0")
    parser.add_argument("--client-cpus", default="", help="CPU list for this load generator, e.g. 1")
    parser.add_argument("--server-log", default="", help="append the server's stderr to PATH.<database>.<mode>")
    parser.add_argument("--apart", action="store_true",
                        help="send the event batches and reads from a second load-generator process, so the one "
                             "timing the assignments sends nothing else")
    parser.add_argument("--server-log-level", default="", help="TITRATE_LOG_LEVEL of the server (WARNING)")
    args = parser.parse_args()
    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    results: dict[str, dict[str, dict[str, dict[str, Route]]]] = {}
    if args.backend in ("sqlite", "both"):
        tmp = Path(tempfile.mkdtemp(prefix="titrate-mixed-"))
        try:
            results["SQLite"] = run_backend("SQLite", f"sqlite:///{tmp}/mixed.db", args, args.port)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    pg = os.environ.get("TITRATE_BENCH_POSTGRES_URL") or os.environ.get("TITRATE_TEST_POSTGRES_URL")
    if args.backend in ("postgresql", "both") and pg:
        url, drop = postgres_database(pg)
        try:
            results["PostgreSQL"] = run_backend("PostgreSQL", url, args, args.port + 1)
        finally:
            drop()
    commit = (os.environ.get("TITRATE_BENCH_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        or str(ROOT))
    print(f"\n### Mixed load{' ' + args.label if args.label else ''} (`bench/mixed_load_scorecards.py`, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit})\n")
    pins = (f" Server pinned to CPU {args.server_cpus}" if args.server_cpus else "") + \
        (f", load generator to CPU {args.client_cpus}." if args.client_cpus else "")
    print(f"Machine: {machine()}. One `titrate serve` worker; {args.units:,} units × "
          f"{args.units * args.events_per_unit:,.0f} events of history; load from a second process (httpx, "
          f"asyncio): assign open-loop {args.assign_rate:g}/s, event batches of {args.event_batch} open-loop "
          f"{args.event_rate:g}/s, scorecard reads closed-loop (one reader, {args.read_pause:g} s pause); "
          f"{args.repeats} × {args.seconds:g} s per phase, phases alternating; percentiles over all repeats; "
          f"scorecard refresh every {args.refresh_seconds:g} s.{pins}\n")
    print("| database | refresh job | phase | refreshes stored | route | requests | non-2xx | p50 ms | p99 ms | "
          "p99 per repeat ms |\n|---|---|---|---:|---|---:|---:|---:|---:|---|")
    for label, by_mode in results.items():
        for mode, by_phase in by_mode.items():
            for name, routes in by_phase.items():
                rounds = routes["refreshes"].failures
                for route, measured in routes.items():
                    if measured.latencies:
                        p50, p99 = percentiles(measured.latencies)
                        each = ", ".join(f"{v:.0f}" for v in measured.repeat_p99)
                        print(f"| {label} | {mode} | {name} | {rounds} | {route} | {len(measured.latencies):,} | "
                              f"{measured.failures} | {p50:.1f} | {p99:.1f} | {each} |")
    for label, by_mode in results.items():
        for mode, by_phase in by_mode.items():
            alone, quiet, loaded = (percentiles(by_phase[p]["assign"].latencies)[1] for p in PHASES)
            alone_each, quiet_each, loaded_each = (float(np.median(by_phase[p]["assign"].repeat_p99))
                                                   for p in PHASES)
            print(f"\n{label}, refresh job {mode}: assign p99 with reads / without (same run): "
                  f"**{loaded / quiet:.2f}×** pooled, {loaded_each / quiet_each:.2f}× by the median of per-repeat "
                  f"p99; the whole mixed load / assign alone: **{loaded / alone:.2f}×** pooled, "
                  f"{loaded_each / alone_each:.2f}× by the median; scorecard-read p50/p99 "
                  f"{percentiles(by_phase['with reads']['scorecard'].latencies)[0]:.0f}/"
                  f"{percentiles(by_phase['with reads']['scorecard'].latencies)[1]:.0f} ms (goal p99 ≤ 50 ms).")


if __name__ == "__main__":
    main()
