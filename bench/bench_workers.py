"""Multi-worker scaling of ``/v1/assign``: ``titrate serve --workers 2`` vs ``--workers 1`` on the same load.

The same SQLite database (one running 2-variant experiment, ``bench_assign.seed_database``), the same ``wrk``
client (``-t1 -c32``, a random unit per request); phases alternate 1 worker / 2 workers and repeat, medians
reported with the load average before each phase. ``--pin`` runs the server with ``taskset`` on CPUs
``0..n-2`` and wrk on the last CPU, where the machine has more than 2 (on 2 CPUs a pinned 2-worker server
would share its cores with wrk anyway, so nothing is pinned and the table says so).
Usage: ``python bench/bench_workers.py [--seconds 6] [--repeats 3] [--pin]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_assign import machine, seed_database, wrk  # noqa: E402


def serve(workers: int, port: int, url: str, cpus: str | None) -> subprocess.Popen[bytes]:
    """``titrate serve`` with ``workers`` processes (optionally under ``taskset -c cpus``), once it answers."""
    command = [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", str(workers),
               "--no-migrate"]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    env = {**os.environ, "TITRATE_DATABASE_URL": url, "TITRATE_LOG_LEVEL": "WARNING", "TITRATE_LOG_JSON": "false"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError("titrate serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pin", action="store_true")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    pinned = args.pin and cpus > 2
    server_cpus = f"0-{cpus - 2}" if pinned else None
    tmp = Path(tempfile.mkdtemp(prefix="titrate-workers-"))
    url = f"sqlite:///{tmp}/workers.db"
    key = seed_database(url, 0)
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    loads: list[float] = []
    for _ in range(args.repeats):
        for workers in (1, 2):
            port = 8130 + workers
            server = serve(workers, port, url, server_cpus)
            try:
                loads.append(os.getloadavg()[0])
                results[workers].append(wrk(port, key, args.seconds, 32))
            finally:
                server.terminate()
                server.wait()
    med = {w: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")} for w, runs in results.items()}
    ratio = statistics.median(b["rps"] / a["rps"] for a, b in zip(results[1], results[2], strict=True))
    print(f"\n### Workers 1 vs 2 ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {machine()}; load average {min(loads):.1f}–{max(loads):.1f} during the phases. "
          f"wrk -t1 -c32, {args.seconds} s per phase, alternating, median of {args.repeats}; "
          + (f"server pinned to CPUs {server_cpus}, wrk on CPU {cpus - 1}." if pinned else
             "nothing pinned (2 CPUs: a pinned 2-worker server would share wrk's core)."))
    print("\n| `titrate serve` | requests/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for workers in (1, 2):
        m = med[workers]
        print(f"| `--workers {workers}` | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} |")
    print(f"\nSame-run ratio 2 workers / 1 worker (median of per-repeat ratios): **{ratio:.2f}**.")


if __name__ == "__main__":
    main()
