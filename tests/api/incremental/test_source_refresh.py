"""Incremental scorecards on an analysis source (both titrate databases): the refresh reads the source's views of
the experiment (first exposure per unit, duplicate event ids once) and stores the per-unit rows in titrate's
database; the stored scorecard equals the live one on the source at the same time, before and after new rows."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.db.engine import Database
from api.db.tables import ScorecardRefresh, ScorecardUnit, ScorecardUnitWindowValue, utc_now
from api.sources import service as sources
from tests.api.incremental.test_refresh import ARMS, _close, _get, _numbers
from tests.api.sources.test_sources import body, make_lake
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOW = utc_now().replace(microsecond=0)


def _write(lake: Path, first: int, last: int, hours_ago: float) -> None:
    """Units ``first..last-1`` of experiment ``src`` (plus a later repeat exposure, another experiment's rows and
    events sent twice under one id) into the lake's ``exp_log``/``ev``."""
    rnd = random.Random(first)
    exposures: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for i in range(first, last):
        unit = f"s{i}"
        at = NOW - timedelta(hours=hours_ago, minutes=i % 30)
        arm = "control" if i % 2 else "b"
        attrs = json.dumps({"country": rnd.choice(["US", "CA"])})
        exposures += [(unit, "src", arm, at, attrs), (unit, "src", "b" if arm == "control" else "control",
                                                     at + timedelta(minutes=5), attrs), (unit, "other", arm, at, attrs)]
        for k in range(rnd.randrange(0, 4)):
            row = (unit, rnd.choice(["purchase", "serving.request", "serving.latency_ms"]),
                   round(rnd.expovariate(0.05), 3), at + timedelta(minutes=rnd.randrange(1, 600)), f"{unit}-{k}")
            events += [row, row] if k == 0 else [row]
    sources.ENGINES.dispose_all()  # why: DuckDB lets one process hold a file through one instance at a time
    with duckdb.connect(str(lake)) as conn:
        conn.executemany("INSERT INTO exp_log VALUES (?, ?, ?, ?, ?)", exposures)
        conn.executemany("INSERT INTO ev VALUES (?, ?, ?, ?, ?)", events)


def _source_experiment(client: TestClient, keys: Keys, tmp_path: Path) -> Path:
    """A DuckDB lake registered as source ``lake`` and experiment ``src`` analysed on it; the lake's path."""
    lake = make_lake(tmp_path / "lake.duckdb")
    admin = keys.headers("admin")
    assert client.post("/v1/sources", json=body("lake", f"duckdb:///{lake}"), headers=admin).status_code == 201
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, key="src", variants=ARMS, analysis={"source": "lake"})
    return lake


def test_a_source_experiment_is_refreshed_from_the_source(client: TestClient, keys: Keys, db: Database,
                                                           tmp_path: Path) -> None:
    lake = _source_experiment(client, keys, tmp_path)
    _write(lake, 0, 300, hours_ago=40)

    first = _get(client, "src", keys)
    assert sum(first["current_n"].values()) == 300
    _close(_numbers(first), _numbers(_get(client, "src", keys, as_of=first["computed_at"])))
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(ScorecardUnit)) == 300  # stored in titrate's database

    _write(lake, 300, 360, hours_ago=3)
    assert _get(client, "src", keys)["computed_at"] == first["computed_at"]
    fresh = _get(client, "src", keys, fresh="true")
    assert sum(fresh["current_n"].values()) == 360
    _close(_numbers(fresh), _numbers(_get(client, "src", keys, as_of=fresh["computed_at"])))
    by_country = _get(client, "src", keys, segment="country")
    _close(_numbers(by_country), _numbers(_get(client, "src", keys, segment="country", as_of=fresh["computed_at"])))
    # the incremental refresh kept the values split at its cutoff: the events of the last lookback in window values
    with db.read() as session:
        state = session.execute(select(ScorecardRefresh.experiment_id, ScorecardRefresh.mode,
                                       ScorecardRefresh.settled_through, ScorecardRefresh.computed_at)).one()
        windowed = session.scalar(select(func.count()).select_from(ScorecardUnitWindowValue)
                                  .where(ScorecardUnitWindowValue.experiment_id == state.experiment_id))
    assert state.mode == "incremental"
    assert state.settled_through is not None
    assert state.settled_through < state.computed_at
    assert windowed


def test_a_source_state_stored_before_the_split_is_refreshed_in_full(client: TestClient, keys: Keys, db: Database,
                                                                     tmp_path: Path) -> None:
    """A source's refresh state without ``settled_through`` (stored before window values existed) holds totals, to
    which no settled delta can be added: the next refresh is a full one, and the card equals the live one."""
    lake = _source_experiment(client, keys, tmp_path)
    _write(lake, 0, 200, hours_ago=5)
    _get(client, "src", keys)
    with db.transaction() as session:
        session.execute(update(ScorecardRefresh).values(settled_through=None))
    fresh = _get(client, "src", keys, fresh="true")
    with db.read() as session:
        state = session.execute(select(ScorecardRefresh.mode, ScorecardRefresh.settled_through)).one()
    assert state.mode == "full"
    assert state.settled_through is not None
    _close(_numbers(fresh), _numbers(_get(client, "src", keys, as_of=fresh["computed_at"])))
