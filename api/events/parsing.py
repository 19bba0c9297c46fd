"""A batch of events from the request bytes to validated values, without per-event Python on the common path.

The contract is :class:`~api.events.schemas.EventsIn` (what OpenAPI shows and what a refusal reports): pydantic
validators per event for the timestamp bounds and the attribute rules, patterns refusing NUL. Run as is, those
validators were about half of a 10k-event request (issue 18, item 2). Here the batch is first validated by
:class:`FastEvent`, the same fields without them, and the rules they enforce are then checked once over the
whole batch:

- NUL in any string: JSON can only carry it as the escape ``\\u0000`` (pydantic refuses raw control characters),
  so one scan of the body for that escape (a backslash-escaped backslash before ``u0000`` only sends a clean
  batch down the exact path);
- timestamp bounds: the minimum and maximum of the parsed values against ``[timestamp_min, now + max future]``;
- attribute rules (finite numbers, 64-bit integers, depth, key count): on the attributes' orjson text, which is
  also what gets stored. Flat objects (one ``{`` per event, no ``[``) are within any depth limit and have
  ``len(object)`` keys; ``null`` (orjson's spelling of NaN/±Infinity) or 19 digits in a row (a possibly too large
  integer) or anything nested sends the batch to :func:`api.schemas_common.check_json` per event.

Anything these checks cannot clear — and every refusal — goes through the contract model itself, so a refused
batch gets exactly the 422 it got before (tests/api/events/test_event_refusals.py pins the bodies) and nothing
is accepted that the contract refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Annotated, cast

from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from api.attributes import DIGITS_AS_ZERO, encode_attributes, encode_attributes_list, encode_attributes_many
from api.events.schemas import EventsIn
from api.json_types import JsonObject
from api.schemas_common import JsonProblem, check_json, parse_body
from api.settings import Settings, get_settings

#: An integer of 19 or more digits may lie beyond ±2^63 (2^63 has 19); shorter ones never do (searched for in
#: the text with every digit turned into 0).
_LONG_DIGITS = b"0" * 19


@with_config(ConfigDict(extra="forbid"))
class FastEvent(TypedDict):
    """One event as :class:`~api.events.schemas.EventIn` without the checks that ran as Python per event (NUL
    patterns, timestamp bounds, attribute rules), validated into a dict: a ``TypedDict`` is about twice as fast
    to build as a model per event. Every batch it refuses, the contract refuses too."""

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    unit_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    value: Annotated[float, Field(default=1.0, allow_inf_nan=False)]
    #: aware, in the zone it was sent in (the contract's is converted to UTC; the writers convert either)
    timestamp: AwareDatetime
    attributes: Annotated[JsonObject, Field(default_factory=dict)]


@with_config(ConfigDict(extra="forbid"))
class _FastEventsIn(TypedDict):
    events: Annotated[list[FastEvent], Field(min_length=1, max_length=10_000)]


_FAST = TypeAdapter(_FastEventsIn)
_TIMESTAMP, _ATTRIBUTES = itemgetter("timestamp"), itemgetter("attributes")


@dataclass(frozen=True, slots=True)
class ParsedEvents:
    """A valid batch: the events in request order and each one's attributes as the JSON text to store
    (:func:`api.attributes.encode_attributes`'s spelling)."""

    events: list[FastEvent]
    attributes_json: list[str]


def _contract(raw: bytes) -> ParsedEvents:
    """The exact path: the contract model (raises the 422 on a bad batch), each event's attributes encoded alone."""
    events = parse_body(EventsIn, raw).events
    return ParsedEvents([cast(FastEvent, event.model_dump()) for event in events],
                        [encode_attributes(event.attributes) for event in events])


def _attributes_pass(values: list[JsonObject], listed: bytes | None, settings: Settings) -> bool:
    """Whether every attributes object obeys the rules ``EventIn`` checks (``check_attributes_json``; NUL aside,
    which the body scan covered), decided from the orjson text ``listed`` where it can be."""
    if (listed is not None and listed.count(b"{") == len(values) and listed.count(b"[") == 1
            and b"null" not in listed and _LONG_DIGITS not in listed.translate(DIGITS_AS_ZERO)):
        return max(map(len, values)) <= settings.max_attribute_keys
    try:
        for value in values:
            if value:
                check_json(value, settings.max_attribute_depth, settings.max_attribute_keys)
    except JsonProblem:
        return False
    return True


def parse_events(raw: bytes, now: datetime | None = None) -> ParsedEvents:
    """Validate a ``POST /v1/events`` body from bytes: the values :class:`~api.events.schemas.EventsIn` accepts,
    or its ``RequestValidationError`` (422), whichever path decided. ``now``: the clock for the future bound.
    """
    try:
        events = _FAST.validate_json(raw)["events"]
    except ValidationError:
        return _contract(raw)
    if b"\\u0000" in raw:
        return _contract(raw)
    # the process settings, as the contract's validators read them (pydantic validates before route code runs)
    settings = get_settings()
    stamps = list(map(_TIMESTAMP, events))  # why itemgetter and map: one C loop, no Python frame per event
    latest = (now or datetime.now(UTC)) + timedelta(hours=settings.timestamp_max_future_hours)
    if min(stamps) < settings.timestamp_min or max(stamps) > latest:
        return _contract(raw)
    values = list(map(_ATTRIBUTES, events))
    listed = encode_attributes_list(values)
    if not _attributes_pass(values, listed, settings):
        return _contract(raw)
    return ParsedEvents(events, encode_attributes_many(values, listed))
