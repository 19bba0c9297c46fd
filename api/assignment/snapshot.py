"""The in-memory config snapshot the assignment hot path reads (never the database).

A snapshot is rebuilt when the config version in the database changes: at once in the worker that made
the change, and within ``config_refresh_seconds`` in every other worker or replica.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from api.background import PeriodicLoop
from api.db.config_version import config_version
from api.db.engine import Database
from api.db.tables import Experiment, utc_now
from api.experiments import repository
from bandits.bucketing import (
    BUCKETS,
    CONTEXT_SPEC_VERSION,
    Assignment,
    ExperimentConfig,
    VariantConfig,
    experiment_config_from_document,
)
from bandits.index import ExperimentIndex, build_index


@dataclass(frozen=True, slots=True)
class EncodedAssignment(Assignment):
    """An answer of the layer index carrying its ``/v1/assign`` member, pre-encoded (see ``fragments``).

    Why: joining the answer then reads one bytes object per experiment instead of a look-up in a dict of every
    (experiment, variant), which at 10,000 experiments missed the cache on each layer (bench/RESULTS.md).
    """

    fragment: bytes


@dataclass(frozen=True)
class ConfigSnapshot:
    """Served experiments by key, their ids, and the SDK config document (pre-serialised, with its ETag)."""

    version: int
    experiments: dict[str, ExperimentConfig]
    experiment_ids: dict[str, int]
    served_keys: tuple[str, ...]
    document: bytes
    etag: str
    models: dict[str, dict[str, str | None]] = field(default_factory=dict)
    index: ExperimentIndex = field(default_factory=lambda: build_index(()))
    #: ``/v1/assign``'s answer for one (experiment, variant), pre-encoded: ``"key":{"variant":…,"payload":…}``
    fragments: dict[tuple[str, str], bytes] = field(default_factory=dict)
    #: ``document`` gzipped once (deterministic: no timestamp), when it is at least ``GZIP_MIN_BYTES``; else None
    document_gzip: bytes | None = None


#: SDK config documents from this size on are also kept gzipped and sent so to clients that accept gzip (httpx
#: and requests do by default). Why 64 KiB: JSON of experiment configs compresses ~30x (10,000 experiments:
#: 3.4 MB -> 103 kB, bench/RESULTS.md), while below a few packets compression saves nothing worth a CPU cost.
GZIP_MIN_BYTES = 65_536


def gzip_document(document: bytes) -> bytes | None:
    """``document`` gzipped (level 6, mtime 0 so every replica sends the same bytes), or None below
    ``GZIP_MIN_BYTES``."""
    return gzip.compress(document, 6, mtime=0) if len(document) >= GZIP_MIN_BYTES else None


def experiment_document(experiment: Experiment, weights: dict[str, float], version: int,
                        context_weights: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """One experiment of the SDK config document (spec/bucketing.md §4; ``context`` §3.6 while running)."""
    served = [v for v in experiment.variants if not v.shadow]
    control = next((v.key for v in served if v.is_control), served[0].key)
    context = (experiment.allocation or {}).get("context")
    extra: dict[str, Any] = {}
    if context_weights and context and experiment.status == "running":
        extra["context"] = {"attribute": context["attribute"], "weights": {
            value: [float(by_variant.get(v.key, 0.0)) for v in served]
            for value, by_variant in sorted(context_weights.items())}}
    return {
        "key": experiment.key, "salt": experiment.salt, "status": experiment.status, "type": experiment.type,
        "traffic": experiment.traffic, "layer": experiment.layer, "layer_start": experiment.layer_start,
        "layer_end": experiment.layer_end, "targeting": experiment.targeting, "allocation_version": version,
        "control": control, "shipped_variant": experiment.shipped_variant,
        "variants": [{"key": v.key, "weight": float(weights.get(v.key, 0.0)), "payload": v.payload}
                     for v in served],
        **extra,
    }


def assignment_fragments(configs: dict[str, ExperimentConfig]) -> dict[tuple[str, str], bytes]:
    """Each (experiment, variant)'s member of ``/v1/assign``'s ``assignments`` object, encoded once per snapshot.

    Why: a payload is fixed for a snapshot's life, so the hot path joins these bytes instead of encoding the
    same payloads on every request; encoded with the stdlib ``json`` (ASCII escapes, ``1e+16``) exactly as the
    answer always was, so the bytes clients read do not change (``tests/test_response_bytes.py``).
    """
    encode = json.JSONEncoder(separators=(",", ":")).encode
    return {(key, variant.key): (f'{encode(key)}:{{"variant":{encode(variant.key)},'
                                 f'"payload":{encode(variant.payload)}}}').encode()
            for key, config in configs.items() for variant in config.variants}


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (refcounting still frees everything acyclic).

    Why: a snapshot allocates ~20 tracked objects per experiment while the previous snapshot and the rows are
    alive, so the collector's full passes, each over the whole heap, made the pure build grow faster than the
    catalogue (0.41 s at 10,000 experiments, 0.20 s with the collector paused; 20 µs per experiment either way
    at 700 — bench/RESULTS.md). Anything cyclic made meanwhile is collected on the next pass after the block.
    Only re-enabled if it was enabled, so a caller that turned it off keeps it off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_snapshot(db: Database) -> ConfigSnapshot:
    """Read served experiments and their newest allocations and build a snapshot (linear in the experiments:
    the cyclic collector is paused meanwhile, see :func:`gc_paused`)."""
    with gc_paused():
        return _build_snapshot(db)


def _build_snapshot(db: Database) -> ConfigSnapshot:
    with db.read() as session:
        version = config_version(session)
        experiments = repository.list_experiments(session, repository.SERVED_STATUSES)
        allocations = repository.latest_allocations(session, [e.id for e in experiments])
        docs = []
        models: dict[str, dict[str, str | None]] = {}
        for experiment in sorted(experiments, key=lambda e: e.key):
            allocation = allocations.get(experiment.id)
            weights = allocation.weights if allocation else {v.key: v.weight for v in experiment.variants}
            docs.append(experiment_document(experiment, weights, allocation.version if allocation else 1,
                                            allocation.context_weights if allocation else None))
            models[experiment.key] = {v.key: v.model for v in experiment.variants}
        ids = {e.key: e.id for e in experiments}
    configs = {doc["key"]: experiment_config_from_document(doc) for doc in docs}
    served = tuple(doc["key"] for doc in docs)
    body = {"version": version, "generated_at": utc_now().isoformat().replace("+00:00", "Z"),
            "buckets": BUCKETS,
            # the lowest spec version whose rules evaluate the document, so SDKs that predate §3.6 keep working
            # until an experiment actually uses contextual weights
            "spec_version": CONTEXT_SPEC_VERSION if any("context" in d for d in docs) else 1, "experiments": docs}
    document = json.dumps(body, separators=(",", ":")).encode()
    # The ETag names the content, not the time it was generated, so replicas agree on it.
    content_hash = hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()[:16]
    fragments = assignment_fragments(configs)
    return ConfigSnapshot(version=version, experiments=configs, experiment_ids=ids, served_keys=served,
                          document=document, etag=f'"{version}-{content_hash}"', models=models,
                          index=encoded_index(configs, fragments), fragments=fragments,
                          document_gzip=gzip_document(document))


def encoded_index(configs: dict[str, ExperimentConfig], fragments: dict[tuple[str, str], bytes]) -> ExperimentIndex:
    """The layer index whose answers are :class:`EncodedAssignment` with each (experiment, variant)'s fragment."""
    def answer(config: ExperimentConfig, variant: VariantConfig) -> Assignment:
        return EncodedAssignment(config.key, variant.key, variant.payload, config.allocation_version, True,
                                 fragments[(config.key, variant.key)])

    return build_index(configs.values(), answer)


class SnapshotHolder:
    """Holds the current snapshot (swapped atomically) and refreshes it when the version moves."""

    def __init__(self, db: Database, refresh_seconds: float,
                 on_change: Callable[[], None] | None = None) -> None:
        self._db = db
        self._on_change = on_change  # e.g. forget cached API keys: a revocation also moves the config version
        self._lock = threading.Lock()
        # a database blip must not kill the refresher: the failure is logged, the old snapshot keeps serving
        self._loop = PeriodicLoop("titrate-config-refresh", self.reload_if_changed, refresh_seconds,
                                  failure=lambda: "config refresh failed; serving the previous snapshot",
                                  stop_timeout=5.0)
        self.current = build_snapshot(db)

    def reload(self) -> ConfigSnapshot:
        """Rebuild now (called after this worker commits a change)."""
        with self._lock:
            self.current = build_snapshot(self._db)
            return self.current

    def reload_if_changed(self) -> bool:
        """Rebuild when the database's config version differs from the snapshot's."""
        with self._db.read() as session:
            version = config_version(session)
        if version != self.current.version:
            self.reload()
            if self._on_change is not None:
                self._on_change()
            return True
        return False

    def start(self) -> None:
        """Poll the config version in a daemon thread."""
        self._loop.start()

    def stop(self) -> None:
        """Stop polling (waiting up to 5 s for a refresh in progress)."""
        self._loop.stop()
