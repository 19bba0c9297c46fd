"""Warehouse-scale scorecard on DuckDB: ``scorecards.sql.scorecard_query`` vs the bare two-level ``GROUP BY``, same run.

Usage:

    python bench/warehouse_duckdb.py                          # 10M units, 100M events (issue 14), file on /tmp
    python bench/warehouse_duckdb.py --small                  # 100k units, 1M events: a quick check
    python bench/warehouse_duckdb.py --units 2000000 --events 20000000 --repeats 5 --memory-limit 8GB
    python bench/warehouse_duckdb.py --keep                   # keep the DuckDB file; a later run with the same
                                                              # sizes and seed reuses it instead of regenerating

Data (generated inside DuckDB with SQL — ``range()`` and a seeded ``hash(i, seed, k)`` as the random source, so
the rows are the same whatever the thread count; never through Python rows), in titrate's built-in table shape:

* ``exposures(id, experiment_id, unit_id, variant, allocation_version, exposed_at, attributes JSON)``: one row per
  unit (``u<i>``), two variants 50/50, exposed uniformly over 14 days, ``{"country": …}`` attributes; one
  experiment.
* ``events(unit_id, name, value, timestamp)``: a uniformly random unit each; names ``purchase`` 5 %,
  ``serving.request`` 30 %, ``serving.latency_ms`` 30 %, ``page_view`` 35 % (not read by any metric); value
  exponential with mean 20; timestamp = the unit's exposure + an exponential delay (mean 48 h) − 24 h, so about
  40 % of events precede the exposure (the CUPED pre-period reads some) and some lie after ``as_of``.

Metrics (``as_of`` = 15 days after the first exposure): ``conversion`` proportion (purchase, any, 72 h window);
``revenue`` mean (purchase, sum, winsorized at 500, 168 h window, CUPED over the 24 h before exposure); ``latency``
ratio (Σ serving.latency_ms / count serving.request, 168 h window).

Measured, median over ``--repeats`` warm runs (one untimed warm-up each), the two alternating:

1. ``scorecard``: ``scorecard_query`` compiled for DuckDB through duckdb-engine and run on that connection.
2. ``bare`` (baseline): the minimal hand-written SQL giving the same numbers — per-unit conditional sums over the
   joined events, then per-variant n, Σ, Σ² (and the cross sums of the ratio and CUPED); checked equal to the
   scorecard's every column (counts exactly, sums to 1e-9 relative) before anything is timed.

Peak memory: the process's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` before each phase) —
DuckDB runs in this process — under DuckDB's ``memory_limit`` (``--memory-limit``; beyond it DuckDB spills to
its temp directory next to the file). ``--explain`` writes ``EXPLAIN ANALYZE`` of both queries to the ``--out``
directory. Prints a Markdown section; writes nothing to ``bench/RESULTS.md`` (its sections are written by hand).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
from sqlalchemy import Table, create_engine, text  # noqa: E402

from api.db.tables import Event, Exposure  # noqa: E402
from scorecards.sql import EventAggregate, MetricSpec, scorecard_query  # noqa: E402

EXPOSURES: Table = Exposure.__table__  # type: ignore[assignment]
EVENTS: Table = Event.__table__  # type: ignore[assignment]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
AS_OF = T0 + timedelta(days=15)
EXPERIMENT_ID = 1
CONVERSION = MetricSpec("conversion", "proportion", EventAggregate("purchase", "any"), window_hours=72)
REVENUE = MetricSpec("revenue", "mean", EventAggregate("purchase", "sum"), winsorize=500.0, window_hours=168,
                     cuped_lookback_hours=24)
LATENCY = MetricSpec("latency", "ratio", EventAggregate("serving.latency_ms", "sum"),
                     denominator=EventAggregate("serving.request", "count"), window_hours=168)
METRICS = [CONVERSION, REVENUE, LATENCY]

#: The hand-written baseline: the same numbers as ``scorecard_query`` for ``METRICS``, with nothing else — no
#: finiteness test (the generated values are finite), no JSON check, no casts, plain interval arithmetic.
BARE_SQL = """
WITH u AS (
    SELECT x.variant, x.exposed_at,
        max(CASE WHEN e.name = 'purchase' AND e.timestamp >= x.exposed_at
                  AND e.timestamp < x.exposed_at + INTERVAL 72 HOUR THEN 1 ELSE 0 END) AS conv,
        sum(CASE WHEN e.name = 'purchase' AND e.timestamp >= x.exposed_at
                  AND e.timestamp < x.exposed_at + INTERVAL 168 HOUR THEN e.value END) AS rev,
        sum(CASE WHEN e.name = 'purchase' AND e.timestamp < x.exposed_at THEN e.value END) AS rev_pre,
        sum(CASE WHEN e.name = 'serving.latency_ms' AND e.timestamp >= x.exposed_at
                  AND e.timestamp < x.exposed_at + INTERVAL 168 HOUR THEN e.value END) AS lat,
        count(CASE WHEN e.name = 'serving.request' AND e.timestamp >= x.exposed_at
                    AND e.timestamp < x.exposed_at + INTERVAL 168 HOUR THEN 1 END) AS req
    FROM exposures x
    LEFT JOIN events e ON e.unit_id = x.unit_id
        AND e.name IN ('purchase', 'serving.latency_ms', 'serving.request')
        AND e.timestamp >= x.exposed_at - INTERVAL 24 HOUR AND e.timestamp <= :as_of
    WHERE x.experiment_id = :experiment AND x.exposed_at <= :as_of
    GROUP BY x.id, x.variant, x.exposed_at
), v AS (
    SELECT variant, exposed_at <= :as_of - INTERVAL 72 HOUR AS done72,
        exposed_at <= :as_of - INTERVAL 168 HOUR AS done168,
        conv, least(coalesce(rev, 0), 500.0) AS rev, least(coalesce(rev_pre, 0), 500.0) AS pre,
        coalesce(lat, 0) AS lat, req
    FROM u
)
SELECT variant, count(*) AS exposed,
    count(*) FILTER (done72) AS m0_n, sum(conv) FILTER (done72) AS m0_sy, sum(conv * conv) FILTER (done72) AS m0_syy,
    count(*) FILTER (NOT done72) AS m0_pending,
    count(*) FILTER (done168) AS m1_n, sum(rev) FILTER (done168) AS m1_sy,
    sum(rev * rev) FILTER (done168) AS m1_syy, count(*) FILTER (NOT done168) AS m1_pending,
    sum(pre) FILTER (done168) AS m1_cx, sum(pre * pre) FILTER (done168) AS m1_cxx,
    sum(rev * pre) FILTER (done168) AS m1_cxy,
    count(*) FILTER (done168) AS m2_n, sum(lat) FILTER (done168) AS m2_sy, sum(lat * lat) FILTER (done168) AS m2_syy,
    count(*) FILTER (NOT done168) AS m2_pending, sum(req) FILTER (done168) AS m2_sx,
    sum(req * req) FILTER (done168) AS m2_sxx, sum(lat * req) FILTER (done168) AS m2_sxy
FROM v GROUP BY variant ORDER BY variant
"""

#: Deterministic uniforms in [0, 1) from 53 bits of DuckDB's 64-bit hash of (row, seed, stream).
_GENERATE = """
CREATE OR REPLACE MACRO uni(i, k) AS CAST(hash(i, {seed}, k) >> 11 AS DOUBLE) / 9007199254740992.0;
CREATE OR REPLACE MACRO exposed_of(i) AS
    TIMESTAMPTZ '{t0}' + to_seconds(CAST(floor(uni(i, 1) * 14 * 86400) AS BIGINT));
CREATE TABLE exposures (
    id BIGINT, experiment_id BIGINT, unit_id VARCHAR, variant VARCHAR, allocation_version INTEGER,
    exposed_at TIMESTAMPTZ, attributes JSON);
INSERT INTO exposures
SELECT i + 1, {experiment}, 'u' || i, CASE WHEN uni(i, 2) < 0.5 THEN 'control' ELSE 'treatment' END, 1,
       exposed_of(i),
       CAST(json_object('country', CASE WHEN uni(i, 3) < 0.5 THEN 'US' WHEN uni(i, 3) < 0.8 THEN 'DE' ELSE 'CA' END)
            AS JSON)
FROM range({units}) t(i);
CREATE TABLE events (unit_id VARCHAR, name VARCHAR, value DOUBLE, timestamp TIMESTAMPTZ);
INSERT INTO events
SELECT 'u' || unit,
       CASE WHEN p < 0.05 THEN 'purchase' WHEN p < 0.35 THEN 'serving.request'
            WHEN p < 0.65 THEN 'serving.latency_ms' ELSE 'page_view' END,
       round(-ln(1 - uni(j, 5)) * 20, 3),
       exposed_of(unit) + to_microseconds(CAST((-ln(1 - uni(j, 6)) * 48 - 24) * 3600e6 AS BIGINT))
FROM (SELECT j, CAST(hash(j, {seed}, 4) % {units} AS BIGINT) AS unit, uni(j, 7) AS p FROM range({events}) t(j));
CREATE TABLE bench_meta AS SELECT {units} AS units, {events} AS events, {seed} AS seed;
"""


def machine() -> str:
    """Architecture, cores, CPU model, RAM and Python version of this machine."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, nproc {os.cpu_count()}, {cpu}, {ram:.0f} GiB RAM, Python "
            f"{platform.python_version()}, DuckDB {duckdb.__version__}")


class PeakRss:
    """Peak resident memory of this process over a phase: ``VmHWM`` after resetting it through
    ``/proc/self/clear_refs`` (Linux); where the reset is refused, a 20 ms sampling thread's maximum of ``VmRSS``."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _status(field: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def __enter__(self) -> PeakRss:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self._status("VmRSS"))

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak_mb = self._status("VmHWM")


def generate(path: Path, units: int, events: int, seed: int, threads: int, memory_limit: str) -> float:
    """Create the DuckDB file with the data set (unless it already holds these sizes and seed); seconds taken."""
    if path.exists():
        with duckdb.connect(str(path), read_only=True) as con:
            try:
                meta = con.execute("SELECT units, events, seed FROM bench_meta").fetchone()
            except duckdb.Error:
                meta = None
        if meta == (units, events, seed):
            print(f"reusing {path}", flush=True)
            return float("nan")
        path.unlink()
    started = time.perf_counter()
    with duckdb.connect(str(path), config={"threads": threads, "memory_limit": memory_limit}) as con:
        con.execute(_GENERATE.format(seed=seed, t0=T0.isoformat(), units=units, events=events,
                                     experiment=EXPERIMENT_ID))
        con.execute("CHECKPOINT")
    return time.perf_counter() - started


def compare(scorecard: Sequence[Any], bare: Sequence[Any]) -> int:
    """Check the bare query's rows equal the scorecard's on every column the bare query has (counts exactly, sums
    to 1e-9 relative); the number of values compared. Raises ``AssertionError`` naming the first difference."""
    assert len(scorecard) == len(bare) > 0, (scorecard, bare)
    compared = 0
    for ours, theirs in zip(scorecard, bare, strict=True):
        a, b = ours._mapping, theirs._mapping
        for column, expected in b.items():
            got = a[column]
            if isinstance(expected, str) or column.endswith(("_n", "_pending")) or column == "exposed":
                assert got == expected, f"{column}: scorecard {got!r} vs bare {expected!r}"
            else:
                assert math.isclose(float(got), float(expected), rel_tol=1e-9, abs_tol=1e-9), \
                    f"{a['variant']} {column}: scorecard {got!r} vs bare {expected!r}"
            compared += 1
    return compared


def timed(fn: Callable[[], Any]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds of this process (user + system, every DuckDB thread) and peak RSS (MB) of one call.
    why CPU seconds too: on a shared machine the wall time mostly measures the neighbours; the CPU time the query
    itself burned is the steadier figure to compare two queries by."""
    with PeakRss() as peak:
        cpu = time.process_time()
        started = time.perf_counter()
        fn()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return seconds, cpu, peak.peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--small", action="store_true", help="100k units, 1M events (overrides the sizes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--memory-limit", default="12GB", help="DuckDB memory_limit (default 12GB)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/titrate-warehouse"), help="where the file lives")
    parser.add_argument("--keep", action="store_true", help="keep the DuckDB file for a later run")
    parser.add_argument("--explain", action="store_true", help="write EXPLAIN ANALYZE of both queries to --dir")
    args = parser.parse_args()
    if args.small:
        args.units, args.events = 100_000, 1_000_000
    args.dir.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(args.dir).free / 2**30
    need_gb = args.events * 40 / 2**30 + args.units * 60 / 2**30  # ~40 B/event compressed + spill headroom
    if free_gb < 2 * need_gb:
        sys.exit(f"{args.dir}: {free_gb:.0f} GiB free, about {2 * need_gb:.0f} GiB wanted")
    path = args.dir / f"warehouse-{args.units}-{args.events}.duckdb"
    print(f"machine: {machine()}\ngenerating {args.units:,} units, {args.events:,} events into {path}", flush=True)
    with PeakRss() as gen_peak:
        generate_s = generate(path, args.units, args.events, args.seed, args.threads, args.memory_limit)
    generated = ("reused (generated by an earlier run)" if math.isnan(generate_s) else
                 f"generated in DuckDB in {generate_s:.0f} s (peak RSS {gen_peak.peak_mb:,.0f} MB)")
    print(f"data {generated}; file {path.stat().st_size / 2**30:.2f} GiB", flush=True)

    engine = create_engine(f"duckdb:///{path}", connect_args={
        "read_only": True, "config": {"threads": args.threads, "memory_limit": args.memory_limit}})
    try:
        with engine.connect() as conn:
            query = scorecard_query(EXPOSURES, EVENTS, EXPERIMENT_ID, METRICS, AS_OF)
            compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
            bare_params = {"as_of": AS_OF, "experiment": EXPERIMENT_ID}
            raw: Any = conn.connection.driver_connection

            def run_scorecard() -> list[Any]:
                return list(conn.execute(query).all())

            def run_bare() -> list[Any]:
                return list(conn.execute(text(BARE_SQL), bare_params).all())

            counts = raw.execute("SELECT (SELECT count(*) FROM exposures), (SELECT count(*) FROM events)").fetchone()
            print(f"rows: {counts[0]:,} exposures, {counts[1]:,} events", flush=True)
            # one untimed run each (warm-up) whose results are compared before anything is timed
            first_scorecard, first_bare = run_scorecard(), run_bare()
            compared = compare(first_scorecard, first_bare)
            print(f"bare == scorecard on {compared} values", flush=True)
            times: dict[str, list[float]] = {"scorecard": [], "bare": []}
            cpus: dict[str, list[float]] = {"scorecard": [], "bare": []}
            peaks: dict[str, list[float]] = {"scorecard": [], "bare": []}
            for repeat in range(args.repeats):
                for name, fn in (("scorecard", run_scorecard), ("bare", run_bare)):
                    seconds, cpu, peak = timed(fn)
                    times[name].append(seconds)
                    cpus[name].append(cpu)
                    peaks[name].append(peak)
                    print(f"repeat {repeat + 1}: {name} {seconds:.2f} s (CPU {cpu:.2f} s), peak RSS {peak:.0f} MB",
                          flush=True)
            if args.explain:
                # why DuckDB's profiler rather than an EXPLAIN ANALYZE string: it profiles the very statement
                # duckdb-engine sends, bound parameters included
                for name, fn in (("scorecard", run_scorecard), ("bare", run_bare)):
                    out = args.dir / f"explain-{name}.txt"
                    raw.execute(f"SET enable_profiling = 'query_tree'; SET profiling_output = '{out}'")
                    fn()
                    raw.execute("SET enable_profiling = 'no_output'")
                    print(f"EXPLAIN ANALYZE → {out}", flush=True)
                (args.dir / "scorecard.sql").write_text(f"{compiled.string}\n-- parameters: {compiled.params}\n")
    finally:
        engine.dispose()
        if not args.keep:
            path.unlink(missing_ok=True)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpus.items()}
    ratio = statistics.median(s / b for s, b in zip(times["scorecard"], times["bare"], strict=True))
    cpu_ratio = statistics.median(s / b for s, b in zip(cpus["scorecard"], cpus["bare"], strict=True))
    print(f"\n### DuckDB at {args.events:,} events / {args.units:,} units (`bench/warehouse_duckdb.py`, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {machine()}; DuckDB threads {args.threads}, memory_limit {args.memory_limit}; data "
          f"{generated}. Median of {args.repeats} warm "
          "runs, alternating, after one untimed run each whose results were checked equal "
          f"({compared} values).\n")
    print("| query | median s | runs s | median CPU s | peak RSS MB (max) |\n|---|---:|---|---:|---:|")
    for name, label in (("scorecard", "`scorecard_query` (3 metrics, CUPED, windows) via duckdb-engine"),
                        ("bare", "bare two-level `GROUP BY`, hand-written (baseline)")):
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"| {label} | {med[name]:.2f} | {runs} | {med_cpu[name]:.2f} | {max(peaks[name]):,.0f} |")
    print(f"\nSame-run ratio scorecard / bare (median of per-repeat ratios): **{ratio:.2f}×** wall, "
          f"**{cpu_ratio:.2f}×** CPU (goal ≤ 1.5×).")


if __name__ == "__main__":
    main()
