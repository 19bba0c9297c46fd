"""The synchronous titrate client: local-evaluation assignment plus batched event and exposure delivery.

Threads: a config poller and an event sender, both daemons, both started by :meth:`Client.start`
(called by the constructor unless ``start=False``). The hot path (:meth:`Client.get_variant`,
:meth:`Client.assign`, :meth:`Client.track`) takes no lock, makes no network call and never raises: it
reads the current immutable :class:`~titrate_sdk._spec.Snapshot` (replaced by one attribute store when
a new config arrives) and appends to ``collections.deque`` buffers (atomic in CPython).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import numbers
import random
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from operator import itemgetter
from typing import Any
from urllib.parse import quote

import httpx

from titrate_sdk import __version__
from titrate_sdk._spec import (
    _U64_PREFIX,
    BUCKETS,
    EMPTY_SNAPSHOT,
    ENTRY_FIRST_VARIANT,
    Assignment,
    CompiledExperiment,
    HotTuple,
    Snapshot,
    _freeze,
    compile_document,
    context_table,
    gc_paused,
    matches_all,
)

logger = logging.getLogger("titrate_sdk")


@dataclass(frozen=True)
class Prediction:
    """The answer of :meth:`Client.predict`: the variant and model that served, one output per input (classifier:
    ``{"label", "score"}``; embedding: a vector), the model's latency in ms, and the request id (also the id of the
    request's serving events and prediction log row)."""

    variant: str
    model: str
    outputs: list[Any]
    latency_ms: float
    request_id: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Prediction:
        """Parse the service's ``/predict`` JSON."""
        return cls(variant=str(body["variant"]), model=str(body["model"]), outputs=list(body["outputs"]),
                   latency_ms=float(body["latency_ms"]), request_id=str(body["request_id"]))

_SENT, _DROPPED, _REQUEUE = 0, 1, 2
_STAT_KEYS = (
    "tracked",
    "sent",
    "duplicates",
    "dropped",
    "exposures_logged",
    "exposures_sent",
    "exposures_dropped",
    "retries",
    "errors",
    "config_fetches",
    "config_updates",
    "config_not_modified",
    "config_errors",
)


def _iso(ts: float) -> str:
    """Epoch seconds as ISO-8601 UTC with a ``Z`` suffix (microsecond precision)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _timestamp_of(value: Any) -> float | str:
    """Normalise ``track(timestamp=...)``: datetime (naive = UTC), epoch seconds, or an ISO string."""
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return float(value.timestamp())
    if isinstance(value, str):
        datetime.fromisoformat(value.replace("Z", "+00:00"))  # validate now, not when the batch is sent
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise TypeError("timestamp must be a datetime, epoch seconds or an ISO-8601 string")


class Client:
    """Client of a titrate service.

    Args:
        base_url: the service root, e.g. ``"https://titrate.example.com"``.
        api_key: an API key (role ``sdk`` suffices), sent as ``Authorization: Bearer <key>``.
        poll_interval: seconds between config refreshes (``GET /v1/sdk/config`` with ``If-None-Match``).
        flush_interval: seconds between background sends of buffered events and exposures.
        max_batch: most events (or exposures) per POST.
        max_buffer: most events, and separately most exposures, held in memory; further ones are
            dropped and counted in ``stats["dropped"]`` / ``stats["exposures_dropped"]``.
        timeout: HTTP timeout in seconds (also bounds the first, blocking config fetch).
        log_exposures: send an exposure for the first assignment of each (experiment, unit) of a running
            experiment.
        http_client: an ``httpx.Client`` to use (not closed by :meth:`close`); by default one is created.
        start: fetch the config now (blocking up to ``timeout``) and start the background threads. With
            ``False`` nothing runs until :meth:`start`; :meth:`flush` then sends in the calling thread.
        config: a config document to start from (bootstrap or offline use); a fetched one replaces it.
        max_retries: attempts after the first for a batch failing with a network error, 5xx, 408 or 429;
            the batch is then dropped and counted.
        backoff_base, backoff_max: the retry delay is ``min(backoff_max, backoff_base × 2^attempt)`` with
            equal jitter (half fixed, half uniform random), or the server's ``Retry-After`` when larger.
        exposure_dedup_size: (experiment, unit) pairs remembered for exposure de-duplication.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        poll_interval: float = 10.0,
        flush_interval: float = 1.0,
        max_batch: int = 500,
        max_buffer: int = 100_000,
        timeout: float = 5.0,
        log_exposures: bool = True,
        http_client: httpx.Client | None = None,
        start: bool = True,
        config: Mapping[str, Any] | None = None,
        max_retries: int = 10,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        exposure_dedup_size: int = 100_000,
    ) -> None:
        base = base_url.rstrip("/")
        self._config_url = base + "/v1/sdk/config"
        self._events_url = base + "/v1/events"
        self._exposures_url = base + "/v1/exposures"
        self._assign_url = base + "/v1/assign"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"titrate-sdk-python/{__version__}",
        }
        self._post_headers = {**self._headers, "Content-Type": "application/json"}
        self._poll_interval = max(0.01, float(poll_interval))
        self._flush_interval = max(0.001, float(flush_interval))
        self._max_batch = max(1, int(max_batch))
        self._max_buffer = max(0, int(max_buffer))
        self._timeout = float(timeout)
        self._log_exposures = bool(log_exposures)
        self._max_retries = max(0, int(max_retries))
        self._backoff_base = float(backoff_base)
        self._backoff_max = float(backoff_max)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=self._timeout)

        self._snapshot: Snapshot = EMPTY_SNAPSHOT
        self._experiments: Mapping[str, CompiledExperiment] = EMPTY_SNAPSHOT.experiments
        self._hot: Mapping[str, HotTuple] = EMPTY_SNAPSHOT.hot
        self._config_lock = threading.Lock()  # serialises fetches, never taken by evaluation

        self._events: deque[tuple[Any, ...]] = deque()
        self._exposures: deque[tuple[Any, ...]] = deque()
        self._seen: set[tuple[str, str]] = set()
        self._seen_old: set[tuple[str, str]] = set()
        self._seen_half = max(1, int(exposure_dedup_size) // 2)
        # Delivery accounting: an item is "done" once sent or dropped; flush() waits on these counters.
        self._cv = threading.Condition()
        self._drain_lock = threading.Lock()
        self._done = {"events": 0, "exposures": 0}
        self._inflight = {"events": 0, "exposures": 0}

        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._stats_lock = threading.Lock()
        self._last_log: dict[str, float] = {}

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False

        ref = weakref.ref(self)

        def _close_at_exit() -> None:
            client = ref()
            if client is not None:
                client.close(timeout=client._timeout)

        self._atexit_hook = _close_at_exit
        atexit.register(_close_at_exit)

        if config is not None:
            self.set_config(config)
        if start:
            self.start()

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self, *, wait: bool = True) -> None:
        """Fetch the config (blocking up to ``timeout`` unless ``wait=False``) and start the threads.

        Idempotent. A failed first fetch is logged, not raised: evaluation returns defaults until the
        poller succeeds.
        """
        if self._started or self._closed:
            return
        self._started = True
        if wait:
            self.refresh()
        poller = threading.Thread(
            target=self._poll_loop, args=(not wait,), name="titrate-sdk-config", daemon=True
        )
        sender = threading.Thread(target=self._send_loop, name="titrate-sdk-sender", daemon=True)
        self._threads = [poller, sender]
        poller.start()
        sender.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event and exposure buffered before the call is sent (or dropped).

        Returns:
            True when all of them were handled, False when ``timeout`` seconds passed first (nothing is
            lost then: the sender keeps retrying).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            targets = {
                kind: self._done[kind] + self._inflight[kind] + len(self._buffer(kind))
                for kind in ("events", "exposures")
            }
        if self._sender_alive():
            self._wake.set()
            with self._cv:
                return self._cv.wait_for(
                    lambda: all(self._done[k] >= targets[k] for k in targets),
                    None if deadline is None else max(0.0, deadline - time.monotonic()),
                )
        self._drain(deadline)
        with self._cv:
            return all(self._done[k] >= targets[k] for k in targets)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush (up to ``timeout`` seconds), stop the threads and release the HTTP client. Idempotent.

        Whatever could not be delivered by then is dropped and counted.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._atexit_hook)
        try:
            self.flush(timeout)
        finally:
            self._abort.set()
            self._stop.set()
            self._wake.set()
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(timeout=max(1.0, self._timeout))
            with self._drain_lock:
                for kind, dropped_key in (("events", "dropped"), ("exposures", "exposures_dropped")):
                    left = len(self._buffer(kind))
                    if left:
                        self._buffer(kind).clear()
                        self._count(dropped_key, left)
                        logger.error("titrate_sdk: closing with %d undelivered %s dropped", left, kind)
            if self._owns_http:
                self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------- config

    @property
    def snapshot(self) -> Snapshot:
        """The compiled config in use (immutable)."""
        return self._snapshot

    @property
    def ready(self) -> bool:
        """Whether a config document has been loaded."""
        return self._snapshot is not EMPTY_SNAPSHOT

    def set_config(self, document: Mapping[str, Any], etag: str | None = None) -> bool:
        """Install a config document (spec §4) directly; returns False (keeping the old one) if unusable."""
        try:
            snapshot = compile_document(document, etag)
        except Exception as exc:  # noqa: BLE001 - a bad document must not break the client
            self._count("config_errors")
            self._log("config", "titrate_sdk: config document rejected: %s", exc)
            return False
        if snapshot.skipped:
            self._count("config_errors", len(snapshot.skipped))
            self._log("config-skip", "titrate_sdk: experiments skipped: %s", "; ".join(snapshot.skipped))
        # One attribute store each: readers see either the old or the new compiled experiments.
        self._snapshot = snapshot
        self._experiments = snapshot.experiments
        self._hot = snapshot.hot
        self._count("config_updates")
        return True

    def refresh(self) -> bool:
        """Fetch the config now. Returns True when a new document was installed (False: 304 or error)."""
        with self._config_lock:
            headers = dict(self._headers)
            etag = self._snapshot.etag
            if etag:
                headers["If-None-Match"] = etag
            self._count("config_fetches")
            try:
                response = self._http.get(self._config_url, headers=headers, timeout=self._timeout)
                if response.status_code == 304:
                    self._count("config_not_modified")
                    return False
                response.raise_for_status()
                with gc_paused():  # a large document is thousands of dicts: see gc_paused
                    document = response.json()
            except Exception as exc:  # noqa: BLE001 - network/HTTP/JSON errors keep the cached config
                self._count("config_errors")
                self._log("config", "titrate_sdk: config fetch failed: %s", exc)
                return False
            return self.set_config(document, response.headers.get("ETag"))

    def _poll_loop(self, fetch_first: bool) -> None:
        if fetch_first:
            self.refresh()
        while not self._stop.wait(self._poll_interval):
            self.refresh()

    # ----------------------------------------------------------------------------------------- assignment

    def get_variant(
        self,
        experiment_key: str,
        unit_id: str,
        attributes: Mapping[str, Any] | None = None,
        default: str | None = None,
    ) -> str:
        """The unit's variant key in the experiment, evaluated locally (spec §3). Never raises.

        When there is no config, the experiment is unknown or the unit is not in it, returns ``default``
        if given, else the experiment's control key if known, else ``"control"``. The first assignment
        of a unit in a running experiment enqueues an exposure.
        """
        hot = None
        try:
            hot = self._hot.get(experiment_key)
            if hot is None:
                return "control" if default is None else default
            targeting, running, gate_prefix, low, high, prefix, table, keys, control, fixed, context = hot
            if targeting is not None and not matches_all(targeting, attributes):
                return control if default is None else default
            if running:
                if type(unit_id) is not str:
                    unit_id = str(unit_id)
                unit = unit_id.encode()
                if (
                    gate_prefix is not None
                    and not low <= _U64_PREFIX(sha256(gate_prefix + unit).digest())[0] % BUCKETS < high
                ):
                    return control if default is None else default
                if context is not None:
                    table = context_table(context, attributes, table)
                variant = keys[table[_U64_PREFIX(sha256(prefix + unit).digest())[0] % BUCKETS]]
                if self._log_exposures:
                    seen = (experiment_key, unit_id)  # de-duplication inline: the common case is "seen"
                    if seen not in self._seen and seen not in self._seen_old:
                        self._expose(seen, variant, attributes)
                return variant
            if fixed is None:
                return control if default is None else default
            return fixed
        except Exception as exc:  # noqa: BLE001 - the hot path never raises
            self._hot_error("get_variant", exc)
            if default is not None:
                return default
            fallback = hot[8] if isinstance(hot, tuple) else None
            return fallback if isinstance(fallback, str) else "control"

    def assign(self, unit_id: str, attributes: Mapping[str, Any] | None = None) -> dict[str, Assignment]:
        """Assignments of the unit in every experiment of the config it is in (local; never raises).

        Running experiments enqueue an exposure on the unit's first assignment; shipped and rolled-back
        experiments give every targeted unit their fixed variant without one.
        """
        out: dict[str, Assignment] = {}
        try:
            if type(unit_id) is not str:
                unit_id = str(unit_id)
            unit = unit_id.encode()
            snapshot = self._snapshot  # one read: layers and flat experiments of the same document
            found: list[tuple[int, str, Assignment, bool]] = []
            append = found.append
            # Per layer one hash finds the only experiment the unit can be in (spec §3.3): O(layers), not
            # O(experiments); the layer index is exactly the per-experiment gate (see build_layers). Then
            # CompiledExperiment.evaluate's targeting and variant hash, read from the flat entry.
            for prefix, slots, _, entries in snapshot.layers:
                try:
                    slot = slots[_U64_PREFIX(sha256(prefix + unit).digest())[0] % BUCKETS]
                    if not slot:
                        continue
                    entry = entries[slot - 1]
                    position, key, targeting, variant_prefix, table, context = entry[:ENTRY_FIRST_VARIANT]
                    if targeting is not None and not matches_all(targeting, attributes):
                        continue
                    if context is not None:
                        table = context_table(context, attributes, table)
                    variant = table[_U64_PREFIX(sha256(variant_prefix + unit).digest())[0] % BUCKETS]
                    append((position, key, entry[ENTRY_FIRST_VARIANT + variant], True))
                except Exception as exc:  # noqa: BLE001
                    self._hot_error("assign", exc)
            for position, exp in snapshot.flat:
                try:
                    assignment = exp.evaluate(unit, attributes)
                except Exception as exc:  # noqa: BLE001
                    self._hot_error("assign", exc)
                    continue
                if assignment is not None:
                    append((position, exp.key, assignment, exp.running))
            found.sort(key=_position)  # the document's order, as the per-experiment loop answered
            log = self._log_exposures
            for _, key, assignment, running in found:
                out[key] = assignment
                if log and running:
                    self._expose((key, unit_id), assignment.variant, attributes)
        except Exception as exc:  # noqa: BLE001 - the hot path never raises
            self._hot_error("assign", exc)
        return out

    def assign_many(
        self,
        experiment_key: str,
        unit_ids: Iterable[str],
        attributes: Mapping[str, Any] | None = None,
        default: str | None = None,
    ) -> list[str]:
        """Variant keys of many units in one experiment, for offline batch scoring (local; never raises).

        ``attributes`` (one mapping for all units) is checked against the targeting once. Units not in
        the experiment get ``default`` / the control key as in :meth:`get_variant`. No exposures are
        logged: batch scoring is not an exposure. Runs at a few million units per second per core
        (a precomputed bucket→variant table and one SHA-256 per unit, two with a traffic gate or layer).
        """
        try:
            ids = unit_ids if isinstance(unit_ids, list | tuple) else list(unit_ids)
            exp = self._experiments.get(experiment_key)
        except Exception as exc:  # noqa: BLE001 - an unhashable key or a failing iterable
            self._hot_error("assign_many", exc)
            return []
        if exp is None:
            return ["control" if default is None else default] * len(ids)
        miss = exp.control if default is None else default
        try:
            targeted_out = exp.targeting is not None and not matches_all(exp.targeting, attributes)
        except Exception as exc:  # noqa: BLE001 - bad attributes: nobody is in, as in get_variant
            self._hot_error("assign_many", exc)
            targeted_out = True
        if targeted_out:
            return [miss] * len(ids)
        try:
            if not exp.running:
                return [miss if exp.fixed is None else exp.fixed.variant] * len(ids)
            return _assign_running(exp, ids, miss, attributes)
        except Exception:  # noqa: BLE001 - non-str ids or unencodable strings: the careful path
            return [self._variant_careful(exp, u, miss, attributes) for u in ids]

    def _variant_careful(self, exp: CompiledExperiment, unit_id: Any, miss: str,
                         attributes: Mapping[str, Any] | None) -> str:
        # One unit of assign_many on the careful path: no exposure, errors counted.
        try:
            unit = (unit_id if type(unit_id) is str else str(unit_id)).encode()
            if exp.gate_prefix is not None:
                gate = _U64_PREFIX(sha256(exp.gate_prefix + unit).digest())[0] % BUCKETS
                if not exp.gate_low <= gate < exp.gate_high:
                    return miss
            return exp.keys[
                exp.table_for(attributes)[_U64_PREFIX(sha256(exp.variant_prefix + unit).digest())[0] % BUCKETS]
            ]
        except Exception as exc:  # noqa: BLE001
            self._hot_error("assign_many", exc)
            return miss

    def assign_remote(
        self,
        unit_id: str,
        attributes: Mapping[str, Any] | None = None,
        experiments: Sequence[str] | None = None,
    ) -> dict[str, Assignment]:
        """Ask the service (``POST /v1/assign``); the service logs the exposures itself.

        Raises:
            httpx.HTTPError: network failure or an error status (unlike the local methods, this is an
                explicit remote call and its caller decides the fallback).
        """
        body: dict[str, Any] = {"unit_id": str(unit_id), "attributes": dict(attributes or {})}
        if experiments is not None:
            body["experiments"] = list(experiments)
        response = self._http.post(self._assign_url, json=body, headers=self._headers, timeout=self._timeout)
        response.raise_for_status()
        return parse_assignments(response.json())

    def predict(
        self,
        experiment: str,
        unit_id: str,
        inputs: Sequence[str],
        attributes: Mapping[str, Any] | None = None,
    ) -> Prediction:
        """Serve ``inputs`` with the model of the variant the unit is assigned to
        (``POST /v1/experiments/{experiment}/predict``): the service assigns, logs the exposure, runs the variant's
        model — in its own process or on an inference server — and records the serving events.

        Raises:
            httpx.HTTPError: network failure or an error status (409: the unit is not in the experiment or it
                serves nothing, so serve your default model; 503: the variant's model failed — it counts against
                that variant).
        """
        body = {"unit_id": str(unit_id), "attributes": dict(attributes or {}), "inputs": list(inputs)}
        response = self._http.post(self._predict_url(experiment), json=body, headers=self._headers,
                                   timeout=self._timeout)
        response.raise_for_status()
        return Prediction.from_json(response.json())

    def _predict_url(self, experiment: str) -> str:
        return self._assign_url.removesuffix("/v1/assign") + f"/v1/experiments/{quote(experiment, safe='')}/predict"

    # ------------------------------------------------------------------------------------------- tracking

    def track(
        self,
        unit_id: str,
        name: str,
        value: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
        timestamp: datetime | float | str | None = None,
    ) -> str:
        """Buffer an event for ``POST /v1/events`` and return its client-generated ``event_id``.

        Never raises: an invalid event (non-finite or non-numeric value, empty name, bad timestamp) or a
        full buffer is dropped, counted in ``stats["dropped"]`` and logged; its id is still returned.
        Retries resend the same ``event_id``, so the service stores each event once.
        """
        event_id = uuid.uuid4().hex
        try:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"event value must be a finite number, got {value!r}")
            if not isinstance(name, str) or not name:
                raise ValueError("event name must be a non-empty string")
            ts = _timestamp_of(timestamp)
            attrs = dict(attributes) if attributes else None
            if self._closed:
                raise RuntimeError("client is closed")
            if len(self._events) >= self._max_buffer:
                self._count("dropped")
                self._log("buffer", "titrate_sdk: event buffer full (%d); events dropped", self._max_buffer)
                return event_id
            self._events.append(
                (event_id, unit_id if type(unit_id) is str else str(unit_id), name, float(value), ts, attrs)
            )
            self._count("tracked")
            if len(self._events) >= self._max_batch and not self._wake.is_set():
                self._wake.set()
        except Exception as exc:  # noqa: BLE001 - the hot path never raises
            self._count("dropped")
            self._log("track", "titrate_sdk: event dropped: %s", exc)
        return event_id

    def _expose(self, key: tuple[str, str], variant: str, attributes: Mapping[str, Any] | None) -> None:
        if key in self._seen or key in self._seen_old or self._closed:
            return
        if len(self._exposures) >= self._max_buffer:
            self._count("exposures_dropped")
            self._log("exposure-buffer", "titrate_sdk: exposure buffer full; exposures dropped")
            return
        seen = self._seen
        seen.add(key)
        if len(seen) >= self._seen_half:
            # Two generations bound the memory; a unit forgotten after ~exposure_dedup_size newer pairs is
            # re-exposed once, which the server de-duplicates anyway.
            self._seen_old = seen
            self._seen = set()
        # Why None rather than {} for no attributes: a tuple of atomic values is untracked by the cyclic
        # GC, and 100k tracked tuples in a buffer made every first exposure ~4x slower (GC passes).
        self._exposures.append(
            (key[0], key[1], variant, time.time(), dict(attributes) if attributes else None)
        )
        self._count("exposures_logged")
        if len(self._exposures) >= self._max_batch and not self._wake.is_set():
            self._wake.set()

    # ------------------------------------------------------------------------------------------- delivery

    def _buffer(self, kind: str) -> deque[tuple[Any, ...]]:
        return self._events if kind == "events" else self._exposures

    def _sender_alive(self) -> bool:
        return (
            any(t.name == "titrate-sdk-sender" and t.is_alive() for t in self._threads)
            and not self._stop.is_set()
        )

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            try:
                self._drain(None)
            except Exception as exc:  # noqa: BLE001 - the sender thread must survive anything
                self._count("errors")
                logger.exception("titrate_sdk: sender error: %s", exc)

    def _drain(self, deadline: float | None) -> None:
        """Send both buffers in batches until they are empty, a batch is re-queued, or the deadline."""
        with self._drain_lock:
            for kind in ("exposures", "events"):
                buffer = self._buffer(kind)
                while buffer:
                    with self._cv:
                        batch = [buffer.popleft() for _ in range(min(len(buffer), self._max_batch))]
                        self._inflight[kind] = len(batch)
                    outcome = _REQUEUE
                    try:
                        outcome = self._send_batch(kind, batch, deadline)
                    finally:
                        with self._cv:
                            self._inflight[kind] = 0
                            if outcome == _REQUEUE:
                                buffer.extendleft(reversed(batch))
                            else:
                                self._done[kind] += len(batch)
                            self._cv.notify_all()
                    if outcome == _REQUEUE:
                        return

    def _encode(self, kind: str, batch: list[tuple[Any, ...]]) -> tuple[bytes, int]:
        """The JSON body of a batch and the number of items that could not be encoded (dropped)."""
        if kind == "events":
            items = [
                {
                    "event_id": e[0],
                    "unit_id": e[1],
                    "name": e[2],
                    "value": e[3],
                    "timestamp": _iso(e[4]) if isinstance(e[4], float) else e[4],
                    "attributes": e[5] or {},
                }
                for e in batch
            ]
        else:
            items = [
                {
                    "experiment": x[0],
                    "unit_id": x[1],
                    "variant": x[2],
                    "timestamp": _iso(x[3]),
                    "attributes": x[4] or {},
                }
                for x in batch
            ]
        try:
            return _dumps({kind: items}), 0
        except ValueError:
            # A NaN/inf somewhere in the attributes: keep the encodable items, drop the others.
            good = []
            for item in items:
                try:
                    _dumps(item)
                    good.append(item)
                except ValueError:
                    pass
            return _dumps({kind: good}), len(items) - len(good)

    def _send_batch(self, kind: str, batch: list[tuple[Any, ...]], deadline: float | None) -> int:
        sent_key, dropped_key = (
            ("sent", "dropped") if kind == "events" else ("exposures_sent", "exposures_dropped")
        )
        url = self._events_url if kind == "events" else self._exposures_url
        body, bad = self._encode(kind, batch)
        if bad:
            self._count(dropped_key, bad)
            self._count("errors")
            self._log("encode", "titrate_sdk: %d %s with non-JSON attributes dropped", bad, kind)
        attempt = 0
        while True:
            status: int | None = None
            retry_after = 0.0
            try:
                response = self._http.post(
                    url, content=body, headers=self._post_headers, timeout=self._timeout
                )
                status = response.status_code
                if 200 <= status < 300:
                    self._count(sent_key, len(batch) - bad)
                    if kind == "events":
                        self._count("duplicates", _duplicates_of(response))
                    return _SENT
                retry_after = _retry_after(response)
                problem = f"HTTP {status}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if status is not None and 300 <= status < 500 and status not in (408, 429):
                self._count(dropped_key, len(batch) - bad)
                self._count("errors")
                logger.error(
                    "titrate_sdk: %d %s rejected by the service (%s); batch dropped",
                    len(batch),
                    kind,
                    problem,
                )
                return _DROPPED
            if attempt >= self._max_retries:
                self._count(dropped_key, len(batch) - bad)
                self._count("errors")
                logger.error(
                    "titrate_sdk: %d %s dropped after %d retries (%s)", len(batch), kind, attempt, problem
                )
                return _DROPPED
            delay = min(self._backoff_max, self._backoff_base * 2.0**attempt)
            delay = delay / 2 + random.uniform(0, delay / 2)  # equal jitter: spreads clients' retries
            delay = max(delay, min(retry_after, self._backoff_max))
            if deadline is not None and time.monotonic() + delay > deadline:
                return _REQUEUE
            attempt += 1
            self._count("retries")
            self._log("retry", "titrate_sdk: sending %s failed (%s); retrying in %.2fs", kind, problem, delay)
            if self._abort.wait(delay):
                return _REQUEUE

    # ---------------------------------------------------------------------------------------------- stats

    @property
    def stats(self) -> dict[str, int]:
        """Counters: tracked, sent, duplicates, dropped, exposures_logged/_sent/_dropped, retries, errors,
        config_fetches/_updates/_not_modified/_errors, and the current ``buffered``/``exposures_buffered``."""
        with self._stats_lock:
            out = dict(self._stats)
        out["buffered"] = len(self._events)
        out["exposures_buffered"] = len(self._exposures)
        return out

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def _hot_error(self, where: str, exc: BaseException) -> None:
        self._count("errors")
        self._log(where, "titrate_sdk: %s failed (returned the default): %r", where, exc)

    def _log(self, kind: str, msg: str, *args: Any) -> None:
        """Log at WARNING at most once per 10 s per kind (DEBUG otherwise): errors on a hot path repeat."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -1e9) >= 10.0:
            self._last_log[kind] = now
            logger.warning(msg, *args)
        else:
            logger.debug(msg, *args)


_position = itemgetter(0)


def _assign_running(
    exp: CompiledExperiment, ids: Sequence[str], miss: str, attributes: Mapping[str, Any] | None
) -> list[str]:
    """Batch spec §3.3–3.6 for str ids; raises on a non-str or unencodable id (the caller falls back)."""
    table = exp.variant_table(attributes)
    prefix = exp.variant_prefix
    sha = sha256
    u64 = _U64_PREFIX
    if exp.gate_prefix is None:
        return [table[u64(sha(prefix + u.encode()).digest())[0] % BUCKETS] for u in ids]
    gate_prefix, low, high = exp.gate_prefix, exp.gate_low, exp.gate_high
    out: list[str] = []
    append = out.append
    for u in ids:
        unit = u.encode()
        if low <= u64(sha(gate_prefix + unit).digest())[0] % BUCKETS < high:
            append(table[u64(sha(prefix + unit).digest())[0] % BUCKETS])
        else:
            append(miss)
    return out


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str).encode()


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", 0)))
    except ValueError:
        return 0.0


def _duplicates_of(response: httpx.Response) -> int:
    try:
        value = response.json().get("duplicates", 0)
        return int(value) if isinstance(value, int) else 0
    except Exception:  # noqa: BLE001 - the count is informational
        return 0


def parse_assignments(document: Any) -> dict[str, Assignment]:
    """``{"assignments": {key: {"variant", "payload"}}}`` (the ``/v1/assign`` reply) as Assignments."""
    out: dict[str, Assignment] = {}
    for key, item in (document.get("assignments") or {}).items():
        version = item.get("allocation_version")
        out[key] = Assignment(
            experiment=key,
            variant=item["variant"],
            payload=_freeze(item.get("payload")),
            allocation_version=version if isinstance(version, int) else None,
        )
    return out
