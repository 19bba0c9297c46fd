"""End to end on ClickHouse: an experiment analysed on an embedded ClickHouse (chDB) source gives the scorecard of the
same rows sent through titrate's own API (both titrate databases; every number to 1e-9 relative).

chDB runs one embedded server per process, bound for good to the first path it opens, so the chDB half runs in a
process of its own (``tests/api/sources/chdb_child.py``): this test sends the data set of
``test_source_scorecard.py`` through the API for experiment ``builtin`` (its own app, stopped before the child
starts, so no refresh job of this process ever opens the chDB source), writes the user-shaped rows to Parquet, and
the child loads them into a chDB file, registers it as source ``ch`` over REST on a service of its own on the same
titrate database, creates experiment ``ch`` reading it and reads both experiments' scorecards and decisions. This
pytest process never imports chDB, so the ClickHouse SQL tests that open ``:memory:`` here are unaffected.
Skipped, with the reason, when chDB or chdb-sqlalchemy is not installed (both are in the ``dev`` extra).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.db.engine import Database
from api.settings import Settings
from tests.api.sources.test_source_scorecard import AS_OF, _send, _user_rows, assert_same_card
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

REPO = Path(__file__).resolve().parents[3]
#: A bound on the child's whole run (loading, service start, refreshes, reads): a hang fails the test, never blocks.
CHILD_LIMIT_SECONDS = 600


def _chdb_missing() -> str | None:
    """Why the test cannot run (a missing package), or None. ``find_spec`` looks without importing: importing chDB
    here could start its server in this process."""
    missing = [name for name in ("chdb", "chdb_sqlalchemy") if importlib.util.find_spec(name) is None]
    if missing:
        return (f"ClickHouse end-to-end source test SKIPPED: {', '.join(missing)} not installed "
                "(pip install chdb chdb-sqlalchemy, in the dev extra)")
    return None


def _parquet(path: Path, exposures: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> tuple[Path, Path]:
    """The user's rows as two Parquet files (microsecond UTC timestamps, attributes as JSON text)."""
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("CREATE TABLE exp_log (uid VARCHAR, exp VARCHAR, arm VARCHAR, ts TIMESTAMPTZ, attrs VARCHAR)")
        conn.execute("CREATE TABLE ev (uid VARCHAR, event_name VARCHAR, val DOUBLE, ts TIMESTAMPTZ, id VARCHAR)")
        conn.executemany("INSERT INTO exp_log VALUES (?, ?, ?, ?, ?)", exposures)
        conn.executemany("INSERT INTO ev VALUES (?, ?, ?, ?, ?)", events)
        files = (path / "exp_log.parquet", path / "ev.parquet")
        for table, file in zip(("exp_log", "ev"), files, strict=True):
            conn.execute(f"COPY {table} TO '{file}' (FORMAT parquet)")
    return files


def test_a_chdb_source_experiments_scorecard_equals_the_same_rows_sent_through_the_api(
        db: Database, settings: Settings, keys: Keys, database_url: str, tmp_path: Path) -> None:
    if (why := _chdb_missing()) is not None:
        pytest.skip(why)
    analyst, admin, sdk = keys.headers("analyst"), keys.headers("admin"), keys.headers("sdk")
    with TestClient(create_app(settings)) as client:  # stopped before the child starts (see the module docstring)
        create_metrics(client, analyst)
        create_experiment(client, analyst, start=True, admin_headers=admin, key="builtin")
        stored, events = _send(client, sdk, db)
    exposures_file, events_file = _parquet(tmp_path, *_user_rows("ch", stored, events))
    spec = {"chdb_path": str(tmp_path / "lake.chdb"), "exposures_parquet": str(exposures_file),
            "events_parquet": str(events_file), "database_url": database_url, "admin": keys.admin,
            "analyst": keys.analyst, "as_of": AS_OF.isoformat(), "out": str(tmp_path / "out.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    child = subprocess.run([sys.executable, "-m", "tests.api.sources.chdb_child", str(tmp_path / "spec.json")],
                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                           timeout=CHILD_LIMIT_SECONDS, check=False)
    assert child.returncode == 0, child.stderr[-4000:]
    out = json.loads((tmp_path / "out.json").read_text())

    assert out["source"]["status"] == 201, out["source"]
    assert out["source.get"]["body"]["url"].startswith("chdb:///")
    for read in ("as_of", "by_country", "latest", "decision"):
        want, got = out[f"builtin.{read}"], out[f"ch.{read}"]
        assert want["status"] == 200, (read, want)
        assert got["status"] == 200, (read, got)
        assert_same_card(got["body"], want["body"], read)
    card = out["builtin.as_of"]["body"]
    assert sum(v["n"] for v in card["metrics"][0]["variants"]) > 0  # the comparison is of real numbers
