"""Benchmark event ingestion through ``POST /v1/events`` on SQLite and PostgreSQL, batches of 1k and 10k.

Baseline, same run, same rows: the bare database write with no HTTP and no validation — the service's own write
path (``api.events.repository.insert_event_tuples``: SQLite one driver ``executemany`` of INSERT … ON CONFLICT DO
NOTHING; PostgreSQL binary COPY into a staging table + INSERT … SELECT … ON CONFLICT DO NOTHING) over rows built
before the clock starts. HTTP batches and bare writes alternate, so both see the same load on a shared machine.
Every batch has fresh event ids. Usage:
``python bench/bench_events.py [--postgres URL] [--batches 20] [--profile]`` (PostgreSQL is skipped without a URL;
``bash .ci/start-postgres`` prints one). ``--profile`` runs the server under py-spy and writes
``bench/profiles/events_<database>.svg`` (10k-event batches only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import migrate  # noqa: E402
from api.auth.keys import create_api_key  # noqa: E402
from api.db.engine import Database  # noqa: E402
from bench.bench_assign import machine, start_server  # noqa: E402


def make_batch(size: int) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:12]
    return [{"event_id": f"{run}-{i}", "unit_id": f"u-{i % 5000}", "name": "purchase", "value": float(i % 17),
             "timestamp": "2026-11-23T10:00:00Z", "attributes": {"sku": i % 50}} for i in range(size)]


def reset(url: str) -> str:
    if url.startswith("postgresql"):
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    migrate.upgrade(url)
    db = Database(url)
    with db.transaction() as session:
        _, key = create_api_key(session, "sdk", "bench")
    db.dispose()
    return key


def direct_batch(db: Database, size: int) -> float:
    """One bare write of ``size`` fresh events through the service's write path; events/s."""
    write: Callable[[Session, list[Any]], int]
    try:
        from api.events.repository import insert_event_tuples as write
    except ImportError:  # a tree before the tuple path (the "before" runs of issue 18, item 2): its dict rows
        from api.events.repository import insert_events

        def write(session: Session, rows: list[Any]) -> int:
            keys = ("event_id", "unit_id", "name", "value", "timestamp", "attributes_json", "received_at")
            return insert_events(session, [{**dict(zip(keys, row, strict=True)), "attributes": {}}  # type: ignore[typeddict-item]
                                           for row in rows])
    now = datetime.now(UTC)
    rows = [(e["event_id"], e["unit_id"], e["name"], e["value"], now, json.dumps(e["attributes"]), now)
            for e in make_batch(size)]
    start = time.perf_counter()
    with db.transaction() as session:
        inserted = write(session, rows)
    elapsed = time.perf_counter() - start
    assert inserted == size, inserted
    return size / elapsed


def http_batch(http: httpx.Client, size: int) -> float:
    """One ``POST /v1/events`` of ``size`` fresh events, pre-serialised; events/s."""
    body = json.dumps({"events": make_batch(size)}).encode()
    start = time.perf_counter()
    response = http.post("/v1/events", content=body)
    elapsed = time.perf_counter() - start
    if response.status_code != 200 or response.json()["accepted"] != size:
        raise RuntimeError(f"unexpected answer: {response.status_code} {response.text[:500]}")
    return size / elapsed


def start_profiled(port: int, env: dict[str, str], svg: Path) -> subprocess.Popen[bytes]:
    """The server under ``py-spy record`` (native frames off, idle frames off), writing ``svg`` when it stops."""
    py_spy = Path(sys.executable).parent / "py-spy"
    process = subprocess.Popen(
        [str(py_spy), "record", "-o", str(svg), "--rate", "200", "--",
         sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--workers", "1",
         "--no-access-log", "--log-level", "warning"], cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the profiled server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=os.environ.get("TITRATE_TEST_POSTGRES_URL", ""))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="py-spy flame graphs of the server, 10k batches")
    parser.add_argument("--only", choices=("SQLite", "PostgreSQL"), help="one database only")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="titrate-events-"))
    targets = [("SQLite", f"sqlite:///{tmp}/events.db")]
    if args.postgres:
        targets.append(("PostgreSQL", args.postgres.replace("postgresql://", "postgresql+psycopg://")))
    targets = [t for t in targets if args.only in (None, t[0])]
    rows = []
    loads = [os.getloadavg()[0]]
    for port, (name, url) in enumerate(targets, start=8111):
        key = reset(url)
        env = {"TITRATE_DATABASE_URL": url, "TITRATE_LOG_LEVEL": "WARNING"}
        if args.profile:
            svg = ROOT / "bench" / "profiles" / f"events_{name.lower()}.svg"
            server = start_profiled(port, env, svg)
        else:
            server = start_server("api.main:app", port, env)
        db = Database(url)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                              headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as http:
                for size in (10_000,) if args.profile else (1000, 10_000):
                    http_batch(http, size)  # warm-up: imports, caches, the staging table
                    direct_batch(db, size)
                    http_rates, direct_rates = [], []
                    for _ in range(args.batches):  # alternating, so both see the same machine load
                        http_rates.append(http_batch(http, size))
                        if not args.profile:
                            direct_rates.append(direct_batch(db, size))
                    loads.append(os.getloadavg()[0])
                    rows.append((name, size, statistics.median(http_rates),
                                 statistics.median(direct_rates) if direct_rates else float("nan")))
        finally:
            db.dispose()
            server.send_signal(2)  # SIGINT: uvicorn stops; py-spy then writes its flame graph
            server.wait(timeout=120)
    print(f"\n### Event ingestion ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {machine()}; load average (1 min) {min(loads):.1f}–{max(loads):.1f} during the run. One uvicorn "
          f"worker; one client posting pre-serialised batches back to back; median over {args.batches} batches of "
          "fresh events; HTTP batches and bare writes alternate. PostgreSQL on loopback (fsync off, a test "
          "cluster).\n")
    print("| database | batch | `/v1/events` events/s | bare database write events/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, size, http_rate, direct_rate in rows:
        print(f"| {name} | {size:,} | {http_rate:,.0f} | {direct_rate:,.0f} | {http_rate / direct_rate:.2f} |")


if __name__ == "__main__":
    main()
