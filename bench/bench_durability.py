"""Benchmark ``/v1/assign`` with exposure durability ``sync`` against the default ``async``, same run.

``TITRATE_EXPOSURE_DURABILITY=sync`` answers only after the request's exposure is committed (group commit:
concurrent requests share one transaction), so a crash never loses an acknowledged exposure; ``async`` (default)
answers at once and writes within ``TITRATE_EXPOSURE_FLUSH_SECONDS``. Both on SQLite and, when
``TITRATE_BENCH_POSTGRES_URL`` is set, PostgreSQL. Client ``wrk`` (Debian package), a new unit per request,
phases alternating, medians reported. Usage: ``python bench/bench_durability.py [--seconds 5 --repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_assign import machine, seed_database, start_server, wrk  # noqa: E402


def postgres_database(url: str) -> tuple[str, str]:
    """A fresh database on the server of ``url``; returns its URL and name."""
    base = make_url(url)
    name = f"titrate_bench_{uuid.uuid4().hex[:8]}"
    with create_engine(base, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return base.set(database=name).render_as_string(hide_password=False), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="titrate-bench-"))
    databases = {"SQLite": f"sqlite:///{tmp}/durability.db"}
    postgres = os.environ.get("TITRATE_BENCH_POSTGRES_URL")
    if postgres:
        databases["PostgreSQL"], bench_database = postgres_database(postgres)
    env = {"TITRATE_LOG_LEVEL": "WARNING", "TITRATE_LOG_JSON": "false", "TITRATE_SCHEDULER_ENABLED": "false"}
    rows = []
    for label, url in databases.items():
        key = seed_database(url, 0)
        runs: dict[str, list[dict[str, float]]] = {"async": [], "sync": []}
        for repeat in range(args.repeats):
            for mode in ("async", "sync"):
                port = 8150 + repeat * 2 + (mode == "sync")
                server = start_server("api.main:app", port, {**env, "TITRATE_DATABASE_URL": url,
                                                             "TITRATE_EXPOSURE_DURABILITY": mode})
                try:
                    runs[mode].append(wrk(port, key, args.seconds, args.connections))
                finally:
                    server.terminate()
                    server.wait()
        med = {mode: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")}
               for mode, rs in runs.items()}
        ratio = statistics.median(s["rps"] / a["rps"] for a, s in zip(runs["async"], runs["sync"], strict=True))
        rows.append((label, med, ratio))
    print(f"\n### Exposure durability: `sync` vs `async` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {machine()}. Client: wrk -t1 -c{args.connections}, {args.seconds} s per phase, phases "
          f"alternating, median of {args.repeats}. One uvicorn worker; one running 2-variant experiment; a new "
          f"unit per request (every request queues an exposure).\n")
    print("| database | durability | requests/s | p50 ms | p99 ms |\n|---|---|---:|---:|---:|")
    for label, med, _ in rows:
        for mode in ("async", "sync"):
            m = med[mode]
            print(f"| {label} | `{mode}` | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} |")
    for label, _, ratio in rows:
        print(f"\n{label}: same-run ratio sync / async requests/s (median of per-repeat ratios): **{ratio:.2f}**")
    shutil.rmtree(tmp, ignore_errors=True)
    if postgres:
        with create_engine(make_url(postgres), isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{bench_database}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
