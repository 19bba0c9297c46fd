"""The stored-card memo (``api.analysis.card_cache``) is keyed on the whole stored refresh state, not on
``computed_at`` alone: a refresh stored by another process is seen by the next read even when it carries the same
time (a clock that did not advance, or ``now`` given), and never an older card once a newer state is stored."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from api.db.engine import Database
from api.db.tables import Experiment, utc_now
from api.incremental import repository, service
from tests.api.incremental.test_refresh import ARMS, POLICY, _get, _seed
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics


def _experiment(db: Database, key: str) -> Experiment:
    with db.read() as session:
        experiment = session.scalars(select(Experiment).where(Experiment.key == key)).one()
        session.expunge(experiment)
    return experiment


def test_a_refresh_stamped_with_the_same_time_is_not_answered_from_the_old_card(client: TestClient, keys: Keys,
                                                                                db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="same-time", variants=ARMS)
    _seed(db, "same-time", range(0, 20), hours_ago=5)
    experiment = _experiment(db, "same-time")
    at = utc_now()
    # "another process" refreshes: nothing in the serving app is told (no warm-up, no memo call)
    first = service.refresh(db, experiment, POLICY, now=at)
    card = _get(client, "same-time", keys)  # built and memoised under the stored state
    assert sum(card["current_n"].values()) == 20

    _seed(db, "same-time", range(20, 50), hours_ago=5)
    second = service.refresh(db, experiment, POLICY, full=True, now=at)
    assert second.state.computed_at == first.state.computed_at  # the same time: computed_at alone would not tell
    assert second.state != first.state
    again = _get(client, "same-time", keys)
    assert sum(again["current_n"].values()) == 50
    assert again["computed_at"] == card["computed_at"]
    with db.read() as session:
        assert repository.state(session, experiment.id) == second.state
