"""The chDB half of ``test_chdb_source.py``, run in a process of its own (``python -m tests.api.sources.chdb_child
SPEC.json``).

Why a process of its own: chDB runs one embedded ClickHouse server per process, bound to the first path it opens
for good; the ClickHouse SQL tests open ``:memory:`` in the pytest process, so a ``chdb://`` file source opened
there afterwards is refused (and opening it first would break them). This process loads the user-shaped rows
(Parquet files written by the test) into a chDB database file, starts titrate's service on the test's own titrate
database, registers the file as source ``ch`` over REST, creates experiment ``ch`` reading it, and writes the
scorecards (at ``as_of``, by country, from the last refresh) and the decisions of ``ch`` and of ``builtin`` (the same
rows sent through titrate's API by the test) to the output file for the test to compare.

SPEC.json: ``{"chdb_path", "exposures_parquet", "events_parquet", "database_url", "admin", "analyst", "as_of",
"out"}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from api.settings import Settings
from scorecards.sql_dialect import prepare_engine
from tests.api.sources.test_sources import EVENTS, EXPOSURES
from tests.factories import create_experiment


def load_chdb(path: Path, exposures: Path, events: Path) -> str:
    """The user's tables ``exp_log`` and ``ev`` (attributes as JSON text, ``DateTime64(6, 'UTC')`` timestamps) in a
    chDB database file at ``path``, loaded from the Parquet files; the source URL."""
    url = f"chdb:///{path}"
    engine = prepare_engine(create_engine(url))
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE exp_log (uid String, exp String, arm String, ts DateTime64(6, 'UTC'), "
                          "attrs String) ENGINE = MergeTree ORDER BY uid"))
        conn.execute(text("CREATE TABLE ev (uid String, event_name String, val Float64, ts DateTime64(6, 'UTC'), "
                          "id String) ENGINE = MergeTree ORDER BY uid"))
        for table, parquet in (("exp_log", exposures), ("ev", events)):
            conn.execute(text(f"INSERT INTO {table} SELECT * FROM file('{parquet}', Parquet)"))
    engine.dispose()
    return url


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Register the chDB source and experiment ``ch``; the JSON of both experiments' reads (see the module)."""
    url = load_chdb(Path(spec["chdb_path"]), Path(spec["exposures_parquet"]), Path(spec["events_parquet"]))
    admin = {"Authorization": f"Bearer {spec['admin']}"}
    analyst = {"Authorization": f"Bearer {spec['analyst']}"}
    settings = Settings(database_url=spec["database_url"], log_json=False, exposure_flush_seconds=0.05,
                        config_refresh_seconds=0.2, api_key_cache_seconds=30)
    out: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        created = client.post("/v1/sources", json={"key": "ch", "url": url, "exposures": EXPOSURES,
                                                   "events": EVENTS}, headers=admin)
        out["source"] = {"status": created.status_code, "body": created.json()}
        if created.status_code != 201:
            return out
        create_experiment(client, analyst, start=True, admin_headers=admin, key="ch", analysis={"source": "ch"})
        params = {"as_of": spec["as_of"]}
        reads = {"as_of": ("scorecard", params), "by_country": ("scorecard", {**params, "segment": "country"}),
                 "latest": ("scorecard", {}), "decision": ("decision", {})}
        for name, (route, query) in reads.items():
            for key in ("builtin", "ch"):
                response = client.get(f"/v1/experiments/{key}/{route}", params=query, headers=analyst)
                out[f"{key}.{name}"] = {"status": response.status_code, "body": response.json()}
        dialect = client.get("/v1/sources/ch", headers=analyst)
        out["source.get"] = {"status": dialect.status_code, "body": dialect.json()}
    return out


def main(argv: list[str]) -> int:
    """Read the spec named by ``argv[1]``, run, write the output file."""
    spec = json.loads(Path(argv[1]).read_text())
    Path(spec["out"]).write_text(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
