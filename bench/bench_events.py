"""Benchmark event ingestion through ``POST /v1/events`` on SQLite and PostgreSQL, batches of 1k and 10k.

Baseline, same run, same rows: the bare database write with no HTTP and no validation — the service's own write
path (``api.events.repository.insert_event_tuples``: SQLite one driver ``executemany`` of INSERT … ON CONFLICT DO
NOTHING; PostgreSQL binary COPY into a staging table + INSERT … SELECT … ON CONFLICT DO NOTHING) over rows built
before the clock starts. HTTP batches and bare writes alternate, so both see the same load on a shared machine.
Every batch has fresh event ids. Usage:
``python bench/bench_events.py [--postgres URL] [--batches 20] [--profile]`` (PostgreSQL is skipped without a URL;
``bash .ci/start-postgres`` prints one). ``--profile`` runs the server under py-spy and writes
``bench/profiles/events_<database>.svg`` (10k-event batches only).

``--senders K`` (K > 1) measures throughput instead: K clients post 10k-event batches back to back for
``--seconds`` (events/s over the wall time), against K processes doing the bare write for as long (the sum of each
one's events over its own write time: the rows are built outside that time, so the baseline errs high);
``--ingest-processes N`` sets the server's ``TITRATE_EVENTS_INGEST_PROCESSES``. ``--batches`` alternating pairs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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


def bare_writer(url: str, size: int, seconds: float, results: Any) -> None:
    """A process writing fresh ``size``-event batches through the service's write path for ``seconds``; puts
    (events, seconds spent in the writes)."""
    from api.events.repository import insert_event_tuples

    db = Database(url)
    now = datetime.now(UTC)
    template = [(e["event_id"], e["unit_id"], e["name"], e["value"], now, json.dumps(e["attributes"]), now)
                for e in make_batch(size)]
    events, spent, start = 0, 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run = uuid.uuid4().hex[:12]
        rows = [(f"{run}-{i}", *row[1:]) for i, row in enumerate(template)]
        began = time.perf_counter()
        with db.transaction() as session:
            assert insert_event_tuples(session, rows) == size
        spent += time.perf_counter() - began
        events += size
    db.dispose()
    results.put((events, spent))


def bare_rate(url: str, senders: int, size: int, seconds: float) -> float:
    """``senders`` processes doing the bare write at once: the sum of their events/s."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=bare_writer, args=(url, size, seconds, results)) for _ in range(senders)]
    for process in processes:
        process.start()
    rates = [events / spent for events, spent in (results.get() for _ in processes)]
    for process in processes:
        process.join()
    return sum(rates)


def http_rate(port: int, key: str, senders: int, size: int, seconds: float) -> float:
    """``senders`` clients posting fresh pre-serialised ``size``-event batches back to back for ``seconds``:
    accepted events per second of wall time."""
    template = {"events": make_batch(size)}
    run = template["events"][0]["event_id"].split("-")[0].encode()
    text = json.dumps(template).encode()
    # enough fresh batches for 200k events/s (event ids differ by their run prefix only)
    bodies = [text.replace(run, uuid.uuid4().hex[:12].encode()) for _ in range(int(seconds * 20) + 2 * senders)]
    accepted = [0] * senders

    def send(sender: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as http:
            for body in bodies[sender::senders]:
                if time.perf_counter() - start >= seconds:
                    return
                response = http.post("/v1/events", content=body)
                if response.status_code != 200 or response.json()["accepted"] != size:
                    raise RuntimeError(f"unexpected answer: {response.status_code} {response.text[:500]}")
                accepted[sender] += size
            raise RuntimeError("ran out of prepared batches: raise their number")

    start = time.perf_counter()
    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(accepted) / (time.perf_counter() - start)


def throughput(args: argparse.Namespace, targets: list[tuple[str, str]]) -> None:
    """The ``--senders`` mode: HTTP and bare-write throughput phases alternating, medians."""
    rows, loads = [], [os.getloadavg()[0]]
    for port, (name, url) in enumerate(targets, start=8121):
        key = reset(url)
        server = start_server("api.main:app", port, {
            "TITRATE_DATABASE_URL": url, "TITRATE_LOG_LEVEL": "WARNING",
            "TITRATE_EVENTS_INGEST_PROCESSES": str(args.ingest_processes)})
        try:
            http_rate(port, key, 1, 10_000, 0.1)  # warm-up
            https, bares = [], []
            for _ in range(args.batches):
                https.append(http_rate(port, key, args.senders, 10_000, args.seconds))
                bares.append(bare_rate(url, args.senders, 10_000, args.seconds))
                loads.append(os.getloadavg()[0])
            rows.append((name, https, bares))
        finally:
            server.send_signal(2)
            server.wait(timeout=120)
    print(f"\n### Event ingestion, {args.senders} senders ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {machine()}; load average (1 min) {min(loads):.1f}–{max(loads):.1f}. One uvicorn worker with "
          f"TITRATE_EVENTS_INGEST_PROCESSES={args.ingest_processes}; {args.senders} clients posting 10k-event "
          f"batches back to back for {args.seconds:g} s vs {args.senders} processes doing the bare write for as "
          f"long; {args.batches} alternating pairs, medians (each pair in brackets).\n")
    print("| database | `/v1/events` events/s | bare write events/s | ratio |")
    print("|---|---:|---:|---:|")
    for name, https, bares in rows:
        print(f"| {name} | {statistics.median(https):,.0f} ({', '.join(f'{r / 1000:.1f}k' for r in https)}) | "
              f"{statistics.median(bares):,.0f} ({', '.join(f'{r / 1000:.1f}k' for r in bares)}) | "
              f"{statistics.median(https) / statistics.median(bares):.2f} |")


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
    parser.add_argument("--senders", type=int, default=1, help="concurrent clients (> 1: the throughput mode)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a throughput phase")
    parser.add_argument("--ingest-processes", type=int, default=0, help="TITRATE_EVENTS_INGEST_PROCESSES")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="titrate-events-"))
    targets = [("SQLite", f"sqlite:///{tmp}/events.db")]
    if args.postgres:
        targets.append(("PostgreSQL", args.postgres.replace("postgresql://", "postgresql+psycopg://")))
    targets = [t for t in targets if args.only in (None, t[0])]
    if args.senders > 1:
        throughput(args, targets)
        return
    rows = []
    loads = [os.getloadavg()[0]]
    for port, (name, url) in enumerate(targets, start=8111):
        key = reset(url)
        env = {"TITRATE_DATABASE_URL": url, "TITRATE_LOG_LEVEL": "WARNING",
               "TITRATE_EVENTS_INGEST_PROCESSES": str(args.ingest_processes)}
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
