"""Response schemas of the allocation updater."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class StepOut(BaseModel):
    """What one allocation step did: a new version (``new_version``) or why not (``action``, ``reasons``)."""

    experiment: str
    strategy: str
    action: str
    version: int
    new_version: bool
    weights: dict[str, float]
    context_weights: dict[str, dict[str, float]] | None = None
    reasons: list[str]
    decision: dict[str, Any] | None
    details: dict[str, Any]
