"""Small shared pieces of request/response schemas."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
# Keys appear in URLs, SQL parameters, SDK configs and hash seeds: keep them boring.
Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
KeyPath = Annotated[str, Path(pattern=KEY_PATTERN, description="experiment or metric key")]
EventName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
UnitId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _find_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_find_nul(k) or _find_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_find_nul(v) for v in value)
    return False  # numbers, booleans, None, and nested models (which check their own fields)


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are refused, and no string anywhere may hold a NUL
    character (PostgreSQL text and JSONB cannot store it, so it would otherwise fail at the database)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        if _find_nul(value):
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value
