"""Small shared pieces of request/response schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

# Keys appear in URLs, SQL parameters, SDK configs and hash seeds: keep them boring.
Key = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")]
EventName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
UnitId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
