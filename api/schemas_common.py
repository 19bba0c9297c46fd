"""Small shared pieces of request/response schemas."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Path
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

M = TypeVar("M", bound=BaseModel)
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
# Keys appear in URLs, SQL parameters, SDK configs and hash seeds: keep them boring.
Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
KeyPath = Annotated[str, Path(pattern=KEY_PATTERN, description="experiment or metric key")]
EventName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
UnitId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def contains_nul(value: Any) -> bool:
    """Whether a string, or any string key or value inside JSON-like data, holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False  # numbers, booleans, None, and nested models (which check their own fields)


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are refused, and no string anywhere may hold a NUL
    character (PostgreSQL text and JSONB cannot store it, so it would otherwise fail at the database)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        if contains_nul(value):
            raise ValueError("must not contain NUL (\\u0000) characters")
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
