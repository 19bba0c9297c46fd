"""A process-local memo of scorecards built from the materialised rows (``api.incremental``).

A read without ``as_of`` answers the analysis as of the last refresh: its numbers cannot change until the next
refresh stores new rows (a new ``computed_at``) or the allocation updater publishes a version (SRM, strata and the
bandit stopping rule read the allocation history). So the built :class:`~scorecards.scorecard.Scorecard` is kept under
(database, experiment, ``computed_at``, segment, allocation history) and a repeated read is a lookup plus
serialisation — scorecard reads no longer aggregate every stored per-unit row each time. The refresh job warms the
entries of experiments read since the previous round (``warm_keys``), so the first read after a refresh is a lookup
too. Bounded (least recently used out); each replica has its own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime

from scorecards.scorecard import Scorecard

#: Entries kept per process (scorecards are a few kB each).
MAX_ENTRIES = 512


@dataclass(frozen=True)
class CardKey:
    """What a stored scorecard depends on besides its frozen plan (fixed for an experiment id in one database)."""

    database: str
    experiment_id: int
    computed_at: datetime
    segment: str | None
    history: Hashable  # (number of allocation versions, newest version) — a new version changes SRM and strata


class StoredCardCache:
    """Least-recently-used memo of built scorecards; thread-safe (reads run in the server's worker threads)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._cards: OrderedDict[CardKey, Scorecard] = OrderedDict()
        self._read: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def get_or_build(self, key: CardKey, build: Callable[[], Scorecard]) -> Scorecard:
        """The cached scorecard for ``key``, or ``build()`` stored under it (built outside the lock)."""
        with self._lock:
            self._read.add((key.database, key.experiment_id))
            card = self._cards.get(key)
            if card is not None:
                self._cards.move_to_end(key)
                return card
        card = build()
        with self._lock:
            self._cards[key] = card
            self._cards.move_to_end(key)
            while len(self._cards) > self._max:
                self._cards.popitem(last=False)
        return card

    def take_read(self, database: str) -> set[int]:
        """Experiment ids of ``database`` read since the last call (the refresh job warms those)."""
        with self._lock:
            ids = {experiment_id for db, experiment_id in self._read if db == database}
            self._read = {entry for entry in self._read if entry[0] != database}
        return ids

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._cards.clear()
            self._read.clear()


#: The process's memo.
STORED_CARDS = StoredCardCache()
