"""The FastAPI application: wires settings, database, snapshot, writer and routers; nothing at import time."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.allocation.endpoints import router as allocation_router
from api.allocation.scheduler import AllocationScheduler
from api.analysis.endpoints import router as analysis_router
from api.analysis.fast_path import ScorecardFastPath
from api.analysis.published import publish_if_read
from api.assignment.endpoints import router as assignment_router
from api.assignment.exposure_writer import ExposureWriter
from api.assignment.fast_path import AssignFastPath
from api.assignment.snapshot import SnapshotHolder
from api.auth.endpoints import router as keys_router
from api.auth.keys import KeyCache
from api.db.engine import Database, DbTimeouts
from api.db.tables import utc_now
from api.dead_letters.endpoints import router as dead_letters_router
from api.errors import install_error_handlers
from api.events.endpoints import router as events_router
from api.events.ingestion import IngestionPool
from api.experiments.endpoints import router as experiments_router
from api.incremental.scheduler import RefreshScheduler
from api.incremental.service import RefreshPolicy
from api.limits import BodyLimitMiddleware, body_limits
from api.logging_setup import configure_logging
from api.metrics_catalog.endpoints import router as metrics_router
from api.ops.endpoints import router as ops_router
from api.ops.observability import LatencyMiddleware
from api.serving.endpoints import router as serving_router
from api.serving.fast_path import PredictFastPath
from api.serving.recorder import ServingRecorder
from api.serving.retention import purge_predictions
from api.serving.runtime import ServingRuntime
from api.settings import Settings, get_settings
from api.sources import service as sources_service
from api.sources.endpoints import router as sources_router
from models.manager import Loader, ModelManager
from models.remote import RemoteEndpoints, RemoteSettings
from models.variants import load_variant

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, model_loader: Loader | None = None) -> FastAPI:
    """Build the app; resources are created in the lifespan (startup) and released on shutdown.

    ``model_loader`` (``spec -> ModelVariant``, default ``models.variants.load_variant``) is the seam tests use to
    wrap served models (slow or failing variants).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_json)
        db = Database(settings.database_url, settings.db_pool_size, DbTimeouts.from_settings(settings))
        app.state.settings = settings
        app.state.db = db
        sources_service.ENGINES.configure(sources_service.SourceLimits.from_settings(settings))
        app.state.key_cache = KeyCache(settings.api_key_cache_seconds)
        app.state.snapshots = SnapshotHolder(db, settings.config_refresh_seconds,
                                             on_change=app.state.key_cache.clear)
        app.state.exposure_writer = ExposureWriter(db, settings.exposure_flush_seconds,
                                                   settings.exposure_batch_size,
                                                   max_queued=settings.exposure_queue_max)
        if settings.hf_offline:  # models load from local directories only; never reach for a hub
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        remote = RemoteEndpoints(RemoteSettings(
            max_in_flight=settings.serving_remote_max_in_flight, retries=settings.serving_remote_retries,
            retry_budget=settings.serving_remote_retry_budget,
            breaker_failures=settings.serving_remote_breaker_failures,
            breaker_reset_seconds=settings.serving_remote_breaker_reset_seconds,
            max_connections=settings.serving_remote_max_connections))
        app.state.model_manager = ModelManager(loader=model_loader or load_variant,
                                               max_wait_ms=settings.serving_batch_wait_ms, remote=remote)
        app.state.serving = ServingRuntime(
            db=db, snapshots=app.state.snapshots, exposure_writer=app.state.exposure_writer,
            manager=app.state.model_manager,
            recorder=ServingRecorder(db, settings.serving_flush_seconds, settings.serving_queue_max),
            retain_seconds=settings.serving_retain_seconds, shadow_max_pending=settings.serving_shadow_max_pending,
        )
        app.state.ingestion = None
        if settings.events_ingest_processes:
            app.state.ingestion = IngestionPool(settings, settings.events_ingest_processes)
            await asyncio.to_thread(app.state.ingestion.start)
        app.state.snapshots.start()
        app.state.exposure_writer.start()
        await app.state.serving.start()
        app.state.allocation_scheduler = None
        app.state.refresh_scheduler = None  # the scorecard refresh job (api/incremental), beside it
        if settings.scheduler_enabled:  # the allocation updater (one replica at a time, under a database lock)
            app.state.allocation_scheduler = AllocationScheduler(
                db, app.state.snapshots, settings.scheduler_interval_seconds,
                maintenance=lambda: purge_predictions(db, utc_now(), settings.serving_predictions_retain_days))
            app.state.allocation_scheduler.start()
        # why not in this process by default: a refresh round's CPU and SQLite write lock would stall every route of
        # the worker; "process" runs it in titrate refresh-worker, which titrate serve starts beside its workers
        if settings.scheduler_enabled and settings.scorecard_refresh_mode == "inline":
            app.state.refresh_scheduler = RefreshScheduler(
                db, RefreshPolicy.from_settings(settings), settings.scorecard_refresh_seconds,
                publish=publish_if_read(settings.scorecard_publish_read_hours))
            app.state.refresh_scheduler.start()
        log.info("titrate started", extra={"database": db.dialect})
        try:
            yield
        finally:
            # Graceful shutdown (SIGTERM): in-flight requests have finished; write every queued exposure.
            if app.state.allocation_scheduler is not None:
                app.state.allocation_scheduler.stop()
            if app.state.refresh_scheduler is not None:
                app.state.refresh_scheduler.stop()
            await app.state.serving.close()  # shadow runs, models, then serving events and the prediction log
            app.state.exposure_writer.stop()
            if app.state.ingestion is not None:
                app.state.ingestion.close()
            app.state.snapshots.stop()
            sources_service.ENGINES.dispose_all()
            db.dispose()
            log.info("titrate stopped")

    app = FastAPI(
        title="titrate",
        version="0.1.0",
        summary="Experiments and A/B roll-outs for machine-learning model variants",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # innermost: POST /v1/experiments/{key}/predict answered beside the router once its checks pass
    # (api/serving/fast_path.py), and POST /v1/assign when it succeeds (api/assignment/fast_path.py)
    app.add_middleware(PredictFastPath)
    app.add_middleware(ScorecardFastPath)  # a plain scorecard read answered from its published card
    app.add_middleware(AssignFastPath)
    default_limit, route_limits = body_limits(settings)  # before auth and parsing; right inside the latency timer
    app.add_middleware(BodyLimitMiddleware, default=default_limit, routes=route_limits)
    app.add_middleware(LatencyMiddleware)
    # Starlette matches routes in order: the hot paths (assign, events) come first.
    for router in (assignment_router, events_router, ops_router, keys_router, metrics_router, experiments_router,
                   serving_router, analysis_router, allocation_router, dead_letters_router, sources_router):
        app.include_router(router)
    return app
