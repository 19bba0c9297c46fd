"""Service settings, read from ``TITRATE_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError


class Settings(BaseSettings):
    """Every tunable of the service; one place, typed, documented in README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="TITRATE_", env_file=None, extra="ignore", protected_namespaces=())

    database_url: str = Field("sqlite:///./titrate.db", description="SQLAlchemy URL of the database")
    db_pool_size: int = Field(10, ge=1, description="connection pool size (PostgreSQL)")
    # Database faults (api/db/engine.py, api/db/faults.py): every wait is bounded, faults answer 503.
    db_connect_timeout_seconds: int = Field(
        5, ge=2, le=300, description="PostgreSQL connect timeout, also the pre-ping's bound on a pooled connection"
    )
    db_statement_timeout_seconds: float = Field(
        30.0, gt=0, le=86_400, description="PostgreSQL statement_timeout; a server silent for this plus the connect "
                                           "timeout (e.g. frozen) has its connection closed",
    )
    db_pool_timeout_seconds: float = Field(10.0, gt=0, le=600, description="longest wait for a free pooled connection")
    db_sqlite_busy_timeout_seconds: float = Field(
        5.0, ge=0, le=600, description="SQLite: longest wait for another writer's lock before 503"
    )
    db_retry_after_seconds: int = Field(
        5, ge=1, le=3600, description="Retry-After of the 503 answered while the database is unavailable"
    )
    log_level: str = Field("INFO", description="root log level")
    log_json: bool = Field(True, description="structured JSON logs")
    config_refresh_seconds: float = Field(
        1.0, gt=0, description="how often each worker checks the config version for changes by other workers"
    )
    api_key_cache_seconds: float = Field(30.0, ge=0, description="how long a verified API key is cached")
    exposure_flush_seconds: float = Field(0.2, gt=0, description="exposure writer flush period")
    exposure_batch_size: int = Field(2000, ge=1, description="exposure writer rows per insert")
    exposure_queue_max: int = Field(
        1_000_000, ge=1000,
        description="exposures held in memory while the database is unavailable; past it /v1/assign drops (and "
                    "counts) exposures and /v1/exposures answers 503 with Retry-After",
    )
    exposure_durability: Literal["async", "sync"] = Field(
        "async", description="async: exposures are written within exposure_flush_seconds (a crash loses at most "
                             "that window); sync: /v1/assign answers only after its exposures are committed",
    )
    exposure_sync_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="sync durability: longest wait for the commit before /v1/assign answers 503",
    )
    max_events_per_batch: int = Field(
        10_000, ge=1, le=10_000, description="largest batch of POST /v1/events and POST /v1/exposures (422 above)"
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="largest request body (413 above), except on the batch routes below"
    )
    max_batch_body_bytes: int = Field(
        16_777_216, ge=1024,
        description="largest request body of POST /v1/events, /v1/exposures and /v1/experiments/{key}/predict",
    )
    events_ingest_processes: int = Field(
        0, ge=0, le=64, description="processes per worker that parse and store POST /v1/events batches (0: in the "
                                    "worker itself); needs a database file or server"
    )
    events_ingest_priority: Literal["normal", "idle"] = Field(
        "normal", description="CPU priority of the ingestion processes: idle runs them only on a core the serving "
                              "worker does not want (Linux SCHED_IDLE, elsewhere nice 19)"
    )
    max_attributes_bytes: int = Field(8192, ge=256, description="largest JSON of a unit's attributes")
    max_attribute_keys: int = Field(
        100, ge=1, description="most keys in a unit's attributes, counted at every nesting level (422 above)"
    )
    max_attribute_depth: int = Field(
        8, ge=1, le=32, description="deepest nesting of objects/lists in a unit's attributes (1 = flat; 422 above)"
    )
    timestamp_min: AwareDatetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC), description="earliest event/exposure timestamp and as_of accepted (422 "
                                                      "before); stored rows before it are left out of analysis"
    )
    timestamp_max_future_hours: float = Field(
        24.0, ge=0, le=8760, description="how far past the server's clock a timestamp or as_of may lie (422 beyond)"
    )
    scheduler_enabled: bool = Field(True, description="run periodic allocation jobs in this process")
    scheduler_interval_seconds: float = Field(30.0, gt=0, description="how often the allocation job runs")
    # Incremental scorecards (api/incremental/): materialised per-unit rows, refreshed by a job (one replica).
    scorecard_refresh_seconds: float = Field(
        60.0, gt=0, description="how often the scorecard refresh job refreshes running and paused experiments "
                                "(runs where scheduler_enabled)"
    )
    scorecard_refresh_mode: Literal["process", "inline", "off"] = Field(
        "process", description="where the refresh job runs: process — in its own process, which titrate serve "
                               "starts beside its workers (or run titrate refresh-worker yourself); inline — in a "
                               "thread of each service process (embedded use, tests); off — nowhere (reads refresh "
                               "an experiment never refreshed, and ?fresh=true)"
    )
    scorecard_refresh_nice: int = Field(
        10, ge=0, le=19, description="how far titrate refresh-worker lowers its own CPU priority (added to its nice "
                                     "value), so the operating system gives the serving workers the cores first"
    )
    scorecard_lookback_hours: float = Field(
        24.0, ge=0, le=8760, description="an incremental refresh recomputes units with rows dated after the last "
                                         "refresh minus this: later-arriving rows are exact up to this lateness"
    )
    scorecard_publish_read_hours: float = Field(
        24.0, gt=0, le=8760, description="the refresh job publishes an experiment's default scorecard with each "
                                         "refresh (a plain read is then a lookup) while it was read within this "
                                         "many hours; an experiment nobody reads pays no card per refresh"
    )
    scorecard_full_refresh_hours: float = Field(
        24.0, gt=0, le=8760, description="a refresh recomputes every unit when this long has passed since the last "
                                         "full one (picks up rows later than the lookback)"
    )
    # Analysis sources (api/sources/): users' databases read in place; every wait on them bounded.
    source_connect_timeout_seconds: float = Field(
        5.0, gt=0, le=300, description="longest wait to connect to an analysis source (503 beyond)"
    )
    source_statement_timeout_seconds: float = Field(
        30.0, gt=0, le=86_400, description="longest a query on an analysis source may run (503 beyond)"
    )
    source_pool_size: int = Field(5, ge=1, le=100, description="pooled connections per analysis source (networked)")
    source_duckdb_allowed_directories: list[str] = Field(
        default_factory=list, max_length=100,
        description="directories (or URL prefixes) a DuckDB source's views and sql may read besides its own "
                    "file's directory; every other file system or network access from a DuckDB source is refused"
    )
    # Model serving (api/serving/).
    serving_batch_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="how long a model's dynamic batcher waits for concurrent requests to join"
    )
    serving_flush_seconds: float = Field(0.2, gt=0, description="serving events / prediction log flush period")
    serving_queue_max: int = Field(
        200_000, ge=100, description="serving records held in memory before new ones are dropped (and counted)"
    )
    serving_retain_seconds: float = Field(
        10.0, gt=0, description="how often models no served experiment references are unloaded"
    )
    serving_shadow_max_pending: int = Field(
        256, ge=0, description="shadow runs in flight before further shadow copies are skipped (0 disables shadow)"
    )
    serving_report_max_rows: int = Field(
        20_000, ge=100, description="most recent predictions per variant the /serving report reads"
    )
    serving_predictions_retain_days: float = Field(
        30.0, ge=0, description="prediction log rows older than this are purged by the scheduler (0 keeps all)"
    )
    serving_validate_full: bool = Field(
        True, description="load the weights once at POST /v1/models so a broken model is a 422, not a 503 later"
    )
    # Remote model variants (models/remote.py): calls to inference servers.
    serving_remote_max_in_flight: int = Field(
        8, ge=1, le=1024, description="inference requests in flight at once per remote endpoint (more queue and batch)"
    )
    serving_remote_retries: int = Field(
        1, ge=0, le=5, description="retries of a failed inference request (connection refused/reset, 502/503/504), "
                                   "within its timeout_ms"
    )
    serving_remote_retry_budget: float = Field(
        0.2, ge=0, le=1, description="retries allowed as a fraction of requests per endpoint (a retry budget)"
    )
    serving_remote_breaker_failures: int = Field(
        5, ge=1, description="consecutive failed calls that open an endpoint's circuit breaker (it then fails fast)"
    )
    serving_remote_breaker_reset_seconds: float = Field(
        5.0, ge=0, description="how long an open circuit breaker fails calls before letting one trial call through"
    )
    serving_remote_max_connections: int = Field(
        100, ge=1, description="HTTP connections kept to inference servers, all endpoints together"
    )
    hf_offline: bool = Field(True, description="set HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE: never fetch from a hub")

    @field_validator("events_ingest_processes")
    @classmethod
    def _ingestion_needs_a_shared_database(cls, processes: int, info: ValidationInfo) -> int:
        """Ingestion processes write through their own connections: an in-memory SQLite database is private to
        the worker that opened it."""
        url = info.data.get("database_url")
        if processes and isinstance(url, str) and is_memory_sqlite(url):
            raise ValueError("needs a database file or server (an in-memory SQLite database is private to the "
                             "worker); set TITRATE_DATABASE_URL to a file, or 0 here")
        return processes


def is_memory_sqlite(url: str | URL) -> bool:
    """Whether a SQLAlchemy URL is an in-memory SQLite database (private to the process that opens it); False for
    anything else, an unparsable URL included (its own check names it)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    if not parsed.drivername.startswith("sqlite"):
        return False
    database = parsed.database or ""
    return database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("mode") == "memory"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own ``Settings``)."""
    return Settings()
