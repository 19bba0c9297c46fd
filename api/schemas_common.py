"""Small shared pieces of request/response schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Path
from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from api.json_types import JsonObject
from api.settings import Settings, get_settings

M = TypeVar("M", bound=BaseModel)
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
# Keys appear in URLs, SQL parameters, SDK configs and hash seeds: keep them boring.
Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
KeyPath = Annotated[str, Path(pattern=KEY_PATTERN, description="experiment or metric key")]
EventName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
UnitId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


#: Integers a JSON value may hold: 64-bit signed, what every store and SDK keeps exactly (SQLite JSON and
#: integer columns, PostgreSQL bigint; larger JSON numbers turn into lossy doubles on SQLite).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Nesting depth of free-form JSON in a body (variant payloads); unit attributes have ``max_attribute_depth``.
MAX_JSON_DEPTH = 32
#: Request-body fields holding a unit's attributes: limited by ``max_attribute_keys``/``max_attribute_depth``.
ATTRIBUTE_FIELDS = frozenset({"attributes"})
_NUL = "must not contain NUL (\\u0000) characters"
_NON_FINITE = "must be a finite number (NaN, Infinity and numbers too large for a double such as 1e309 are refused)"
_BIG_INT = "integers must lie within ±2^63 (64-bit signed)"


class JsonProblem(Exception):
    """Where inside a JSON value (``path`` of keys and indexes) which rule is broken (``message``)."""

    def __init__(self, path: list[str | int], message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def _walk(value: Any, depth: int, max_depth: int, keys: list[int]) -> None:
    # why type() identity rather than isinstance: bool is an int subclass (and fine), and this runs on the
    # assignment hot path, where exact type checks are the cheapest Python can do.
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            raise JsonProblem([], _NUL)
    elif kind is float:
        if value - value != 0.0:  # NaN and ±inf (inf - inf is NaN): cheaper than a call to math.isfinite
            raise JsonProblem([], _NON_FINITE)
    elif kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise JsonProblem([], _BIG_INT)
    elif kind is dict:
        if depth >= max_depth:
            raise JsonProblem([], f"nested deeper than {max_depth} levels")
        keys[0] -= len(value)
        if keys[0] < 0:
            raise JsonProblem([], f"more than {keys[1]} keys in all")
        for k, v in value.items():
            if "\x00" in k:
                raise JsonProblem([k], _NUL)
            try:
                _walk(v, depth + 1, max_depth, keys)
            except JsonProblem as problem:
                problem.path.insert(0, k)
                raise
    elif kind is list or kind is tuple:
        if depth >= max_depth:
            raise JsonProblem([], f"nested deeper than {max_depth} levels")
        for i, v in enumerate(value):
            try:
                _walk(v, depth + 1, max_depth, keys)
            except JsonProblem as problem:
                problem.path.insert(0, i)
                raise
    # None, bool and nested models (which check their own fields) pass


def check_json(value: Any, max_depth: int = MAX_JSON_DEPTH, max_keys: int | None = None) -> None:
    """Raise :class:`JsonProblem` at the first place ``value`` breaks a rule every stored JSON value obeys.

    No NUL character in a string or key (PostgreSQL text/JSONB cannot hold it); every float finite (NaN and
    ±Infinity are not JSON, and ``1e309`` parses to infinity); every integer within ±2^63; objects and lists
    nested at most ``max_depth`` deep (an object of scalars is depth 1); at most ``max_keys`` object keys in
    all, counted at every level (``None``: no limit).
    """
    limit = max_keys if max_keys is not None else 2**62
    _walk(value, 0, max_depth, [limit, limit])


def json_validation_error(problem: JsonProblem, value: Any, title: str = "body") -> ValidationError:
    """A pydantic ``ValidationError`` located at the problem's path: raised inside a field validator, its ``loc``
    continues the field's (``["body", "attributes", "x"]``)."""
    return ValidationError.from_exception_data(title, [InitErrorDetails(
        type=PydanticCustomError("json_value", "{message}", {"message": problem.message}),
        loc=tuple(problem.path), input=value)])


def check_attributes_json(value: JsonObject) -> JsonObject:
    """Validator of a unit's attributes: :func:`check_json` with the configured limits ``TITRATE_MAX_ATTRIBUTE_KEYS``
    and ``TITRATE_MAX_ATTRIBUTE_DEPTH`` (from the process settings: pydantic validates a body before any route
    code runs)."""
    if value:
        settings = get_settings()
        try:
            check_json(value, settings.max_attribute_depth, settings.max_attribute_keys)
        except JsonProblem as problem:
            raise json_validation_error(problem, value) from None
    return value


def sane_timestamp(value: datetime, settings: Settings | None = None, now: datetime | None = None) -> datetime:
    """``value`` in UTC (naive = UTC) if it lies within ``[timestamp_min, now + timestamp_max_future_hours]``
    (``TITRATE_TIMESTAMP_MIN``, ``TITRATE_TIMESTAMP_MAX_FUTURE_HOURS``; default 2000-01-01T00:00:00Z … now + 24 h),
    else ``ValueError`` naming the range.

    Checked before the conversion to UTC, so ``0001-01-01T00:00:00+14:00`` or ``9999-12-31T23:59:59-14:00``
    (which overflow Python's datetime when converted) are refused rather than crashing a writer.
    """
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    earliest = settings.timestamp_min
    latest = now + timedelta(hours=settings.timestamp_max_future_hours)
    # why compare before converting: aware comparisons never overflow, astimezone near year 1 or 9999 can
    if not earliest <= value <= latest:
        raise ValueError(f"must lie between {earliest.astimezone(UTC).isoformat()} (TITRATE_TIMESTAMP_MIN) and "
                         f"{latest.isoformat(timespec='seconds')} (now + TITRATE_TIMESTAMP_MAX_FUTURE_HOURS)")
    return value.astimezone(UTC)


def _sane_timestamp(value: datetime) -> datetime:
    return sane_timestamp(value)


#: An event or exposure time: with a time zone, within the sane range of :func:`sane_timestamp`, returned in UTC.
Timestamp = Annotated[AwareDatetime, AfterValidator(_sane_timestamp)]


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are refused, and every value obeys :func:`check_json`'s rules (no
    NUL character, no non-finite float, no integer beyond 64 bits, bounded nesting); fields named in
    ``ATTRIBUTE_FIELDS`` also obey the attribute key and depth limits. A refusal is a 422 whose ``loc`` points
    inside the value, e.g. ``["body", "attributes", "x"]``."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _json_rules(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name in ATTRIBUTE_FIELDS and type(value) is dict:
            return check_attributes_json(value)
        try:
            check_json(value)
        except JsonProblem as problem:
            raise json_validation_error(problem, value) from None
        return value


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that parses its JSON body itself (see ``parse_body``)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}},
            "security": [{"HTTPBearer": []}]}


def parse_body(model: type[M], raw: bytes) -> M:
    """Validate a JSON body straight from bytes with pydantic-core (the hot paths: assign and events).

    Several times faster than FastAPI's parse-then-validate for large batches; errors keep FastAPI's shape
    (``loc`` starting with ``"body"``), so clients see the same 422 either way.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
