"""A process-local memo of scorecards built from the materialised rows (``api.incremental``).

A read without ``as_of`` answers the analysis as of the last refresh: its numbers cannot change until the next
refresh stores new rows (a new stored state) or the allocation updater publishes a version (SRM, strata and the
bandit stopping rule read the allocation history). So the built :class:`~scorecards.scorecard.Scorecard` is kept under
(database, experiment, stored refresh state, segment, allocation history) and a repeated read is a lookup plus
serialisation — scorecard reads no longer aggregate every stored per-unit row each time. Bounded (least recently used
out); each process has its own.

**Refreshes by another process.** The refresh job usually runs in ``titrate refresh-worker``, not in the process
that serves reads, so nothing here is told about a refresh. Correctness does not depend on being told: every read
first reads the experiment's stored state (``api.incremental.repository.state``, in the read's session) and looks
up the card under that whole state — ``computed_at`` together with the watermark, mode, counts and components — so a
refresh stored by any process changes the key and the next read builds from the new rows: once a state is stored,
no read that found it is answered with a card of an older one. Keying on the whole state rather than
``computed_at`` alone also tells apart two refreshes stamped with the same time (a clock that did not advance, or
``now`` given). Entries of superseded states are never looked up again and age out. A read of the default card
(no segment) usually never gets here: the refresh published it with its state (``api.analysis.published``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from scorecards.scorecard import Scorecard

#: Entries kept per process (scorecards are a few kB each).
MAX_ENTRIES = 512


@dataclass(frozen=True)
class CardKey:
    """What a stored scorecard depends on besides its frozen plan (fixed for an experiment id in one database)."""

    database: str
    experiment_id: int
    stored: Hashable  # the stored refresh state the card is built from (api.incremental.repository.RefreshState)
    segment: str | None
    history: Hashable  # (number of allocation versions, newest version) — a new version changes SRM and strata


class StoredCardCache:
    """Least-recently-used memo of built scorecards; thread-safe (reads run in the server's worker threads)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._cards: OrderedDict[CardKey, Scorecard] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: CardKey, build: Callable[[], Scorecard]) -> Scorecard:
        """The cached scorecard for ``key``, or ``build()`` stored under it (built outside the lock)."""
        with self._lock:
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

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._cards.clear()


#: The process's memo.
STORED_CARDS = StoredCardCache()
