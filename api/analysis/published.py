"""Published scorecards: the default scorecard of a refresh, stored beside its state, so that a read is a lookup.

A refresh (``api.incremental.service.refresh``, usually in ``titrate refresh-worker``) calls :func:`publish_card` in
the transaction that saves its new state: the scorecard a read without ``as_of``, ``segment`` or ``fresh`` would
build from that state's rows — the same ``load_stored_scorecard`` and ``scorecard_json``, encoded as the route's
response model encodes it — is stored with the state. State and card are committed together, and saving a new
state clears the old card, so a card is never served for a state other than its own.

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
always publishes (:func:`publish_for_read`).
"""

from __future__ import annotations

import logging
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
from api.incremental.service import CardPublisher

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


def publish_card(session: Session, experiment: Experiment, state: RefreshState) -> None:
    """Build the default scorecard of ``state`` (just saved in ``session``'s transaction) and store it with it.
    A plan with quantile metrics publishes nothing: those are computed live on every read."""
    if quantile_specs(plan_of(experiment)):
        return
    card = load_stored_scorecard(session, experiment, state)
    body = scorecard_body(scorecard_json(experiment, card, state.computed_at))
    key = card_key(experiment.status, experiment.plan_fingerprint,
                   experiments_repository.allocation_history_key(session, experiment.id))
    incremental_repository.publish_card(session, experiment.id, key, body.decode())


def publish_for_read(session: Session, experiment: Experiment, state: RefreshState) -> None:
    """:func:`publish_card` for a refresh a read asked for (the first read, ``fresh``): that read wants the card."""
    publish_card(session, experiment, state)
    incremental_repository.want_card(session, experiment.id, utc_now())


def publish_if_read(window_hours: float) -> CardPublisher:
    """The refresh job's publisher: :func:`publish_card` for an experiment a plain read needed within
    ``window_hours`` of the refresh (``TITRATE_SCORECARD_PUBLISH_READ_HOURS``), nothing for the others — building a
    card is an aggregation over every stored row (~0.5 s at 100k units), which an experiment nobody reads should not
    pay at every refresh. Its next plain read builds the card and marks it wanted (:func:`want_card`)."""
    window = timedelta(hours=window_hours)

    def publish(session: Session, experiment: Experiment, state: RefreshState) -> None:
        wanted = incremental_repository.card_wanted_at(session, experiment.id)
        if wanted is not None and state.computed_at - wanted <= window:
            publish_card(session, experiment, state)

    return publish


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
