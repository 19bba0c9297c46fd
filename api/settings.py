"""Service settings, read from ``TITRATE_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every tunable of the service; one place, typed, documented in README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="TITRATE_", env_file=None, extra="ignore", protected_namespaces=())

    database_url: str = Field("sqlite:///./titrate.db", description="SQLAlchemy URL of the database")
    db_pool_size: int = Field(10, ge=1, description="connection pool size (PostgreSQL)")
    log_level: str = Field("INFO", description="root log level")
    log_json: bool = Field(True, description="structured JSON logs")
    config_refresh_seconds: float = Field(
        1.0, gt=0, description="how often each worker checks the config version for changes by other workers"
    )
    api_key_cache_seconds: float = Field(30.0, ge=0, description="how long a verified API key is cached")
    exposure_flush_seconds: float = Field(0.2, gt=0, description="exposure writer flush period")
    exposure_batch_size: int = Field(2000, ge=1, description="exposure writer rows per insert")
    exposure_queue_max: int = Field(1_000_000, ge=1000, description="exposures held in memory before back-pressure")
    max_events_per_batch: int = Field(10_000, ge=1, description="largest POST /v1/events batch")
    max_attributes_bytes: int = Field(8192, ge=256, description="largest JSON of a unit's attributes")
    scheduler_enabled: bool = Field(True, description="run periodic allocation jobs in this process")
    scheduler_interval_seconds: float = Field(30.0, gt=0, description="how often the allocation job runs")
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
    hf_offline: bool = Field(True, description="set HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE: never fetch from a hub")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own ``Settings``)."""
    return Settings()
