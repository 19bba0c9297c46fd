"""Retention of the prediction log: rows older than ``serving_predictions_retain_days`` are deleted in batches.

The prediction log feeds monitoring (``/serving``: latency percentiles, drift, shadow agreement) over recent
traffic; scorecards never read it (serving latency and errors reach them as events). Without a limit it grows with
every request served. The purge runs after each allocation round of the scheduler that holds the updater lock, so
one replica deletes at a time; each batch is its own short transaction, so it never holds locks for long.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from api.db.engine import Database
from api.serving import repository


def purge_predictions(db: Database, now: datetime, retain_days: float, batch_size: int = 10_000) -> int:
    """Delete predictions created before ``now − retain_days``; returns the rows deleted (0 when ``retain_days``
    is 0: keep everything)."""
    if retain_days <= 0:
        return 0
    cutoff = now - timedelta(days=retain_days)
    deleted = 0
    while True:
        with db.transaction() as session:
            removed = repository.delete_predictions_before(session, cutoff, batch_size)
        deleted += removed
        if removed < batch_size:
            return deleted
