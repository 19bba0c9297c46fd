"""Scorecard aggregation benchmark: ``scorecards.sql.scorecard_query`` vs the bare ``GROUP BY`` scan, same run.

Usage:

    python bench/bench_scorecard.py                       # 1M exposed units, 10M events, SQLite (+ PostgreSQL)
    python bench/bench_scorecard.py --units 100000        # smaller
    python bench/bench_scorecard.py --backend sqlite --no-write

PostgreSQL runs when ``TITRATE_BENCH_POSTGRES_URL`` (or ``TITRATE_TEST_POSTGRES_URL``) points at a server; a
scratch database ``titrate_bench`` is created there and dropped afterwards.

Measured per backend, median over ``--repeats``, on the same rows:

1. ``scorecard``: the one-query scorecard aggregation for three metrics (conversion: proportion/any with a 72 h
   window; revenue: mean/sum winsorized; latency: ratio sum/count) — per-unit aggregation then per-variant
   n, Σy, Σy², Σx, Σx², Σxy, pending counts.
2. ``analyse``: the whole ``api.analysis.service.analyse`` (scorecard query + SRM counts + statistics + decision).
3. ``bare scan`` (baseline): ``SELECT variant, count(*), sum(value) FROM exposures JOIN events ON unit_id
   WHERE experiment_id = ? AND name IN (…) GROUP BY variant`` — the cheapest query that touches the same rows.
4. ``pandas`` (peer path, when pandas is installed): the joined rows loaded with ``pandas.read_sql`` and
   aggregated per unit with ``groupby`` (gbstats itself is not installed here, so its — negligible — statistics
   step is not included: this is a lower bound of the peer path).

The section "## Scorecards" of bench/RESULTS.md is appended or replaced (other sections are never touched).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from api import migrate  # noqa: E402
from api.analysis import service  # noqa: E402
from api.db.engine import Database, normalise_url  # noqa: E402
from api.db.tables import Event, Exposure  # noqa: E402
from api.experiments import plan as plan_module  # noqa: E402
from scorecards.sql import MetricSpec, scorecard_query  # noqa: E402

METRICS = [
    {"key": "conversion", "kind": "proportion", "event": "purchase", "aggregation": "any", "numerator": None,
     "denominator": None, "direction": "higher_is_better", "winsorize": None, "window_hours": 72},
    {"key": "revenue", "kind": "mean", "event": "purchase", "aggregation": "sum", "numerator": None,
     "denominator": None, "direction": "higher_is_better", "winsorize": 1000.0, "window_hours": None},
    {"key": "latency", "kind": "ratio", "event": None, "aggregation": None,
     "numerator": {"event": "serving.latency_ms", "aggregation": "sum"},
     "denominator": {"event": "serving.request", "aggregation": "count"}, "direction": "lower_is_better",
     "winsorize": None, "window_hours": None, "margin": 0.05},
]
NAMES = ("purchase", "serving.request", "serving.latency_ms", "page_view")
NOW = datetime.now(UTC).replace(microsecond=0)


def _plan() -> dict[str, Any]:
    return {"hypothesis": {"change": "x", "metric": "conversion", "direction": "increase", "rationale": "y"},
            "type": "ab", "allocation": {"strategy": "fixed"}, "salt": "bench",
            "variants": [{"key": "control", "control": True, "shadow": False},
                         {"key": "v2", "control": False, "shadow": False}],
            "metrics": {"primary": [METRICS[0]], "secondary": [METRICS[1]], "guardrails": [METRICS[2]]},
            "design": {"alpha": 0.05, "power": 0.8, "mde": 0.05, "sequential": False, "cuped": False},
            "decision_rule": plan_module.DECISION_RULE}


def _ts(dt: datetime, dialect: str) -> Any:
    # SQLite: the text format SQLAlchemy writes (UTCDateTime stores naive UTC).
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else dt


def _rows(units: int, events_per_unit: float, seed: int) -> tuple[list[tuple[Any, ...]], Iterator[tuple[Any, ...]]]:
    rng = np.random.default_rng(seed)
    variant = rng.integers(0, 2, units)
    offset_h = rng.uniform(0, 24 * 14, units)  # exposed during the last two weeks
    exposures = [(f"u{i}", "v2" if variant[i] else "control", NOW - timedelta(hours=float(offset_h[i])))
                 for i in range(units)]

    def events() -> Iterator[tuple[Any, ...]]:
        total = int(units * events_per_unit)
        chunk = 1_000_000
        k = 0
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            unit = rng.integers(0, units, n)
            name = rng.choice(len(NAMES), n, p=[0.05, 0.3, 0.3, 0.35])
            delay = rng.exponential(48.0, n)
            value = rng.gamma(2.0, 20.0, n)
            for j in range(n):
                u = int(unit[j])
                at = exposures[u][2] + timedelta(hours=float(delay[j]))
                if at > NOW:
                    at = NOW - timedelta(seconds=1)
                yield (f"e{k}", f"u{u}", NAMES[int(name[j])], float(value[j]), at)
                k += 1

    return exposures, events()


def _load(db: Database, units: int, events_per_unit: float) -> int:
    exposures, events = _rows(units, events_per_unit, seed=1)
    dialect = db.dialect
    plan = _plan()
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO experiments (key, name, owner, type, status, hypothesis, allocation, design, targeting, "
            "traffic, salt, plan, plan_fingerprint, exposure_mismatches, created_at, updated_at, started_at) "
            "VALUES ('bench', 'bench', 'bench', 'ab', 'running', :h, :a, :d, '[]', 1.0, 'bench', :p, :f, 0, "
            ":now, :now, :now)"),
            {"h": _json(plan["hypothesis"]), "a": _json(plan["allocation"]), "d": _json(plan["design"]),
             "p": _json(plan), "f": plan_module.fingerprint(plan), "now": _ts(NOW, dialect)})
        exp_id = int(conn.execute(text("SELECT id FROM experiments WHERE key = 'bench'")).scalar_one())
        conn.execute(text("INSERT INTO variants (experiment_id, key, position, is_control, weight, payload, shadow) "
                          "VALUES (:e, 'control', 0, :t, 0.5, '{}', :f), (:e, 'v2', 1, :f, 0.5, '{}', :f)"),
                     {"e": exp_id, "t": True, "f": False})
        conn.execute(text("INSERT INTO allocations (experiment_id, version, weights, reason, details, created_at) "
                          "VALUES (:e, 1, :w, 'start', '{}', :now)"),
                     {"e": exp_id, "w": _json({"control": 0.5, "v2": 0.5}), "now": _ts(NOW, dialect)})
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        if dialect == "sqlite":
            cur.execute("BEGIN")
            cur.executemany("INSERT INTO exposures (experiment_id, unit_id, variant, allocation_version, exposed_at, "
                            "attributes, source) VALUES (?, ?, ?, 1, ?, '{}', 'server')",
                            ((exp_id, u, v, _ts(at, dialect)) for u, v, at in exposures))
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
                    copy.write_row((exp_id, u, v, 1, at, "{}", "server"))
            with cur.copy("COPY events (event_id, unit_id, name, value, timestamp, attributes, received_at) "
                          "FROM STDIN") as copy:
                for eid, u, n, v, at in events:
                    copy.write_row((eid, u, n, v, at, "{}", NOW))
            raw.commit()
            cur.execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()
    return exp_id


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm the cache once: every variant is measured warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bench(url: str, units: int, events_per_unit: float, repeats: int) -> dict[str, float]:
    migrate.upgrade(url)
    db = Database(url)
    started = time.perf_counter()
    exp_id = _load(db, units, events_per_unit)
    load_s = time.perf_counter() - started
    specs = [MetricSpec.from_definition(m) for m in METRICS]
    exposures_t, events_t = Exposure.__table__, Event.__table__
    names = sorted({"purchase", "serving.request", "serving.latency_ms"})

    def scorecard() -> Any:
        with db.read() as session:
            return session.execute(scorecard_query(exposures_t, events_t, exp_id, specs,  # type: ignore[arg-type]
                                                   datetime.now(UTC))).all()

    def analyse() -> Any:
        with db.read() as session:
            experiment = service.get_analysable(session, "bench")
            return service.analyse(session, experiment)

    in_list = ", ".join(f"'{n}'" for n in names)
    bare_sql = text("SELECT x.variant, count(*), sum(e.value) FROM exposures x JOIN events e ON e.unit_id = x.unit_id "
                    f"WHERE x.experiment_id = :e AND e.name IN ({in_list}) GROUP BY x.variant")

    def bare() -> Any:
        with db.engine.connect() as conn:
            return conn.execute(bare_sql, {"e": exp_id}).all()

    out = {"load_s": load_s, "scorecard_s": _time(scorecard, repeats), "analyse_s": _time(analyse, repeats),
           "bare_s": _time(bare, repeats)}
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - optional
        pd = None
    if pd is not None:
        peer_sql = text("SELECT x.unit_id, x.variant, x.exposed_at, e.name, e.value, e.timestamp FROM exposures x "
                        "LEFT JOIN events e ON e.unit_id = x.unit_id AND e.timestamp >= x.exposed_at "
                        f"AND e.name IN ({in_list}) WHERE x.experiment_id = :e")

        def peer() -> Any:
            with db.engine.connect() as conn:
                frame = pd.read_sql(peer_sql, conn, params={"e": exp_id})
            frame["purchase"] = (frame["name"] == "purchase") * frame["value"].fillna(0.0)
            frame["req"] = (frame["name"] == "serving.request").astype(float)
            frame["lat"] = (frame["name"] == "serving.latency_ms") * frame["value"].fillna(0.0)
            per_unit = frame.groupby(["unit_id", "variant"])[["purchase", "req", "lat"]].sum()
            per_unit["purchase"] = per_unit["purchase"].clip(upper=1000.0)
            return per_unit.groupby("variant").agg(["count", "sum"])

        out["pandas_s"] = _time(peer, max(1, repeats // 2))
    db.dispose()
    return out


def _sqlite_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'bench.db'}"


def _postgres(base: str) -> tuple[str, Callable[[], None]]:
    url = make_url(normalise_url(base))
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "titrate_bench"'))
        conn.execute(text('CREATE DATABASE "titrate_bench"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "titrate_bench" WITH (FORCE)'))
        admin.dispose()

    return url.set(database="titrate_bench").render_as_string(hide_password=False), drop


def _section(results: dict[str, dict[str, float]], units: int, events: int, repeats: int) -> str:
    lines = [
        "## Scorecards", "",
        f"### Scorecard aggregation (`bench/bench_scorecard.py`, {datetime.now(UTC):%Y-%m-%d})", "",
        f"Machine: {platform.machine()}, nproc {os.cpu_count()}, Python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}. {units:,} exposed units (2 variants), {events:,} events (4 names, 3 used by the "
        f"metrics), median of {repeats} warm runs. Metrics: conversion (any, 72 h window), revenue (sum, "
        "winsorized), latency (ratio sum/count). Baseline: the bare join + `GROUP BY variant` scan over the same "
        "rows in the same run. The pandas row is the peer path's lower bound (rows loaded with `pandas.read_sql` "
        "and aggregated per unit; gbstats not installed, its statistics step omitted).", "",
        "| database | scorecard query s | whole `analyse` s | bare scan s | ratio scorecard / scan | pandas s "
        "| load s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, r in results.items():
        pandas_s = f"{r['pandas_s']:.2f}" if "pandas_s" in r else "n/a"
        lines.append(f"| {backend} | {r['scorecard_s']:.2f} | {r['analyse_s']:.2f} | {r['bare_s']:.2f} | "
                     f"**{r['scorecard_s'] / r['bare_s']:.2f}** | {pandas_s} | {r['load_s']:.0f} |")
    lines += ["", "Goal: scorecard ≤ 1.5 × the bare scan. The whole `analyse` adds the SRM count query over the "
              "exposures and the statistics (milliseconds); no cache is involved (warm runs = the database's page "
              "cache only).", ""]
    return "\n".join(lines)


def _write(section: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Scorecards\n.*?(?=^## |\Z)", re.S | re.M)
    current = pattern.sub(section, current) if pattern.search(current) else current.rstrip() + "\n\n" + section
    path.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--events-per-unit", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            results["SQLite"] = _bench(_sqlite_url(Path(tmp)), args.units, args.events_per_unit, args.repeats)
            print("SQLite", results["SQLite"], flush=True)
    pg = os.environ.get("TITRATE_BENCH_POSTGRES_URL") or os.environ.get("TITRATE_TEST_POSTGRES_URL")
    if args.backend in ("postgresql", "both") and pg:
        url, drop = _postgres(pg)
        try:
            results["PostgreSQL"] = _bench(url, args.units, args.events_per_unit, args.repeats)
            print("PostgreSQL", results["PostgreSQL"], flush=True)
        finally:
            drop()
    section = _section(results, args.units, int(args.units * args.events_per_unit), args.repeats)
    print(section)
    if not args.no_write:
        _write(section)


if __name__ == "__main__":
    main()
