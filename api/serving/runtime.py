"""The serving runtime: assignment → the variant's model (dynamic batcher) → outputs, plus shadow copies,
serving events, the prediction log, and unloading models no served experiment references.

One ``ServingRuntime`` per worker process lives on ``app.state.serving``. Its async methods run on the
event loop; the models run in their batchers' worker threads, database reads in the threadpool, and
database writes in the recorder's thread, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool

from api.assignment.exposure_writer import ExposureWriter
from api.assignment.service import assign_unit
from api.assignment.snapshot import ConfigSnapshot, SnapshotHolder
from api.background import AsyncPeriodicLoop
from api.db.engine import Database
from api.db.rows import PredictionRow
from api.db.tables import utc_now
from api.errors import Conflict, DomainError, InvalidInput, NotFound
from api.experiments import repository as experiments_repository
from api.json_types import JsonObject
from api.serving import report
from api.serving import repository as serving_repository
from api.serving.recorder import ServingRecorder, serving_events
from api.serving.service import AnySpec, spec_from_row
from bandits.bucketing import ExperimentConfig, assign
from models.errors import ModelServingError
from models.manager import ModelManager

log = logging.getLogger(__name__)

PREDICTIONS = Counter("titrate_predictions", "prediction requests served, by model and outcome", ["model", "outcome"])
SHADOW_RUNS = Counter("titrate_shadow_runs", "shadow copies of control requests, by outcome", ["outcome"])


class ModelFailed(DomainError):
    """The variant's model could not be loaded or its forward pass failed (503)."""

    status_code = 503


class SpecCache:
    """Registered model specs by key, read from the database once per worker.

    Specs are immutable once registered (``POST /v1/models`` refuses an existing key), so a cached spec never
    goes stale; unknown keys are not cached, so a model registered by another worker is found on next use.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._specs: dict[str, AnySpec] = {}

    def put(self, spec: AnySpec) -> None:
        """Remember a spec (this worker just registered it)."""
        self._specs[spec.key] = spec

    async def get(self, key: str) -> AnySpec | None:
        """The spec of ``key``, or None when it is not registered."""
        spec = self._specs.get(key)
        if spec is not None:
            return spec

        def _load() -> AnySpec | None:
            with self._db.read() as session:
                row = serving_repository.get_spec(session, key)
                return spec_from_row(row) if row is not None else None

        spec = await run_in_threadpool(_load)
        if spec is not None:
            self._specs[key] = spec
        return spec


@dataclass(frozen=True, slots=True)
class _Served:
    outputs: list[Any] | None
    latency_ms: float
    error: str | None


def referenced_models(snapshot: ConfigSnapshot) -> set[str]:
    """Models a served experiment can route to: every variant's (shadows included) of a running experiment, the
    shipped variant's of a shipped one, control's of a rolled-back one."""
    keep: set[str] = set()
    for key, config in snapshot.experiments.items():
        models = snapshot.models.get(key, {})
        if config.status == "running":
            keep.update(m for m in models.values() if m is not None)
            continue
        fixed = config.shipped_variant if config.status == "shipped" and config.shipped_variant else config.control
        model = models.get(fixed)
        if model is not None:
            keep.add(model)
    return keep


def shadow_variants(snapshot: ConfigSnapshot, key: str, config: ExperimentConfig) -> list[tuple[str, str]]:
    """``(variant, model)`` of the experiment's shadow variants: those with a model that assignment never serves
    (the snapshot's assignment config lists only served variants)."""
    served = {v.key for v in config.variants}
    return [(variant, model) for variant, model in snapshot.models.get(key, {}).items()
            if variant not in served and model is not None]


class ServingRuntime:
    """Serves predictions for experiments; see the module docstring."""

    def __init__(self, *, db: Database, snapshots: SnapshotHolder, exposure_writer: ExposureWriter,
                 manager: ModelManager, recorder: ServingRecorder, retain_seconds: float,
                 shadow_max_pending: int) -> None:
        self.db = db
        self.snapshots = snapshots
        self.exposure_writer = exposure_writer
        self.manager = manager
        self.recorder = recorder
        self.specs = SpecCache(db)
        self._shadow_max_pending = shadow_max_pending
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._retain_loop = AsyncPeriodicLoop("titrate-model-retain", self.retain, retain_seconds,
                                              failure="unloading unreferenced models failed")
        self._closing = False
        self.shadow_skipped = 0

    # --- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the recorder and the periodic unloading of models no served experiment references."""
        self.recorder.start()
        self._retain_loop.start()

    async def close(self) -> None:
        """Let shadow runs finish (briefly), unload every model, and write every queued record."""
        self._closing = True
        await self._retain_loop.stop()
        try:
            await self.wait_for_shadows(timeout=10.0)
            await self.manager.close()
        except Exception:  # whatever happens to the models, the queued records below must still be written
            log.exception("closing the model manager failed")
        finally:
            await run_in_threadpool(self.recorder.stop)

    async def wait_for_shadows(self, timeout: float | None = None) -> None:
        """Wait until the shadow runs in flight now have finished (tests; shutdown)."""
        if self._shadow_tasks:
            await asyncio.wait(set(self._shadow_tasks), timeout=timeout)

    async def retain(self) -> list[str]:
        """Unload models no served experiment references (after a stop, a ship or a rollback); returns them.

        Requests already queued on an unloaded model are served first (the batcher drains).
        """
        unloaded = await self.manager.retain_only(referenced_models(self.snapshots.current))
        if unloaded:
            log.info("unloaded models no served experiment references", extra={"models": unloaded})
        return unloaded

    # --- prediction ------------------------------------------------------------------------------------------
    async def predict(self, key: str, unit_id: str, attributes: JsonObject, inputs: list[str]) -> dict[str, Any]:
        """Assign the unit exactly as ``/v1/assign`` does (and log the exposure), run the variant's model.

        Refusals (no exposure logged, no serving events): 404 unknown experiment; 409 experiment not served,
        unit not in the experiment, variant without a model; 422 more inputs than the model's ``max_batch``.
        A model that fails to load or run → :class:`ModelFailed` (503), after logging the exposure and the
        ``serving.error`` event (intent to treat: the failure counts against the variant).
        """
        snapshot = self.snapshots.current
        config = snapshot.experiments.get(key)
        if config is None:
            raise await self._not_served(key)
        planned = assign(config, unit_id, attributes)
        if planned is None:
            raise Conflict(f"unit '{unit_id}' is not in experiment '{key}' (its targeting or traffic excludes it): "
                           "there is no variant to serve it with, serve it your default model")
        model_key = snapshot.models.get(key, {}).get(planned.variant)
        if model_key is None:
            raise Conflict(f"variant '{planned.variant}' of experiment '{key}' has no model to serve")
        spec = await self.specs.get(model_key)
        if spec is None:
            raise Conflict(f"model '{model_key}' of variant '{planned.variant}' is not registered")
        if len(inputs) > spec.max_batch:
            raise InvalidInput(("body", "inputs"),
                               f"at most {spec.max_batch} inputs per request for model '{model_key}' (its max_batch)")
        now = utc_now()
        # The same call as /v1/assign on the same snapshot: the same variant, and the exposure logged identically.
        variant = assign_unit(snapshot, self.exposure_writer, unit_id, attributes, [key], now)[key]["variant"]
        request_id = uuid.uuid4().hex
        served = await self._serve(spec, inputs)
        self._record(request_id=request_id, experiment_id=snapshot.experiment_ids[key], experiment=key,
                     variant=variant, unit_id=unit_id, spec=spec, inputs=inputs, served=served, shadow=False)
        PREDICTIONS.labels(model_key, "error" if served.error else "ok").inc()
        if served.error is not None:
            raise ModelFailed(f"model '{model_key}' failed: {served.error}")
        assert served.outputs is not None
        if variant == config.control and config.status == "running":
            self._start_shadows(snapshot, key, config, request_id, unit_id, spec, inputs, served.outputs)
        return {"variant": variant, "model": model_key, "outputs": served.outputs,
                "latency_ms": round(served.latency_ms, 3), "request_id": request_id}

    async def _not_served(self, key: str) -> DomainError:
        def _status() -> str | None:
            with self.db.read() as session:
                experiment = experiments_repository.get(session, key)
                return experiment.status if experiment is not None else None

        status = await run_in_threadpool(_status)
        if status is None:
            return NotFound(f"no experiment '{key}'")
        return Conflict(f"experiment '{key}' is '{status}': only running, shipped or rolled-back experiments "
                        "serve predictions")

    async def _serve(self, spec: AnySpec, inputs: list[str]) -> _Served:
        """Run ``inputs`` through ``spec``'s batcher (loading the model on first use).

        ``latency_ms`` counts queueing plus the forward pass, not the first load: a guardrail on latency compares
        models, not cold starts. A model unloaded between ``get`` and ``submit`` (a stop raced this request) is
        loaded again once.
        """
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                batcher = await self.manager.get(spec)
            except Exception as exc:  # ModelSpecError (directory gone or broken), or whatever the loader raised
                log.exception("loading model %s failed", spec.key)
                message = exc.message if hasattr(exc, "message") else str(exc)
                return _Served(None, (time.perf_counter() - started) * 1000, f"could not load: {message}")
            started = time.perf_counter()
            try:
                outputs = await batcher.submit(inputs)
            except ModelServingError as exc:
                if attempt == 1 and not batcher.running and not self._closing:
                    continue
                return _Served(None, (time.perf_counter() - started) * 1000, exc.message)
            return _Served(outputs, (time.perf_counter() - started) * 1000, None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(self, *, request_id: str, experiment_id: int, experiment: str, variant: str, unit_id: str,
                spec: AnySpec, inputs: list[str], served: _Served, shadow: bool,
                agreement: float | None = None) -> None:
        """Queue the prediction log row and (for served requests, not shadow runs) the unit's serving events."""
        now = utc_now()
        events = [] if shadow else serving_events(
            request_id, unit_id, served.latency_ms, served.error is not None, now,
            {"experiment": experiment, "variant": variant, "model": spec.key},
        )
        summary = report.summarise(spec.task, served.outputs) if served.outputs is not None else {}
        prediction: PredictionRow = {"request_id": request_id, "experiment_id": experiment_id, "variant": variant,
                      "unit_id": unit_id, "model": spec.key, "latency_ms": served.latency_ms,
                      "n_inputs": len(inputs), "error": served.error, "summary": summary, "shadow": shadow,
                      "agreement": agreement, "created_at": now}
        self.recorder.record(events, prediction)

    # --- shadow ----------------------------------------------------------------------------------------------
    def _start_shadows(self, snapshot: ConfigSnapshot, key: str, config: ExperimentConfig, request_id: str,
                       unit_id: str, control_spec: AnySpec, inputs: list[str], control_outputs: list[Any]) -> None:
        """Copy a control request to each shadow variant as a background task (never awaited by the caller)."""
        for variant, model_key in shadow_variants(snapshot, key, config):
            if len(self._shadow_tasks) >= self._shadow_max_pending or self._closing:
                # Shedding shadow load protects the served path; the skipped copies are counted.
                self.shadow_skipped += 1
                SHADOW_RUNS.labels("skipped").inc()
                continue
            task = asyncio.get_running_loop().create_task(
                self._shadow(key, snapshot.experiment_ids[key], variant, model_key, request_id, unit_id,
                             control_spec, inputs, control_outputs),
                name=f"titrate-shadow-{key}-{variant}",
            )
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, key: str, experiment_id: int, variant: str, model_key: str, request_id: str,
                      unit_id: str, control_spec: AnySpec, inputs: list[str], control_outputs: list[Any]) -> None:
        try:
            config = self.snapshots.current.experiments.get(key)
            if config is None or config.status != "running":
                return  # stopped (or shipped) since the request: nothing to compare any more
            spec = await self.specs.get(model_key)
            if spec is None:
                log.warning("shadow model %s of %s/%s is not registered", model_key, key, variant)
                return
            served = await self._serve(spec, inputs)
            agreement = None
            if served.outputs is not None and spec.task == control_spec.task:
                agreement = report.agreement(spec.task, control_outputs, served.outputs)
            self._record(request_id=request_id, experiment_id=experiment_id, experiment=key, variant=variant,
                         unit_id=unit_id, spec=spec, inputs=inputs, served=served, shadow=True, agreement=agreement)
            SHADOW_RUNS.labels("error" if served.error else "ok").inc()
        except Exception:  # a shadow run must never surface anywhere but the log
            log.exception("shadow run of %s/%s failed", key, variant)
