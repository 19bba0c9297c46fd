"""The memo of stored scorecards (``api.analysis.card_cache``): a repeated read without ``as_of`` answers without
aggregating the stored rows again, and anything that changes the numbers (a refresh, an allocation version) is
seen at once. (The default card of a refresh is published with it: ``test_published_cards``.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from api.analysis.card_cache import CardKey, StoredCardCache
from api.db.engine import Database
from tests.api.incremental.test_refresh import ARMS, _add_version, _get, _seed
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics


@contextmanager
def stored_row_reads(client: TestClient) -> Iterator[list[str]]:
    """Statements the service runs that read the materialised per-unit values (the costly aggregation)."""
    seen: list[str] = []
    engine = client.app.state.db.engine  # type: ignore[attr-defined]

    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "scorecard_unit_values" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", _record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", _record)


def test_a_repeated_read_is_a_lookup_until_the_numbers_can_change(client: TestClient, keys: Keys,
                                                                   db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="memo", variants=ARMS)
    _seed(db, "memo", range(0, 200), hours_ago=30)
    _get(client, "memo", keys)  # the first read refreshes (the default card is published: test_published_cards)
    by = {"segment": "platform"}  # a breakdown is not published: the memo serves it
    first = _get(client, "memo", keys, **by)

    with stored_row_reads(client) as reads:
        again = _get(client, "memo", keys, **by)
    assert reads == []
    assert again == first

    _seed(db, "memo", range(200, 260), hours_ago=2)
    fresh = _get(client, "memo", keys, fresh="true")
    with stored_row_reads(client) as reads:
        after = _get(client, "memo", keys, **by)
    assert reads  # a new refresh: built from the stored rows again
    assert sum(after["current_n"].values()) == 260

    _add_version(db, "memo", 2, {"control": 0.5, "b": 0.5}, hours_ago=1)  # SRM reads the allocation history
    with stored_row_reads(client) as reads:
        versioned = _get(client, "memo", keys, **by)
    assert reads
    assert versioned["computed_at"] == fresh["computed_at"]


def test_the_memo_is_bounded_least_recently_used_first() -> None:
    cache = StoredCardCache(max_entries=2)
    built: list[int] = []

    def key(i: int) -> CardKey:
        return CardKey("db", i, None, None, (1, 1))  # type: ignore[arg-type]

    def build(i: int) -> Any:
        built.append(i)
        return f"card-{i}"

    for i in (1, 2, 1, 3, 1, 2):
        assert cache.get_or_build(key(i), lambda i=i: build(i)) == f"card-{i}"  # type: ignore[misc]
    assert built == [1, 2, 3, 2]  # 2 was the least recently used when 3 came
