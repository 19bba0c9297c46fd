"""Published scorecards: the default scorecard of a refresh, stored beside its state, so that a read is a lookup.

A refresh (``api.incremental.service.refresh``, usually in ``titrate refresh-worker``) calls :func:`publish_card` in
the transaction that saves its new state: the scorecard a read without ``as_of``, ``segment`` or ``fresh`` would
build from that state's rows — the same ``load_stored_scorecard`` and ``scorecard_json``, encoded as the route's
response model encodes it — is stored with the state. State and card are committed together, and saving a new
state clears the old card, so a card is never served for a state other than its own.

:func:`published_body` answers such a read from it when it still describes the experiment: its state is the stored
one and usable, and nothing else the card shows changed since — the status and the allocation history (a new
version changes SRM, strata and the bandit stopping rule), recorded in ``card_key``. Otherwise (no card yet, a status
change, a new allocation version, an experiment with model variants, whose card adds the live serving report) the
read builds the card as before. Why (issues 14 and 18): with the refresh in its own process, the first read after
each refresh built the card in the serving process (1–2 s of CPU under load), which was the scorecard-read p99 and
stalled assignment in that worker.
"""

from __future__ import annotations

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from api.analysis.schemas import ScorecardOut
from api.analysis.scorecard import load_stored_scorecard, quantile_specs
from api.analysis.serialise import scorecard_json
from api.analysis.wire import ScorecardJson
from api.db.tables import Experiment
from api.experiments import repository as experiments_repository
from api.experiments.plan import plan_of
from api.incremental import repository as incremental_repository
from api.incremental.repository import RefreshState

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
