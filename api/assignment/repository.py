"""Writes of the assignment domain outside the exposure writer: the per-experiment mismatch counter."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import update
from sqlalchemy.orm import Session

from api.db.tables import Experiment


def add_exposure_mismatches(session: Session, counts: Mapping[str, int]) -> None:
    """Add ``counts`` (experiment key → SDK exposures the server's assignment disagreed with) to each experiment's
    ``exposure_mismatches``, in the caller's transaction (an atomic increment: concurrent batches add up)."""
    for key, count in counts.items():
        session.execute(update(Experiment).where(Experiment.key == key)
                        .values(exposure_mismatches=Experiment.exposure_mismatches + count))
