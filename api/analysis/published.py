"""Published scorecards: the default scorecard of a refresh, stored beside its state, so that a read is a lookup.

A refresh (``api.incremental.service.refresh``, usually in ``titrate refresh-worker``) that publishes
(:class:`Publisher`) stores, with its new state, the scorecard a read without ``as_of``, ``segment`` or ``fresh``
would build from that state's rows — the same ``load_stored_scorecard`` and ``scorecard_json``, encoded as the
route's response model encodes it (:func:`publish_card`). The card is built after the state's transaction committed,
in a snapshot that holds that state, and stored by a short transaction that finds the state unchanged: building it
reads every stored row, which inside the state's transaction held SQLite's only write lock (~150–250 ms per refresh
at 20k units, ``bench/refresh_write_lock.py``). Until it is stored, reads are answered from the card of the state
before (its ``computed_at`` says so): the transaction that saves a state keeps that card only when the new state
will get one, and clears it otherwise, or when publishing fails — so a read is answered from a card at most one
refresh old, and only while the next card is being built.

:func:`published_body` answers such a read from it when it still describes the experiment: nothing else the card
shows changed since its state was saved — the status, the frozen plan and the allocation history (a new version
changes SRM, strata and the bandit stopping rule), recorded in ``card_key``. Otherwise (no card yet, a status
change, a new allocation version, an experiment with model variants, whose card adds the live serving report) the
read builds the card as before. Why (issues 14 and 18): with the refresh in its own process, the first read after
each refresh built the card in the serving process (1–2 s of CPU under load), which was the scorecard-read p99 and
stalled assignment in that worker.

**Which experiments get a card.** Building one is an aggregation over every stored row (~0.5 s at 100k units), so
the refresh job publishes only for experiments a plain read needed within ``TITRATE_SCORECARD_PUBLISH_READ_HOURS``
(:func:`publish_if_read`): a read that finds no card builds it as before and marks the experiment
(``scorecard_refreshes.card_wanted_at``, :func:`want_card`); a refresh a read asks for (the first read, ``fresh``)
always publishes (:data:`PUBLISH_FOR_READ`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from api.analysis.schemas import ScorecardOut
from api.analysis.scorecard import load_stored_scorecard, quantile_specs
from api.analysis.serialise import scorecard_json
from api.analysis.wire import ScorecardJson
from api.db.engine import Database
from api.db.tables import Experiment, utc_now
from api.experiments import repository as experiments_repository
from api.experiments.plan import plan_of
from api.incremental import repository as incremental_repository
from api.incremental.repository import RefreshState

log = logging.getLogger(__name__)

#: The route's response model: validating and dumping through it gives the bytes the route itself sends.
_SCORECARD = TypeAdapter(ScorecardOut)


def scorecard_body(card: ScorecardJson) -> bytes:
    """``card`` as the scorecard route's response: validated by its response model and dumped to JSON by alias."""
    return _SCORECARD.dump_json(_SCORECARD.validate_python(card), by_alias=True)


def card_key(status: str, plan_fingerprint: str | None, history: tuple[int, int | None]) -> str:
    """What a published card depends on besides its refresh state: the experiment's status, its frozen plan
    (fingerprint) and its allocation history (number of versions, newest version)."""
    count, newest = history
    return f"{status}|{plan_fingerprint}|{count}|{newest}"


def publish_card(db: Database, experiment: Experiment, state: RefreshState, *, mark_read: bool = False) -> None:
    """Build the default scorecard of ``state`` (committed) and store it with it, unless a newer state was saved
    meanwhile (its refresh publishes its own). The card is built in one snapshot of the database that still holds
    ``state`` — outside any write transaction — and stored by a short one that checks the state again under the
    experiment's refresh lock. ``mark_read``: also record that a plain read needs the card (:func:`want_card`).
    A plan with quantile metrics gets no card: those are computed live on every read."""
    built: tuple[str, str] | None = None
    if not quantile_specs(plan_of(experiment)):
        with db.read(snapshot=True) as session:
            if incremental_repository.state(session, experiment.id) == state:
                card = load_stored_scorecard(session, experiment, state)
                body = scorecard_body(scorecard_json(experiment, card, state.computed_at))
                key = card_key(experiment.status, experiment.plan_fingerprint,
                               experiments_repository.allocation_history_key(session, experiment.id))
                built = (key, body.decode())
    if built is None and not mark_read:
        return
    with db.transaction() as session:
        incremental_repository.lock_experiment(session, experiment.id)
        if built is not None and incremental_repository.state(session, experiment.id) == state:
            incremental_repository.publish_card(session, experiment.id, *built, state.computed_at)
        if mark_read:
            incremental_repository.want_card(session, experiment.id, utc_now())


@dataclass(frozen=True)
class Publisher:
    """The :class:`~api.incremental.service.CardPublisher` of refreshes: which states get a card, and publishing it
    (:func:`publish_card`). ``window``: only for experiments a plain read needed within it of the refresh (the
    refresh job: :func:`publish_if_read`); None: every state. ``mark_read``: the refresh is a read's (the first
    read, ``fresh``: :data:`PUBLISH_FOR_READ`), which marks the experiment read."""

    window: timedelta | None = None
    mark_read: bool = False

    def wanted(self, session: Session, experiment: Experiment, state: RefreshState) -> bool:
        """Whether ``state`` gets a card: never for a plan with quantile metrics; else always without a window,
        or when a plain read needed one within it."""
        if quantile_specs(plan_of(experiment)):
            return False
        if self.window is None:
            return True
        wanted = incremental_repository.card_wanted_at(session, experiment.id)
        return wanted is not None and state.computed_at - wanted <= self.window

    def publish(self, db: Database, experiment: Experiment, state: RefreshState) -> None:
        """:func:`publish_card`."""
        publish_card(db, experiment, state, mark_read=self.mark_read)


#: Publishes the card of every refresh (tests, benchmarks).
PUBLISH_ALWAYS = Publisher()
#: A refresh a read asked for (the first read, ``fresh``): that read wants the card.
PUBLISH_FOR_READ = Publisher(mark_read=True)


def publish_if_read(window_hours: float) -> Publisher:
    """The refresh job's publisher: a card for an experiment a plain read needed within ``window_hours`` of the
    refresh (``TITRATE_SCORECARD_PUBLISH_READ_HOURS``), none for the others — building a card is an aggregation
    over every stored row (~0.5 s at 100k units), which an experiment nobody reads should not pay at every refresh.
    Its next plain read builds the card and marks it wanted (:func:`want_card`)."""
    return Publisher(window=timedelta(hours=window_hours))


#: A plain read that built its card marks it wanted again only when the mark is older than this (a write per read
#: would be the price of a card that keeps going stale, e.g. a bandit's new allocation versions).
REMARK_AFTER = timedelta(hours=1)


def card_unwanted(session: Session, experiment: Experiment) -> bool:
    """Whether the refresh job would not publish the experiment's card for lack of a recent read (no mark, or one
    older than :data:`REMARK_AFTER`)."""
    wanted = incremental_repository.card_wanted_at(session, experiment.id)
    return wanted is None or utc_now() - wanted > REMARK_AFTER


def want_card(db: Database, experiment_id: int, key: str) -> None:
    """After a plain read built the card of experiment ``key`` because none answered: mark it wanted, so the refresh
    job publishes the next ones. A failure is logged, never the read's (the mark is an optimisation)."""
    try:
        with db.transaction() as session:
            incremental_repository.want_card(session, experiment_id, utc_now())
    except Exception:
        log.warning("could not mark a scorecard as read", exc_info=True, extra={"experiment": key})


def published_body(session: Session, key: str) -> bytes | None:
    """The published default scorecard of experiment ``key`` when it answers a read now, found in one query;
    None when the read must build it (see the module docstring) or there is no such started experiment.

    Why no check that the state's stored components cover the plan: the refresh that saved the state computed them
    from the same frozen plan (its fingerprint is in ``card_key``), and a new state clears the card."""
    found = incremental_repository.card_lookup(session, key)
    if found is None or found.card is None or found.has_model:
        return None
    if found.card_key != card_key(found.status, found.plan_fingerprint, (found.versions, found.newest_version)):
        return None
    return found.card.encode()
