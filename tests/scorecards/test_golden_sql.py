"""The scorecard SQL as BigQuery, Snowflake and Databricks receive it, checked against committed files.

These engines are compile-only here (no warehouse to run on): each query the scorecard uses — the scorecard with
proportion, mean (winsorized, CUPED), ratio and windowed metrics; its segment breakdown; the allocation-version and
version × context strata; the SRM counts; the excluded-exposure count — is compiled by the engine's SQLAlchemy
dialect with ``literal_binds`` and compared with ``tests/scorecards/golden_sql/<dialect>/<query>.sql``. A change to
the SQL shows as a diff to review (by eye: the functions used must exist on that engine); after reviewing it,
``TITRATE_UPDATE_GOLDEN_SQL=1 pytest tests/scorecards/test_golden_sql.py`` rewrites the files.

A dialect whose package is not installed is SKIPPED with the reason (they are in the ``dev`` extra).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select
from sqlalchemy.engine import Dialect

from scorecards.source_views import TableMapping, events_view, exposures_view
from scorecards.sql import (
    excluded_exposures_query,
    exposure_counts_query,
    scorecard_query,
    version_metric_query,
    version_segment_metric_query,
)
from tests.scorecards.test_sql import EVENTS, EXPOSURES
from tests.scorecards.test_sql_duckdb import AS_OF, CONVERSION, EARLIEST, METRICS, REVENUE, VALUE_PER_VIEW

GOLDEN = Path(__file__).parent / "golden_sql"
UPDATE = os.environ.get("TITRATE_UPDATE_GOLDEN_SQL") == "1"

#: dialect name → (module, dialect class, the distribution to install).
DIALECTS: dict[str, tuple[str, str, str]] = {
    "bigquery": ("sqlalchemy_bigquery", "BigQueryDialect", "sqlalchemy-bigquery"),
    "snowflake": ("snowflake.sqlalchemy.snowdialect", "SnowflakeDialect", "snowflake-sqlalchemy"),
    "databricks": ("databricks.sqlalchemy", "DatabricksDialect", "databricks-sqlalchemy"),
}

EXPERIMENT_ID = 42

#: query name → the query on (exposures, events).
QUERIES: dict[str, Callable[[Any, Any], Select[Any]]] = {
    "scorecard": lambda x, e: scorecard_query(x, e, EXPERIMENT_ID, METRICS, AS_OF, earliest=EARLIEST),
    "segment": lambda x, e: scorecard_query(x, e, EXPERIMENT_ID, METRICS, AS_OF, segment="country",
                                            earliest=EARLIEST),
    "version_strata": lambda x, e: version_metric_query(x, e, EXPERIMENT_ID, VALUE_PER_VIEW, AS_OF,
                                                        earliest=EARLIEST),
    "context_strata": lambda x, e: version_segment_metric_query(x, e, EXPERIMENT_ID, CONVERSION, AS_OF, "country",
                                                                earliest=EARLIEST),
    "cuped_version_strata": lambda x, e: version_metric_query(x, e, EXPERIMENT_ID, REVENUE, AS_OF,
                                                              earliest=EARLIEST),
    "srm_counts": lambda x, e: exposure_counts_query(x, EXPERIMENT_ID, AS_OF, segment="country",
                                                     segment_strings_only=True, earliest=EARLIEST),
    "excluded_exposures": lambda x, e: excluded_exposures_query(x, EXPERIMENT_ID, EARLIEST, AS_OF),
}

#: A user's tables (``analytics.exp_log``, ``analytics.ev``) mapped onto titrate's columns, as DESIGN.md's example.
EXPOSURE_MAP = TableMapping(table="analytics.exp_log", columns={
    "unit_id": "uid", "experiment": "exp", "variant": "arm", "timestamp": "ts", "attributes": "attrs"})
EVENT_MAP = TableMapping(table="analytics.ev", columns={
    "unit_id": "uid", "name": "event_name", "value": "val", "timestamp": "ts", "event_id": "id"})
#: titrate's allocation history of the experiment: (version, created_at).
HISTORY = [(1, AS_OF - timedelta(days=20)), (2, AS_OF - timedelta(days=9)), (3, AS_OF - timedelta(days=4))]

#: table shape → (exposures, events): titrate's own tables, and a user's through ``scorecards.source_views``.
SHAPES: dict[str, Callable[[], tuple[Any, Any]]] = {
    "builtin": lambda: (EXPOSURES, EVENTS),
    "source": lambda: (exposures_view(EXPOSURE_MAP, "checkout-redesign", EXPERIMENT_ID, HISTORY),
                       events_view(EVENT_MAP)),
}


def dialect(name: str) -> Dialect:
    """The named dialect (no connection, no driver), or a skip naming the package to install."""
    module, cls, distribution = DIALECTS[name]
    loaded = pytest.importorskip(module, reason=f"{name} SQL is checked only with {distribution} installed "
                                                f"(the dev extra)")
    instance: Dialect = getattr(loaded, cls)()
    return instance


def compile_sql(query: Select[Any], on: Dialect) -> str:
    """``query`` as the engine receives it, values inline, with a final newline."""
    return str(query.compile(dialect=on, compile_kwargs={"literal_binds": True})).strip() + "\n"


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("query", sorted(QUERIES))
@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_generated_sql_matches_the_committed_file(name: str, query: str, shape: str) -> None:
    sql = compile_sql(QUERIES[query](*SHAPES[shape]()), dialect(name))
    path = GOLDEN / name / f"{shape}_{query}.sql"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
    assert path.exists(), f"no golden file {path}: run with TITRATE_UPDATE_GOLDEN_SQL=1 and review it"
    assert sql == path.read_text(), (f"{name} SQL of {query} ({shape} tables) differs from {path}; review the "
                                     f"difference, then TITRATE_UPDATE_GOLDEN_SQL=1 rewrites it")


def test_every_golden_file_is_still_generated() -> None:
    """A file whose query, shape or dialect is gone is left over, not silently kept."""
    expected = {f"{name}/{shape}_{query}.sql" for name in DIALECTS for shape in SHAPES for query in QUERIES}
    present = {str(p.relative_to(GOLDEN)) for p in GOLDEN.glob("*/*.sql")}
    assert present <= expected, sorted(present - expected)


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_each_engine_gets_its_own_spelling_of_the_dialect_specific_pieces(name: str) -> None:
    """The hooks of ``scorecards/sql_dialect.py`` apply (a dialect falling back to the default spellings would
    send PostgreSQL's ``jsonb_typeof`` and ``* INTERVAL '1 hour'``, and a 4-byte FLOAT on Databricks)."""
    segment = compile_sql(QUERIES["context_strata"](EXPOSURES, EVENTS), dialect(name))
    scorecard = compile_sql(QUERIES["scorecard"](EXPOSURES, EVENTS), dialect(name))
    for sql in (segment, scorecard):
        assert "jsonb_typeof" not in sql
        assert "INTERVAL '1 hour'" not in sql
        assert "->>" not in sql
    window = {"bigquery": "TIMESTAMP_ADD(", "snowflake": "DATEADD(microsecond, ",
              "databricks": "timestampadd(MICROSECOND, "}[name]
    assert window in scorecard
    strings = {"bigquery": "JSON_TYPE(", "snowflake": "AS_VARCHAR(GET(", "databricks": "schema_of_variant("}[name]
    assert strings in segment
    double = {"bigquery": "AS FLOAT64)", "snowflake": "AS FLOAT)", "databricks": "AS DOUBLE)"}[name]
    assert double in scorecard
    assert "2026-03-12 09:30:00.250000" in scorecard  # as_of, to the microsecond
    source = compile_sql(QUERIES["segment"](*SHAPES["source"]()), dialect(name))
    assert "AS JSON)" not in source  # no CAST to JSON there: the view parses the attributes' text
    if name == "bigquery":
        assert "DATETIME '" not in scorecard  # a civil time, which BigQuery will not compare with a TIMESTAMP
        assert "`json_string_" not in segment  # GROUP BY by the expression, not by a label the SELECT lacks
    if name == "databricks":
        assert "AS FLOAT)" not in scorecard  # a 4-byte single there
        assert r"variant_get(x.attributes, '$[\'country\']', 'VARIANT')" in segment  # one literal path


def test_the_dialect_modules_import_without_warnings() -> None:
    """pytest turns warnings into errors; importing a dialect must not raise one (checked once, loudly)."""
    for module, _, _ in DIALECTS.values():
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            importlib.import_module(module)
