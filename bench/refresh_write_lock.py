"""How long a scorecard refresh blocks other SQLite writers (issue 18 item 3): the refresh job's write transactions.

Usage:

    python bench/refresh_write_lock.py --units 20000           # SQLite in a scratch folder

Seeds the mixed-load data set (``bench.mixed_load_scorecards.seed``), then runs, one after the other, a first
(full) refresh, +1 % new events and an incremental refresh, +1 % and a full refresh (``fresh=true``), each while a
second thread inserts one event per short transaction every 10 ms (what event ingestion and the exposure writer do).
Each refresh publishes its scorecard in its write transaction, as ``titrate refresh-worker`` does
(``api.analysis.published``; ``--no-publish``: without).
Reports per refresh: its wall time, the longest write transaction it held (``BEGIN`` to ``COMMIT`` of the
transactions that wrote, from SQLAlchemy's engine events) and the writer's p50 / max insert latency during it.
The refresh runs in this process's thread, as in ``titrate refresh-worker`` (the writer's latency also includes
sharing this process's GIL, so it is an upper bound for a writer in another process).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event, insert, select  # noqa: E402

from api.analysis.published import PUBLISH_ALWAYS  # noqa: E402
from api.db.engine import Database  # noqa: E402
from api.db.tables import Event, Experiment, utc_now  # noqa: E402
from api.incremental import service  # noqa: E402
from api.incremental.service import RefreshPolicy  # noqa: E402
from bench.bench_assign import machine  # noqa: E402
from bench.mixed_load_scorecards import EXPERIMENT, seed  # noqa: E402

POLICY = RefreshPolicy(lookback_hours=24.0, full_refresh_hours=24.0)


class WriteTransactions:
    """Durations of the engine's transactions that ran a write statement."""

    def __init__(self, db: Database) -> None:
        self.durations: list[float] = []
        self._open: dict[int, tuple[float, bool]] = {}
        engine = db.engine
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)

    def _begin(self, conn: Any) -> None:
        self._open[id(conn)] = (time.perf_counter(), False)

    def _statement(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        started, wrote = self._open.get(id(conn), (time.perf_counter(), False))
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        self._open[id(conn)] = (started, wrote or verb in ("INSERT", "DELETE", "UPDATE"))

    def _end(self, conn: Any) -> None:
        started, wrote = self._open.pop(id(conn), (0.0, False))
        if wrote:
            self.durations.append(time.perf_counter() - started)


def add_events(db: Database, units: int, count: int) -> None:
    """``count`` purchases of existing units, received now (+1 % of the history when count = 1 % of it)."""
    rng = np.random.default_rng(count)
    now = utc_now()
    rows = [{"event_id": uuid.uuid4().hex, "unit_id": f"u{int(rng.integers(units))}", "name": "purchase",
             "value": float(rng.gamma(2.0, 10.0)), "timestamp": now, "attributes": {}, "received_at": now}
            for _ in range(count)]
    with db.engine.begin() as conn:
        conn.execute(insert(Event), rows)


def measured(db: Database, label: str, refresh: Any) -> str:
    """Run ``refresh()`` while another thread writes one event per transaction every 10 ms; one table row."""
    writer_db = Database(str(db.engine.url))
    latencies: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            now = utc_now()
            with writer_db.engine.begin() as conn:
                conn.execute(insert(Event), [{"event_id": uuid.uuid4().hex, "unit_id": "u0", "name": "other",
                                              "value": 1.0, "timestamp": now, "attributes": {},
                                              "received_at": now}])
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)

    transactions = WriteTransactions(db)
    thread = threading.Thread(target=writer)
    thread.start()
    started = time.perf_counter()
    result = refresh()
    wall = time.perf_counter() - started
    stop.set()
    thread.join()
    writer_db.dispose()
    ms = np.asarray(latencies) * 1000
    return (f"| {label} | {result.mode} | {result.units_written:,} | {wall:.2f} | "
            f"{max(transactions.durations, default=0) * 1000:.0f} | {np.median(ms):.1f} | {ms.max():.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--events-per-unit", type=float, default=10.0)
    parser.add_argument("--no-publish", action="store_true",
                        help="refresh without publishing the scorecard in the write transaction (as before 0012)")
    args = parser.parse_args()
    publish = None if args.no_publish else PUBLISH_ALWAYS
    tmp = Path(tempfile.mkdtemp(prefix="titrate-writelock-"))
    try:
        url = f"sqlite:///{tmp}/w.db"
        seed(url, args.units, args.events_per_unit)
        db = Database(url)
        with db.read() as session:
            experiment = session.scalars(select(Experiment).where(Experiment.key == EXPERIMENT)).one()
            session.expunge(experiment)
        one_percent = int(args.units * args.events_per_unit / 100)
        def refresh(full: bool = False) -> Any:
            return service.refresh(db, experiment, POLICY, full=full, publish=publish)

        rows = [measured(db, "first refresh", refresh)]
        add_events(db, args.units, one_percent)
        rows.append(measured(db, "+1 % events, incremental", refresh))
        add_events(db, args.units, one_percent)
        rows.append(measured(db, "+1 % events, full", lambda: refresh(full=True)))
        db.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nMachine: {machine()}. SQLite, {args.units:,} units × {args.units * args.events_per_unit:,.0f} events; "
          f"{'no card published' if publish is None else 'each refresh publishes its scorecard'}.\n")
    print("| refresh | mode | units written | wall s | longest write transaction ms | writer p50 ms | "
          "writer max ms |\n|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
