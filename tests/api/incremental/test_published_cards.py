"""Published scorecards (``api.analysis.published``), both databases: a refresh stores its default scorecard with its
state, a read without ``as_of``/``segment``/``fresh`` answers those bytes without aggregating anything — the same
bytes it would build — and never a card of another status or allocation history, nor of a state older than the one
before, and that one only while the new state's card is being built (after the state's commit); a publisher that
fails leaves the refresh stored, no card, and the read builds it. A plain read is answered beside the router
(``api.analysis.fast_path``), with the route's bytes; refusals and other reads take the route."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from api.analysis import service as analysis_service
from api.analysis.card_cache import STORED_CARDS
from api.analysis.published import PUBLISH_ALWAYS, Publisher, publish_if_read
from api.db.engine import Database
from api.db.tables import Experiment, ScorecardRefresh, utc_now
from api.incremental import repository, scheduler, service
from api.incremental.repository import RefreshState
from tests.api.incremental.test_card_cache import stored_row_reads
from tests.api.incremental.test_refresh import ARMS, POLICY, _add_version, _get, _seed
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

CUPED = {"alpha": 0.05, "power": 0.8, "mde": 0.05, "sequential": False, "cuped": True, "cuped_lookback_days": 3}


def _raw(client: TestClient, key: str, keys: Keys, **params: Any) -> bytes:
    response = client.get(f"/v1/experiments/{key}/scorecard", params=params, headers=keys.headers("analyst"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.content


def _experiment(db: Database, key: str) -> Experiment:
    with db.read() as session:
        experiment = session.scalars(select(Experiment).where(Experiment.key == key)).one()
        session.expunge(experiment)
        return experiment


@dataclass(frozen=True)
class Published:
    """An experiment's stored refresh state and the card published with it (None: none)."""

    state: RefreshState
    card: str | None


def _published(db: Database, key: str) -> Published | None:
    with db.read() as session:
        state = repository.state(session, _experiment(db, key).id)
        found = repository.card_lookup(session, key)
    return None if state is None or found is None else Published(state, found.card)


def _unpublish(db: Database, key: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(update(ScorecardRefresh).where(ScorecardRefresh.experiment_id == _experiment(db, key).id)
                     .values(card=None, card_key=None))


def test_a_read_answers_the_published_bytes_which_equal_the_built_ones(client: TestClient, keys: Keys,
                                                                       db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="pub", variants=ARMS, design=CUPED)
    _seed(db, "pub", range(0, 300), hours_ago=30)
    first = _raw(client, "pub", keys)  # never refreshed: refreshed (and published) on this read
    found = _published(db, "pub")
    assert found is not None
    assert found.card is not None
    assert found.card.encode() == first

    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        published = _raw(client, "pub", keys)
    assert reads == []  # answered from the published card: no aggregation
    assert published == first

    _unpublish(db, "pub")
    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        built = _raw(client, "pub", keys)
    assert reads  # nothing published: the read builds the card from the stored rows
    assert built == published  # byte for byte what the route encodes itself


def test_a_round_of_the_job_publishes_and_a_round_without_a_publisher_does_not(client: TestClient, keys: Keys,
                                                                               db: Database) -> None:
    service_db: Database = client.app.state.db  # type: ignore[attr-defined]
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="job", variants=ARMS)
    _seed(db, "job", range(0, 100), hours_ago=30)
    _get(client, "job", keys)

    _seed(db, "job", range(100, 160), hours_ago=2)
    assert set(scheduler.run_round(service_db, POLICY).refreshed) == {"job"}
    found = _published(db, "job")
    assert found is not None
    assert found.card is None
    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        assert sum(_get(client, "job", keys)["current_n"].values()) == 160
    assert reads

    _seed(db, "job", range(160, 200), hours_ago=1)
    assert set(scheduler.run_round(service_db, POLICY, publish=PUBLISH_ALWAYS).refreshed) == {"job"}
    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        card = _get(client, "job", keys)
    assert reads == []
    assert sum(card["current_n"].values()) == 200
    state = _published(db, "job")
    assert state is not None
    assert card["computed_at"].replace("Z", "+00:00") == state.state.computed_at.isoformat()


def test_a_card_is_not_served_once_the_status_or_the_allocation_history_changed(client: TestClient, keys: Keys,
                                                                                db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="moved", variants=ARMS)
    _seed(db, "moved", range(0, 120), hours_ago=30)
    assert _get(client, "moved", keys)["status"] == "running"

    paused = client.post("/v1/experiments/moved/pause", headers=keys.headers("admin"))
    assert paused.status_code == 200, paused.text
    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        assert _get(client, "moved", keys)["status"] == "paused"
    assert reads  # the published card says "running": built instead

    published = _get(client, "moved", keys, fresh="true")  # publishes a card of the paused experiment
    _add_version(db, "moved", 2, {"control": 0.9, "b": 0.1}, hours_ago=1)
    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        versioned = _get(client, "moved", keys)
    assert reads  # SRM and strata read the allocation history: a new version is not in the published card
    assert versioned["computed_at"] == published["computed_at"]


@dataclass(frozen=True)
class _Broken:
    """A publisher failing where ``fails`` says: asked whether the state gets a card (``wanted``, inside the
    refresh's transaction), or publishing it (``publish``, after the commit)."""

    fails: str
    calls: list[RefreshState]

    def wanted(self, session: Session, _experiment: Experiment, state: RefreshState) -> bool:
        self.calls.append(state)
        if self.fails == "wanted":
            session.execute(text("SELECT no_such_column FROM scorecard_refreshes"))  # fails inside the transaction
        return True

    def publish(self, db: Database, _experiment: Experiment, _state: RefreshState) -> None:
        with db.read() as session:
            session.execute(text("SELECT no_such_column FROM scorecard_refreshes"))


@pytest.mark.parametrize("fails", ["wanted", "publish"])
def test_a_failing_publisher_keeps_the_refresh_and_the_read_builds_the_card(client: TestClient, keys: Keys,
                                                                           db: Database, fails: str) -> None:
    service_db: Database = client.app.state.db  # type: ignore[attr-defined]
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="fails", variants=ARMS)
    _seed(db, "fails", range(0, 80), hours_ago=30)
    assert sum(_get(client, "fails", keys)["current_n"].values()) == 80  # the first read publishes a card
    before = _published(db, "fails")
    assert before is not None
    assert before.card is not None
    _seed(db, "fails", range(80, 100), hours_ago=2)
    broken = _Broken(fails, [])

    result = service.refresh(service_db, _experiment(db, "fails"), POLICY, publish=broken)
    assert broken.calls == [result.state]
    found = _published(db, "fails")
    assert found is not None
    assert found.state == result.state != before.state  # stored (PostgreSQL: the savepoint kept the transaction)
    assert found.card is None  # not the card of the state before: reads build the new state's
    with stored_row_reads(client) as reads:
        card = _get(client, "fails", keys)
    assert reads
    assert sum(card["current_n"].values()) == 100


def test_the_card_is_built_after_the_commit_and_reads_meanwhile_get_the_card_before(
        client: TestClient, keys: Keys, db: Database) -> None:
    """A publishing refresh builds its card after its transaction committed: meanwhile a writer commits without
    waiting for it (SQLite's write lock is free), and a plain read is answered from the card of the state before —
    with that state's ``computed_at`` and counts — until the new card is stored."""
    service_db: Database = client.app.state.db  # type: ignore[attr-defined]
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="after", variants=ARMS)
    _seed(db, "after", range(0, 50), hours_ago=30)
    first = _get(client, "after", keys)
    _seed(db, "after", range(50, 70), hours_ago=2)
    seen: list[dict[str, Any]] = []

    @dataclass(frozen=True)
    class Watching(Publisher):
        def publish(self, db: Database, experiment: Experiment, state: RefreshState) -> None:
            with db.transaction() as session:  # a writer: it would wait for the lock inside the refresh's transaction
                repository.want_card(session, experiment.id, utc_now())
            STORED_CARDS.clear()
            with stored_row_reads(client) as reads:
                seen.append(_get(client, "after", keys))
            assert reads == []  # answered from the card kept from the state before
            super().publish(db, experiment, state)

    result = service.refresh(service_db, _experiment(db, "after"), POLICY, publish=Watching())
    assert seen == [first]  # one refresh old: its computed_at and counts
    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        now = _get(client, "after", keys)
    assert reads == []
    assert sum(now["current_n"].values()) == 70
    assert now["computed_at"].replace("Z", "+00:00") == result.state.computed_at.isoformat()


@dataclass(frozen=True)
class _Crashing(Publisher):
    """A refresh process that ended between its state's commit and storing the card (nothing published)."""

    def publish(self, db: Database, experiment: Experiment, state: RefreshState) -> None:
        return None


def test_a_card_older_than_the_state_before_is_never_kept(client: TestClient, keys: Keys, db: Database) -> None:
    service_db: Database = client.app.state.db  # type: ignore[attr-defined]
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="crash", variants=ARMS)
    _seed(db, "crash", range(0, 40), hours_ago=30)
    first = _get(client, "crash", keys)  # state 0 and its card
    _seed(db, "crash", range(40, 50), hours_ago=3)
    service.refresh(service_db, _experiment(db, "crash"), POLICY, publish=_Crashing())
    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        assert _get(client, "crash", keys) == first  # state 1 has no card yet: the card of state 0 answers
    assert reads == []
    _seed(db, "crash", range(50, 60), hours_ago=2)
    seen: list[int] = []

    @dataclass(frozen=True)
    class Watching(Publisher):
        def publish(self, db: Database, experiment: Experiment, state: RefreshState) -> None:
            STORED_CARDS.clear()
            with stored_row_reads(client) as reads:
                seen.append(sum(_get(client, "crash", keys)["current_n"].values()))
            assert reads  # the card of state 0 is two states old now: cleared, the read builds state 2's
            super().publish(db, experiment, state)

    service.refresh(service_db, _experiment(db, "crash"), POLICY, publish=Watching())
    assert seen == [60]
    found = _published(db, "crash")
    assert found is not None
    assert found.card is not None
    assert sum(json.loads(found.card)["current_n"].values()) == 60


@pytest.mark.parametrize("read", ["segment", "fresh", "as_of"])
def test_reads_with_a_segment_fresh_or_as_of_never_answer_the_published_card(
        client: TestClient, keys: Keys, db: Database, read: str) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="other", variants=ARMS)
    _seed(db, "other", range(0, 60), hours_ago=30)
    published = _get(client, "other", keys)
    assert published["segment_attribute"] is None
    _seed(db, "other", range(60, 90), hours_ago=2)
    params = {"segment": {"segment": "platform"}, "fresh": {"fresh": "full"},
              "as_of": {"as_of": utc_now().replace(tzinfo=None).isoformat()}}[read]
    body = _get(client, "other", keys, **params)
    if read == "segment":
        assert body["segment_attribute"] == "platform"
        assert body["computed_at"] == published["computed_at"]
        assert sum(body["current_n"].values()) == 60  # the last refresh's rows, broken down
    else:
        assert sum(body["current_n"].values()) == 90  # refreshed first, or computed live


def _timed(client: TestClient, status: int) -> float:
    text = client.get("/metrics").text
    match = re.search(r'titrate_request_seconds_count\{method="GET",route="/v1/experiments/\{key\}/scorecard",'
                      rf'status="{status}"\}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def test_a_plain_read_is_answered_beside_the_router_and_timed_under_the_route(
        client: TestClient, keys: Keys, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="fast", variants=ARMS)
    _seed(db, "fast", range(0, 90), hours_ago=30)
    routed = _raw(client, "fast", keys, fresh="false", unused="1")  # the route (another query)
    before = _timed(client, 200)

    def no_route(*_args: Any) -> None:
        raise AssertionError("the route ran")

    monkeypatch.setattr(analysis_service, "published_scorecard", no_route)
    monkeypatch.setattr(analysis_service, "analyse", no_route)
    assert _raw(client, "fast", keys) == routed  # answered beside the router, the route's bytes
    assert _raw(client, "fast", keys, fresh="false") == routed
    assert _timed(client, 200) == before + 2


def test_refusals_and_reads_the_card_does_not_answer_take_the_route(client: TestClient, keys: Keys,
                                                                    db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="refused", variants=ARMS)
    create_experiment(client, keys.headers("admin"), key="drafted", variants=ARMS)
    _seed(db, "refused", range(0, 50), hours_ago=30)
    _get(client, "refused", keys)
    keyless = client.get("/v1/experiments/refused/scorecard")
    assert keyless.status_code == 401
    assert keyless.headers["www-authenticate"] == "Bearer"
    wrong = client.get("/v1/experiments/refused/scorecard", headers={"Authorization": "Bearer tk_nope"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "invalid or revoked API key"
    sdk = client.get("/v1/experiments/refused/scorecard", headers=keys.headers("sdk"))
    assert sdk.status_code == 403
    assert "'analyst' role" in sdk.json()["detail"]
    analyst = keys.headers("analyst")
    assert client.get("/v1/experiments/nothing/scorecard", headers=analyst).status_code == 404
    assert client.get("/v1/experiments/drafted/scorecard", headers=analyst).status_code == 409
    bad_key = client.get("/v1/experiments/Bad Key!/scorecard", headers=analyst)
    assert bad_key.status_code == 422
    assert bad_key.json()["detail"][0]["loc"] == ["path", "key"]
    assert client.post("/v1/experiments/refused/scorecard", headers=analyst).status_code == 405


def test_the_job_publishes_only_for_experiments_read_lately(client: TestClient, keys: Keys, db: Database) -> None:
    service_db: Database = client.app.state.db  # type: ignore[attr-defined]
    create_metrics(client, keys.headers("admin"))
    for key in ("read", "unread"):
        create_experiment(client, keys.headers("admin"), start=True, key=key, variants=ARMS)
        _seed(db, key, range(0, 60), hours_ago=30)
    _get(client, "read", keys)  # its first read refreshes and publishes, and marks the card wanted
    job = publish_if_read(24.0)
    round_ = scheduler.run_round(service_db, POLICY, publish=job)
    assert set(round_.refreshed) == {"read", "unread"}
    read, unread = _published(db, "read"), _published(db, "unread")
    assert read is not None
    assert read.card is not None  # read lately: published with the round's state
    assert unread is not None
    assert unread.card is None  # never read: the round built no card

    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        assert sum(_get(client, "unread", keys)["current_n"].values()) == 60
    assert reads  # no card: built by the read, which marks it wanted
    with db.read() as session:
        assert repository.card_wanted_at(session, _experiment(db, "unread").id) is not None
    _seed(db, "unread", range(60, 80), hours_ago=2)
    scheduler.run_round(service_db, POLICY, publish=job)
    STORED_CARDS.clear()
    with stored_row_reads(client) as reads:
        assert sum(_get(client, "unread", keys)["current_n"].values()) == 80
    assert reads == []  # the next round published it

    _seed(db, "unread", range(80, 90), hours_ago=1)
    scheduler.run_round(service_db, POLICY, publish=publish_if_read(1e-9))  # the read is now too long ago
    found = _published(db, "unread")
    assert found is not None
    assert found.card is None
