"""Pages an incremental scorecard refresh writes on titrate's SQLite, against the pages the stored rows occupy.

Usage:

    python bench/incremental_write_pages.py                  # 100k units, 1M events, 2 rounds of each shape

Same data set, clock and rounds as ``bench/incremental_refresh.py`` (+1 % of the events per round, 1 h lookback;
``recent`` and ``random`` new events). Before each refresh the WAL is checkpointed and truncated, so the WAL's size
after it is the pages the refresh wrote (a WAL frame is a page plus a 24-byte header). The stored tables' sizes come
from SQLite's ``dbstat``. Prints a Markdown table; nothing is written to ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from api import migrate  # noqa: E402
from api.db.engine import Database  # noqa: E402
from api.db.tables import Experiment  # noqa: E402
from api.incremental import service  # noqa: E402
from bench.bench_scorecard import NOW, _load  # noqa: E402
from bench.incremental_refresh import POLICY, ROUND_HOURS, _append_sql, _new_events  # noqa: E402

STORED = ("scorecard_unit_values", "sqlite_autoindex_scorecard_unit_values_1", "scorecard_units",
          "sqlite_autoindex_scorecard_units_1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        url = f"sqlite:///{path}"
        migrate.upgrade(url)
        db = Database(url)
        _load(db, args.units, 10.0)
        with db.read() as session:
            experiment = session.scalars(select(Experiment).where(Experiment.key == "bench")).one()
            session.expunge(experiment)
        clock = NOW + timedelta(hours=ROUND_HOURS)
        service.refresh(db, experiment, POLICY, full=True, now=clock)
        raw = sqlite3.connect(path)
        page_size = int(raw.execute("PRAGMA page_size").fetchone()[0])
        sizes = {name: int(raw.execute("SELECT count(*) FROM dbstat WHERE name = ?", (name,)).fetchone()[0])
                 for name in STORED}
        stored_pages = sum(sizes.values())
        print(f"stored pages: {sizes} (page size {page_size})")
        print("| shape | round | units | refresh s | pages written | % of the stored rows' pages |")
        print("|---|---:|---:|---:|---:|---:|")
        new = max(1, int(args.units * 10.0 * 0.01))
        for shape in ("recent", "random"):
            for r in range(args.rounds):
                start, clock = clock, clock + timedelta(hours=ROUND_HOURS)
                _append_sql(db, _new_events(args.units, new, shape, start,
                                            seed=1000 + r + (0 if shape == "recent" else 100)))
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                started = time.perf_counter()
                result = service.refresh(db, experiment, POLICY, now=clock)
                seconds = time.perf_counter() - started
                written = os.path.getsize(f"{path}-wal") // (page_size + 24)
                print(f"| {shape} | {r + 1} | {result.units_recomputed:,} | {seconds:.3f} | {written:,} | "
                      f"{100 * written / stored_pages:.0f} % |")
        raw.close()
        db.dispose()


if __name__ == "__main__":
    main()
