"""Schemas of the dead-letter listing."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class DeadLetterOut(BaseModel):
    """One refused row: what it was (JSON text as received), why the database refused it, and when."""

    id: int
    kind: str
    experiment_id: int | None
    payload: str
    error: str
    created_at: datetime


class DeadLettersOut(BaseModel):
    """Counts by kind, and the newest rows (``next_before_id`` pages to older ones)."""

    counts: dict[str, int]
    items: list[DeadLetterOut]
    next_before_id: int | None
