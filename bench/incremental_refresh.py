"""Incremental scorecard refresh benchmark: full computation vs an incremental refresh after +1 % new events.

Usage:

    python bench/incremental_refresh.py                        # 100k units, 1M events; SQLite, PostgreSQL, DuckDB
    python bench/incremental_refresh.py --units 1000000        # 10M events
    python bench/incremental_refresh.py --backend sqlite --no-write

PostgreSQL runs when ``TITRATE_BENCH_POSTGRES_URL`` (or ``TITRATE_TEST_POSTGRES_URL``) points at a server (a scratch
database ``titrate_bench`` is created and dropped). DuckDB is an analysis *source*: the exposures and events live
in a DuckDB file, the materialised rows in titrate's database (a SQLite file), as ``api.incremental`` stores them.

The data set is ``bench/bench_scorecard.py``'s (units exposed over two weeks, events after exposure; conversion,
winsorized revenue and a latency ratio). The clock is simulated: the full refresh runs at ``NOW + 2 h`` (every
loaded event is older than the lookback), then each round appends +1 % of the events dated in the next two hours
and refreshes at its end with a 1 h lookback (so the previous round's last hour is recomputed too). Two shapes of
new events: ``recent`` — from the most recently exposed 5 % of units (events follow exposure: the usual case),
``random`` — from units drawn uniformly (the worst case: ~9 % of units touched by 1 % of events).

Measured per backend (median over ``--repeats``; each timing includes reading the rows and writing them):

* ``full query`` — ``scorecards.sql.scorecard_query`` on all rows (what every read cost before; the denominator);
* ``full refresh`` — ``api.incremental.service.refresh(full=True)``: every unit's row computed and stored;
* ``incremental`` — ``refresh`` after a round of +1 % events: on SQLite and PostgreSQL (titrate's own tables) the
  new events' per-unit deltas (read from the ``received_at`` index, migration 0010) computed and merged into the
  stored rows inside the database (``repository.merge_arrived``: a temporary table, one upsert); on DuckDB (a
  source, no arrival column) the events dated between the previous cutoff and the new one (refresh time minus the
  lookback) summed per unit on DuckDB and merged into the stored settled values the same way
  (``repository.merge_deltas``), and the window values (events dated after the new cutoff) replaced; ``units``:
  units given a delta or recomputed (on DuckDB plus the units with window values);
* ``stored read`` — the scorecard aggregation over the stored rows (what a read costs now);
* ``floor`` — a lower bound on any exact incremental refresh, timed on the same new rows just before it: the new
  events (received since the watermark; on DuckDB, dated after the watermark minus the lookback, as a source
  without an arrival column must read them) of the plan's event names, joined to the experiment's exposures,
  summed per unit and event name and those sums reduced per variant in the engine; nothing written, a few rows
  returned. Per unit because a variance needs each unit's new total (Σy² moves by 2·y·d + d² per unit), not only
  the variant's; an exact refresh also needs each touched unit's old value y and to store the new one.

The section "## Incremental scorecards" of bench/RESULTS.md is appended or replaced (other sections untouched).
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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, and_, create_engine, func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from api import migrate  # noqa: E402
from api.db.engine import Database, DbTimeouts  # noqa: E402
from api.db.tables import Event, Experiment, Exposure  # noqa: E402
from api.incremental import repository, service  # noqa: E402
from api.incremental.service import RefreshPolicy  # noqa: E402
from bench.bench_scorecard import METRICS, NAMES, NOW, _load, _postgres, _rows, _ts  # noqa: E402
from scorecards.incremental import plan_components  # noqa: E402
from scorecards.sql import MetricSpec, scorecard_query  # noqa: E402

LOOKBACK_HOURS = 1.0
ROUND_HOURS = 2.0
UNBOUNDED = DbTimeouts(statement=None)
POLICY = RefreshPolicy(lookback_hours=LOOKBACK_HOURS, full_refresh_hours=24.0 * 365)
SPECS = [MetricSpec.from_definition(m) for m in METRICS]
EXPOSURES, EVENTS = Exposure.__table__, Event.__table__


@dataclass(frozen=True)
class LakeTables:
    """The DuckDB source's tables (titrate's columns, no ``received_at``): not ``service.OwnTables``, so a refresh
    reads them as any analysis source's (settled deltas and window values by event date)."""

    exposures: Any = EXPOSURES
    events: Any = EVENTS


def _new_events(units: int, n: int, shape: str, start: datetime, seed: int) -> list[tuple[Any, ...]]:
    """``n`` events dated uniformly in ``(start, start + ROUND_HOURS]``: from the most recently exposed 5 % of units
    (``recent``; bench_scorecard exposes unit i at a random time, so "recent" is read from the exposure times) or
    from any unit (``random``)."""
    rng = np.random.default_rng(seed)
    pool = _recent_units(units) if shape == "recent" else np.arange(units)
    unit = rng.choice(pool, n)
    name = rng.choice(len(NAMES), n, p=[0.05, 0.3, 0.3, 0.35])
    value = rng.gamma(2.0, 20.0, n)
    at = rng.uniform(0.0, ROUND_HOURS * 3600.0, n)
    return [(f"n{seed}-{j}", f"u{int(unit[j])}", NAMES[int(name[j])], float(value[j]),
             start + timedelta(seconds=float(at[j]) + 0.001)) for j in range(n)]


def _recent_units(units: int) -> np.ndarray:
    exposures, _ = _rows(units, 0.0, seed=1)  # the same exposure times as the loaded data set (seed 1)
    order = np.argsort([-(at - NOW).total_seconds() for _, _, at in exposures])
    return order[: max(1, units // 20)]


def _append_sql(db: Database, rows: list[tuple[Any, ...]]) -> None:
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        if db.dialect == "sqlite":
            cur.execute("BEGIN")
            cur.executemany("INSERT INTO events (event_id, unit_id, name, value, timestamp, attributes, received_at) "
                            "VALUES (?, ?, ?, ?, ?, '{}', ?)",
                            ((e, u, n, v, _ts(at, "sqlite"), _ts(at, "sqlite")) for e, u, n, v, at in rows))
            cur.execute("COMMIT")
        else:
            with cur.copy("COPY events (event_id, unit_id, name, value, timestamp, attributes, received_at) "
                          "FROM STDIN") as copy:
                for e, u, n, v, at in rows:
                    copy.write_row((e, u, n, v, at, "{}", at))
            raw.commit()
    finally:
        raw.close()


def _duck_load(path: Path, experiment_id: int, units: int, events_per_unit: float) -> Engine:
    import pandas as pd

    engine = create_engine(f"duckdb:///{path}")
    exposures, events = _rows(units, events_per_unit, seed=1)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE exposures (id BIGINT, experiment_id INTEGER, unit_id VARCHAR, "
                          "variant VARCHAR, allocation_version INTEGER, exposed_at TIMESTAMPTZ, attributes JSON)"))
        conn.execute(text("CREATE TABLE events (id BIGINT, unit_id VARCHAR, name VARCHAR, value DOUBLE, "
                          "timestamp TIMESTAMPTZ)"))
        raw = conn.connection.driver_connection
        xf = pd.DataFrame({"id": range(len(exposures)), "experiment_id": experiment_id,
                           "unit_id": [u for u, _, _ in exposures], "variant": [v for _, v, _ in exposures],
                           "allocation_version": 1, "exposed_at": [at for _, _, at in exposures], "attributes": "{}"})
        raw.register("xf", xf)
        raw.execute("INSERT INTO exposures SELECT * FROM xf")
        rows = list(events)
        ef = pd.DataFrame({"id": range(len(rows)), "unit_id": [r[1] for r in rows], "name": [r[2] for r in rows],
                           "value": [r[3] for r in rows], "timestamp": [r[4] for r in rows]})
        raw.register("ef", ef)
        raw.execute("INSERT INTO events SELECT * FROM ef")
    return engine


def _duck_append(engine: Engine, rows: list[tuple[Any, ...]]) -> None:
    import pandas as pd

    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        frame = pd.DataFrame({"id": -1, "unit_id": [r[1] for r in rows], "name": [r[2] for r in rows],
                              "value": [r[3] for r in rows], "timestamp": [r[4] for r in rows]})
        raw.register("nf", frame)
        raw.execute("INSERT INTO events SELECT * FROM nf")
        raw.unregister("nf")


def _floor_query(experiment_id: int, after: datetime, until: datetime, arrival: bool) -> Any:
    """The ``floor`` of the module docstring: the new events of the plan's names (received, or dated, in
    ``(after, until]``) summed per unit and event name with the unit's variant, then per variant and name (count,
    Σ per-unit sum, Σ its square): computed in the engine, a few rows returned."""
    e, x = EVENTS, EXPOSURES
    new = e.c.received_at if arrival else e.c.timestamp
    names = sorted({component[0] for component in plan_components(SPECS)})
    joined = e.join(x, and_(x.c.experiment_id == experiment_id, x.c.unit_id == e.c.unit_id))
    per_unit = (select(x.c.variant, e.c.unit_id, e.c.name, func.count().label("n"), func.sum(e.c.value).label("s"))
                .select_from(joined).where(new > after, new <= until, e.c.name.in_(names))
                .group_by(x.c.variant, e.c.unit_id, e.c.name).subquery("per_unit"))
    u = per_unit.c
    return (select(u.variant, u.name, func.count(), func.sum(u.n), func.sum(u.s), func.sum(u.s * u.s))
            .group_by(u.variant, u.name))


def _median(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bench(db: Database, duck: Engine | None, units: int, events_per_unit: float, repeats: int) -> dict[str, Any]:
    with db.read() as session:
        experiment = session.scalars(select(Experiment).where(Experiment.key == "bench")).one()
        session.expunge(experiment)

    @contextmanager
    def on_duck(session: Session) -> Iterator[tuple[Any, Any]]:
        assert duck is not None
        with duck.connect() as conn:
            yield conn, LakeTables()

    source = None if duck is None else on_duck
    clock = NOW + timedelta(hours=ROUND_HOURS)
    out: dict[str, Any] = {}

    def full_query() -> Any:
        if duck is not None:
            with duck.connect() as conn:
                return conn.execute(scorecard_query(EXPOSURES, EVENTS, experiment.id, SPECS, clock)).all()
        with db.read() as session:
            return session.execute(scorecard_query(EXPOSURES, EVENTS, experiment.id, SPECS, clock)).all()

    def full_refresh() -> Any:
        return service.refresh(db, experiment, POLICY, full=True, now=clock, source=source)

    def stored_read() -> Any:
        with db.read() as session:  # as a read builds the card: window values only where the state has them
            state = repository.state(session, experiment.id)
            assert state is not None
            with service.stored_rows(session, experiment, state) as (conn, store):
                return repository.stored_metric_aggregates(conn, experiment.id, SPECS, clock, store)

    out["load_start"] = os.getloadavg()[0]  # why: the machine is shared; the figures are read beside it
    out["full_query_s"] = _median(full_query, repeats)
    out["full_refresh_s"] = _median(full_refresh, max(1, repeats - 1))
    out["stored_read_s"] = _median(stored_read, repeats)
    new = max(1, int(units * events_per_unit * 0.01))
    for shape in ("recent", "random"):
        times, touched, floors = [], [], []
        for r in range(repeats):
            start = clock
            clock = clock + timedelta(hours=ROUND_HOURS)
            rows = _new_events(units, new, shape, start, seed=1000 + r + (0 if shape == "recent" else 100))
            if duck is not None:
                _duck_append(duck, rows)
            else:
                _append_sql(db, rows)
            # the floor on the same rows (read twice, timed the second time: warm, as the refresh finds them)
            after = start - timedelta(hours=LOOKBACK_HOURS) if duck is not None else start
            floor = _floor_query(experiment.id, after, clock, arrival=duck is None)

            def read_floor(floor: Any = floor) -> Any:
                if duck is not None:
                    with duck.connect() as conn:
                        return conn.execute(floor).all()
                with db.read() as session:
                    return session.execute(floor).all()

            floors.append(_median(read_floor, 1))
            t = time.perf_counter()
            result = service.refresh(db, experiment, POLICY, now=clock, source=source)
            times.append(time.perf_counter() - t)
            assert result.mode == "incremental", result.mode
            touched.append(result.units_recomputed)
        out[f"{shape}_s"] = statistics.median(times)
        out[f"{shape}_units"] = int(statistics.median(touched))
        out[f"{shape}_floor_s"] = statistics.median(floors)
    # the same numbers as a full recomputation (every new row is within the lookback)
    stored = stored_read()
    live = full_query()
    assert sum(int(r._mapping["exposed"]) for r in live) == sum(stored.exposed.values())
    out["full_query_end_s"] = _median(full_query, repeats)
    out["new_events"] = new
    out["load_end"] = os.getloadavg()[0]
    return out


def _section(results: dict[str, dict[str, Any]], units: int, events: int, repeats: int) -> str:
    lines = [
        "## Incremental scorecards", "",
        f"### Full computation vs incremental refresh (`bench/incremental_refresh.py`, {datetime.now(UTC):%Y-%m-%d})",
        "",
        f"Machine: {platform.machine()}, nproc {os.cpu_count()} (shared with other work: wall times are noisy), "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}. {units:,} exposed units, {events:,} "
        f"events (bench_scorecard's data set and metrics), median of {repeats} runs. Each incremental round appends "
        f"+1 % of the events ({events // 100:,}) dated in the next {ROUND_HOURS:g} h and refreshes with a "
        f"{LOOKBACK_HOURS:g} h lookback; `recent`: new events from the most recently exposed 5 % of units, `random`: "
        "from any unit (worst case). DuckDB is an analysis source: rows computed on DuckDB, stored in titrate's "
        "SQLite.", "",
        "| engine | new events | full query s (start / end) | full refresh s | stored read s | floor ms | floor, % of "
        "full query | incremental s | units | % of full query | % of full refresh | incremental / floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, r in results.items():
        full, rebuilt = r["full_query_end_s"], r["full_refresh_s"]
        for shape in ("recent", "random"):
            spent, floor = r[f"{shape}_s"], r[f"{shape}_floor_s"]
            lines.append(
                f"| {engine} | {shape} | {r['full_query_s']:.3f} / {full:.3f} | {rebuilt:.2f} | "
                f"{r['stored_read_s']:.3f} | {1000 * floor:.1f} | {100 * floor / full:.1f} % | {spent:.3f} | "
                f"{r[f'{shape}_units']:,} | **{100 * spent / full:.1f} %** | {100 * spent / rebuilt:.1f} % | "
                f"{spent / floor:.1f}× |")
    lines += ["", "Goal: an incremental refresh after +1 % new events ≤ 5 % of the full computation. `floor`: "
              "the new events summed per unit, read and not written (the module docstring): no exact incremental "
              "refresh can cost less. Two "
              "denominators: the `full query` (the live scorecard aggregation at the end, which every read cost "
              "before; the stricter one, kept as the goal's) and the `full refresh` (every unit's row computed and "
              "stored, what an incremental refresh replaces; it also moves every row through Python into titrate's "
              "database). A read now costs `stored read` (the per-variant aggregation over the stored rows, no "
              "events), or less where the refresh published the card.", ""]
    return "\n".join(lines)


def _write(section: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Incremental scorecards\n.*?(?=^## |\Z)", re.S | re.M)
    current = pattern.sub(section, current) if pattern.search(current) else current.rstrip() + "\n\n" + section
    path.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--events-per-unit", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "duckdb", "all"), default="all")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    if args.backend in ("sqlite", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            migrate.upgrade(url)
            db = Database(url)
            _load(db, args.units, args.events_per_unit)
            results["SQLite"] = _bench(db, None, args.units, args.events_per_unit, args.repeats)
            db.dispose()
            print("SQLite", results["SQLite"], flush=True)
    pg = os.environ.get("TITRATE_BENCH_POSTGRES_URL") or os.environ.get("TITRATE_TEST_POSTGRES_URL")
    if args.backend in ("postgresql", "all") and pg:
        url, drop = _postgres(pg)
        try:
            migrate.upgrade(url)
            db = Database(url, timeouts=UNBOUNDED)  # why: loading millions of rows outlasts the 30 s default
            _load(db, args.units, args.events_per_unit)
            results["PostgreSQL"] = _bench(db, None, args.units, args.events_per_unit, args.repeats)
            db.dispose()
            print("PostgreSQL", results["PostgreSQL"], flush=True)
        finally:
            drop()
    if args.backend in ("duckdb", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'titrate.db'}"
            migrate.upgrade(url)
            db = Database(url)
            experiment_id = _load(db, 0, 0.0)  # titrate's database holds the experiment and the stored rows only
            duck = _duck_load(Path(tmp) / "lake.duckdb", experiment_id, args.units, args.events_per_unit)
            results["DuckDB (source)"] = _bench(db, duck, args.units, args.events_per_unit, args.repeats)
            duck.dispose()
            db.dispose()
            print("DuckDB", results["DuckDB (source)"], flush=True)
    section = _section(results, args.units, int(args.units * args.events_per_unit), args.repeats)
    print(section)
    if not args.no_write:
        _write(section)


if __name__ == "__main__":
    main()
