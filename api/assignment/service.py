"""Assignment against the snapshot, and the re-check of SDK exposures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy.orm import Session

from api.assignment import repository
from api.assignment.exposure_writer import ExposureRecord, ExposureWriter
from api.assignment.schemas import ExposureIn
from api.assignment.snapshot import ConfigSnapshot, EncodedAssignment
from api.attributes import check_attributes_size, encode_attributes
from api.errors import Unavailable
from api.json_types import JsonObject
from api.ops import observability
from bandits.bucketing import Assignment, assign
from bandits.index import assign_all

#: ``Retry-After`` of a 503 for a full exposure queue: the writer drains a queue in seconds once the database
#: answers again.
QUEUE_FULL_RETRY_AFTER_SECONDS = 2


def check_attributes(attributes: JsonObject, max_bytes: int, loc: tuple[str | int, ...]) -> None:
    """Refuse attributes too large to store with every exposure (422 naming the field; ``api.attributes``' rule,
    the same as for events)."""
    check_attributes_size(encode_attributes(attributes), max_bytes, loc)


class AssignmentJson(TypedDict):
    """One experiment's answer in ``POST /v1/assign``: the variant and its free-form payload."""

    variant: str
    payload: Mapping[str, Any]


def _assignments(snapshot: ConfigSnapshot, writer: ExposureWriter, unit_id: str, attributes: JsonObject,
                 experiment_keys: list[str] | None, now: datetime, force_enqueue: bool) -> list[Assignment]:
    """The unit's assignments (in the answer's order), their exposures queued."""
    if experiment_keys is None:
        # All experiments: the layer index evaluates one experiment per layer (O(layers), not O(experiments)).
        results = assign_all(snapshot.index, unit_id, attributes)
    else:
        results = []
        for key in dict.fromkeys(experiment_keys):  # a key asked for twice is answered once
            config = snapshot.experiments.get(key)
            if config is not None and (result := assign(config, unit_id, attributes)) is not None:
                results.append(result)
    for result in results:
        if result.exposed:
            key = result.experiment
            _assignment_counter(key).inc()
            writer.enqueue(ExposureRecord(
                experiment_id=snapshot.experiment_ids[key], unit_id=unit_id, variant=result.variant,
                allocation_version=result.allocation_version, exposed_at=now, attributes=attributes,
            ), force=force_enqueue)
    return results


# Why a cache of the labelled children: ``Counter.labels`` takes the metric's lock and builds the label tuple on
# every call; the child of a key never changes, so the hot path looks it up once per experiment and process.
_ASSIGNMENT_COUNTERS: dict[str, Any] = {}


def _assignment_counter(key: str) -> Any:
    counter = _ASSIGNMENT_COUNTERS.get(key)
    if counter is None:
        counter = _ASSIGNMENT_COUNTERS.setdefault(key, observability.ASSIGNMENTS.labels(key))
    return counter


def assign_unit(
    snapshot: ConfigSnapshot, writer: ExposureWriter, unit_id: str, attributes: JsonObject,
    experiment_keys: list[str] | None, now: datetime, *, force_enqueue: bool = False,
) -> dict[str, AssignmentJson]:
    """Assign one unit to every requested (or every served) experiment and queue the exposures (an exposure
    the full queue cannot take is dropped and counted by the writer, and the assignment is answered all the same —
    unless ``force_enqueue``: a caller that checked the queue's room and waits for the commit)."""
    return {r.experiment: {"variant": r.variant, "payload": r.payload}
            for r in _assignments(snapshot, writer, unit_id, attributes, experiment_keys, now, force_enqueue)}


def assign_unit_encoded(
    snapshot: ConfigSnapshot, writer: ExposureWriter, unit_id: str, attributes: JsonObject,
    experiment_keys: list[str] | None, now: datetime, *, force_enqueue: bool = False,
) -> tuple[bytes, int]:
    """:func:`assign_unit`, answered as the JSON members of ``assignments`` (joined from the snapshot's
    pre-encoded fragments, byte for byte what encoding :func:`assign_unit`'s dict gives) and how many there are."""
    results = _assignments(snapshot, writer, unit_id, attributes, experiment_keys, now, force_enqueue)
    fragments = snapshot.fragments
    return b",".join([r.fragment if type(r) is EncodedAssignment else fragments[(r.experiment, r.variant)]
                      for r in results]), len(results)


def refuse_when_queue_full(writer: ExposureWriter, rows: int) -> None:
    """503 with ``Retry-After`` when the exposure queue cannot take ``rows`` more (nothing of the request kept)."""
    if not writer.has_room(rows):
        raise Unavailable("the exposure queue is full while the database catches up: retry later",
                          retry_after_seconds=QUEUE_FULL_RETRY_AFTER_SECONDS)


async def wait_until_durable(writer: ExposureWriter, timeout: float) -> None:
    """Durability ``sync``: return once every exposure queued so far is committed; 503 after ``timeout`` (the
    exposures stay queued and are written when the database answers; a resent request is answered the same)."""
    if not await writer.wait_durable(timeout):
        raise Unavailable(f"exposures not committed within {timeout:g} s (database slow or unavailable): retry",
                          retry_after_seconds=QUEUE_FULL_RETRY_AFTER_SECONDS)


def record_sdk_exposures(
    session: Session, snapshot: ConfigSnapshot, writer: ExposureWriter, exposures: list[ExposureIn]
) -> dict[str, int]:
    """Re-check each SDK exposure against the server's own assignment; store matches, count mismatches.

    The whole batch is refused (503, ``Retry-After``) when the exposure queue cannot take it, so nothing of an
    acknowledged batch is ever dropped; the SDK resends it.
    """
    refuse_when_queue_full(writer, len(exposures))
    accepted = duplicates = unknown = 0
    mismatches: Counter[str] = Counter()
    for exposure in exposures:
        config = snapshot.experiments.get(exposure.experiment)
        if config is None or config.status != "running":
            unknown += 1
            continue
        result = assign(config, exposure.unit_id, exposure.attributes)
        if result is None or result.variant != exposure.variant:
            mismatches[exposure.experiment] += 1
            continue
        queued = writer.enqueue(ExposureRecord(
            experiment_id=snapshot.experiment_ids[exposure.experiment], unit_id=exposure.unit_id,
            variant=result.variant, allocation_version=result.allocation_version, exposed_at=exposure.timestamp,
            attributes=exposure.attributes, source="sdk",
        ), force=True) == "queued"
        accepted += int(queued)
        duplicates += int(not queued)
    repository.add_exposure_mismatches(session, mismatches)
    for count in mismatches.values():
        observability.EXPOSURE_MISMATCHES.inc(count)
    return {"accepted": accepted, "duplicates": duplicates, "mismatches": sum(mismatches.values()),
            "unknown": unknown}
