"""Benchmark event ingestion through ``POST /v1/events`` on SQLite and PostgreSQL, batches of 1k and 10k.

Baseline, same run, same rows: the bare database write with no HTTP and no validation (SQLite: one
``executemany`` INSERT … ON CONFLICT DO NOTHING through the driver; PostgreSQL: the same COPY + INSERT …
SELECT the service uses). Every batch has fresh event ids. Usage:
``python bench/bench_events.py [--postgres URL] [--batches 20]`` (PostgreSQL is skipped without a URL;
``bash .ci/start-postgres`` prints one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import migrate  # noqa: E402
from api.auth.keys import create_api_key  # noqa: E402
from api.db.engine import Database  # noqa: E402
from api.events.repository import insert_events  # noqa: E402
from bench.bench_assign import machine, start_server  # noqa: E402


def make_batch(size: int) -> list[dict[str, object]]:
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


def direct_rate(url: str, size: int, batches: int) -> float:
    db = Database(url)
    now = datetime.now(UTC)
    rates = []
    for _ in range(batches):
        rows = [{**e, "timestamp": now, "received_at": now} for e in make_batch(size)]
        start = time.perf_counter()
        with db.transaction() as session:
            inserted = insert_events(session, rows)
        rates.append(inserted / (time.perf_counter() - start))
    db.dispose()
    return statistics.median(rates)


def http_rate(base: str, key: str, size: int, batches: int) -> float:
    rates = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"}, timeout=120) as http:
        for _ in range(batches):
            body = json.dumps({"events": make_batch(size)}).encode()
            start = time.perf_counter()
            response = http.post("/v1/events", content=body)
            elapsed = time.perf_counter() - start
            if response.status_code != 200 or response.json()["accepted"] != size:
                raise RuntimeError(f"unexpected answer: {response.status_code} {response.text[:500]}")
            rates.append(size / elapsed)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=os.environ.get("TITRATE_TEST_POSTGRES_URL", ""))
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="titrate-events-"))
    targets = [("SQLite", f"sqlite:///{tmp}/events.db")]
    if args.postgres:
        targets.append(("PostgreSQL", args.postgres.replace("postgresql://", "postgresql+psycopg://")))
    rows = []
    for port, (name, url) in enumerate(targets, start=8111):
        key = reset(url)
        server = start_server("api.main:app", port, {"TITRATE_DATABASE_URL": url, "TITRATE_LOG_LEVEL": "WARNING"})
        try:
            for size in (1000, 10_000):
                http = http_rate(f"http://127.0.0.1:{port}", key, size, args.batches)
                direct = direct_rate(url, size, args.batches)
                rows.append((name, size, http, direct))
        finally:
            server.terminate()
            server.wait()
    print(f"\n### Event ingestion ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {machine()}. One uvicorn worker; one client posting pre-serialised batches back to back; "
          f"median over {args.batches} batches of fresh events; the baseline writes the same rows straight to the "
          "database in the same run. PostgreSQL 15 on loopback (fsync off, a test cluster).\n")
    print("| database | batch | `/v1/events` events/s | bare database write events/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, size, http, direct in rows:
        print(f"| {name} | {size:,} | {http:,.0f} | {direct:,.0f} | {http / direct:.2f} |")


if __name__ == "__main__":
    main()
