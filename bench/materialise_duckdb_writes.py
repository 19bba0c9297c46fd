"""Writing materialised scorecard rows into a DuckDB source's ``materialise`` schema: the tables as titrate creates
them on DuckDB (no primary keys) against the keyed layout (the baseline: how schemas were made before), same run.

Usage:

    python bench/materialise_duckdb_writes.py               # 100k units (full refresh), 10k units (first write
                                                            # and a 10 % incremental replace)

Times ``api.incremental.repository.replace_rows`` — the write of a refresh, in one transaction, commit included —
on synthetic rows (4 components, 70 % of them nonzero, as a refresh stores them): a full refresh that replaces all
of an experiment's rows (the second write: the rows exist), the first write of a 10k-unit experiment, and an
incremental write replacing 10 % of a 100k-unit experiment's units. Medians after a warm-up write; prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, create_engine  # noqa: E402

from api.incremental import repository  # noqa: E402
from bench.incremental_refresh import _median  # noqa: E402
from scorecards.source_views import materialised_tables  # noqa: E402

LABELS = {"c0": "sum:purchase", "c1": "count:serving.request", "c2": "sum:serving.latency_ms", "c3": "any:purchase"}


def _rows(units: int, seed: int) -> list[dict[str, Any]]:
    rnd, start = random.Random(seed), datetime(2026, 11, 1, tzinfo=UTC)
    return [{"unit_id": f"u{i}", "variant": "control" if i % 2 else "v2", "allocation_version": 1,
             "exposed_at": start + timedelta(seconds=i), "attributes": {"country": rnd.choice(["US", "DE"])},
             "excluded_events": 0, **{k: (rnd.random() if rnd.random() < 0.7 else 0.0) for k in LABELS}}
            for i in range(units)]


def _bench(engine: Engine, keyed: bool, units: int, repeats: int) -> dict[str, float]:
    store = repository.StoreTables(*materialised_tables("cache", keyed=keyed))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA cache")
        for table in store:
            table.create(conn)

    def write(experiment: int, rows: list[dict[str, Any]], everything: bool) -> None:
        with engine.begin() as conn:
            repository.replace_rows(conn, experiment, rows, LABELS, everything=everything, store=store)

    big, small = _rows(units, 1), _rows(units // 10, 2)
    write(1, big, True)
    out = {"full": _median(lambda: write(1, big, True), repeats)}
    experiments = itertools.count(100)
    out["first"] = _median(lambda: write(next(experiments), small, True), repeats)
    changed = _rows(units, 3)[::10]
    out["incremental"] = _median(lambda: write(1, changed, False), repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for keyed in (False, True, False, True):
            engine = create_engine(f"duckdb:///{Path(tmp) / f'lake{keyed}{len(results)}.duckdb'}")
            name = ("keyed (baseline)" if keyed else "unkeyed (titrate's)") + f", run {len(results) // 2 + 1}"
            results[name] = _bench(engine, keyed, args.units, args.repeats)
            engine.dispose()
            print(name, results[name], flush=True)
    print(f"| tables | full refresh, {args.units:,} units s | first write, {args.units // 10:,} units s | "
          f"incremental, {args.units // 10:,} of {args.units:,} units s |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['full']:.2f} | {r['first']:.3f} | {r['incremental']:.3f} |")


if __name__ == "__main__":
    main()
