"""Refreshing an experiment's materialised scorecard rows (``scorecards.incremental``), fully or incrementally.

A refresh at time ``R`` computes the per-unit rows of the scorecard query at ``R`` and stores them in titrate's
database (or, for an analysis source registered with ``"materialise": {"schema": …}``, in that schema of the
source, merging and replacing rows there; the refresh state stays in titrate's database); a scorecard read
without ``as_of`` then aggregates the stored rows (``api.analysis.scorecard``), so it is the analysis as of
``computed_at = R``.

* **full** — every unit's row is recomputed (first refresh, the plan's components changed, ``full=True``, or
  ``TITRATE_SCORECARD_FULL_REFRESH_HOURS`` passed since the last full one);
* **incremental**, titrate's own tables — in proportion to the new events: the units exposed after the previous
  refresh's watermark ``W`` minus the lookback ``L`` (``TITRATE_SCORECARD_LOOKBACK_HOURS``) are recomputed whole;
  every other stored unit gets the contribution of the events that arrived since ``W`` (``received_at`` in
  ``(W, R]``, or received by ``W`` and dated in ``(W, R]``), computed by the same per-unit SQL over those events
  only and merged into its stored values in the write transaction, without the rows leaving the database
  (``repository.merge_arrived``: sums and counts add, ``any`` takes the max).
  Every refresh of these tables counts the events received by ``R`` only, so no event is counted twice;
* an analysis source (no arrival column) keeps its values split at a cutoff ``C = R − L`` (the state's
  ``settled_through``): settled values (events dated by ``C``) and window values (dated after ``C``), added at read
  time (``scorecards.incremental``). **incremental** — the events dated in ``(C_prev, C]`` added to the stored
  units' settled values (``repository.merge_deltas``), the window values replaced from the events dated in
  ``(C, R]``, the units exposed after ``C_prev`` recomputed whole (``repository.source_rows``): every read of the
  source is a range of event dates (duplicates, late events and exposures arriving after their events come out as
  in a full recomputation). A state stored before the split is refreshed in full.

The watermark becomes ``R``.

**Guarantee.** Titrate's own tables: the stored rows — hence the scorecard — equal a full recomputation at
``computed_at`` over the events received by then, whatever their lateness, except (a) an exposure stored more than
``L`` after its ``exposed_at`` (exposures carry no arrival time; its unit waits for the next full refresh) and (b) an
event whose ingestion stamped ``received_at`` at or before a refresh's time but committed after that refresh read
(a window of milliseconds; the next full refresh counts it). An analysis source: equal except rows that arrived more
than ``L`` after their own timestamp (an event, or an exposure, dated at or before the previous watermark minus
``L`` and stored after that refresh read the data); each such row changes only its own unit's values (one unit's
count, sums, exposure), and only until the next full refresh picks it up (a unit whose stored exposure no longer
matches the source's, or that has none, is recomputed whole when it has a new event).

The per-unit rows are computed in a read (no write lock while the database aggregates events), then written in one
short transaction (delete + insert) under a per-experiment lock — an incremental refresh of titrate's own tables
also computes and merges its delta there (a read of the arrived events only, kept in the database); if another
refresher stored a newer state in between, this one's rows are dropped and that state is kept (``mode="skipped"``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Table
from sqlalchemy.orm import Session

from api.db.engine import Database
from api.db.tables import Event, Experiment, Exposure, utc_now
from api.experiments import repository as experiments_repository
from api.experiments.plan import plan_of
from api.incremental import repository
from api.incremental.repository import AnalysisTables, RefreshState, Runner
from api.settings import Settings, get_settings
from api.sources import service as sources
from scorecards.sql import MetricSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OwnTables:
    """Titrate's own exposure and event tables (the default analysis tables)."""

    exposures: Table = Exposure.__table__  # type: ignore[assignment]
    events: Table = Event.__table__  # type: ignore[assignment]


#: Where an experiment's exposures and events are read, given a read session of titrate's database: a context
#: manager giving what runs the queries and the tables (:func:`own_tables`, or :func:`source_of` for an experiment
#: whose plan names an analysis source).
Source = Callable[[Session], AbstractContextManager[tuple[Runner, AnalysisTables]]]


def own_tables(session: Session) -> AbstractContextManager[tuple[Runner, AnalysisTables]]:
    """The default :data:`Source`: titrate's own exposures and events, read on ``session``."""
    return nullcontext((session, OwnTables()))


def store_source(session: Session, experiment: Experiment) -> str | None:
    """The key of the analysis source that keeps the experiment's materialised rows in a schema of its own
    (``"materialise"``); None when titrate's database keeps them."""
    key = plan_of(experiment).analysis_source
    if key is None or sources.materialise_schema(sources.repository.get_by_key(session, key)) is None:
        return None
    return key


@contextmanager
def stored_rows(session: Session, experiment: Experiment,
                state: RefreshState | None) -> Iterator[tuple[Runner, repository.StoreTables]]:
    """Where the experiment's materialised rows of ``state`` are read: ``session`` and titrate's tables, or a read
    connection to the source that keeps them and the tables of its schema (the scorecard's aggregation then runs
    there); the window values are added only to a state that has them (``settled_through``)."""
    def of(store: repository.StoreTables) -> repository.StoreTables:
        return store if state is not None and state.settled_through is not None else store._replace(window=None)

    key = store_source(session, experiment)
    if key is None:
        yield session, of(repository.OWN_STORE)
        return
    with sources.store_reading(session, key) as (reader, store):
        yield reader, of(repository.StoreTables(*store))


def source_of(experiment: Experiment) -> Source:
    """Where the experiment's rows are read: its frozen plan's analysis source (that source's views of this
    experiment, as the live scorecard reads them: ``api.sources.service.experiment_views``), else titrate's own
    tables. The materialised rows live in titrate's database unless the source names a schema of its own
    (:func:`store_source`)."""
    key = plan_of(experiment).analysis_source
    if key is None:
        return own_tables

    @contextmanager
    def views(session: Session) -> Iterator[tuple[Runner, AnalysisTables]]:
        starts = [(a.version, a.created_at) for a in experiments_repository.allocation_history(session, experiment.id)]
        with sources.experiment_views(session, key, experiment.key, experiment.id, starts) as (reader, tables):
            yield reader, tables

    return views


@dataclass(frozen=True)
class RefreshPolicy:
    """How refreshes run: the lookback for late rows and how often a full refresh is due (hours)."""

    lookback_hours: float
    full_refresh_hours: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RefreshPolicy:
        """``TITRATE_SCORECARD_LOOKBACK_HOURS`` and ``TITRATE_SCORECARD_FULL_REFRESH_HOURS``."""
        return cls(settings.scorecard_lookback_hours, settings.scorecard_full_refresh_hours)


@dataclass(frozen=True)
class RefreshResult:
    """One refresh: ``mode`` full, incremental or skipped (another refresher stored first), the state now stored,
    how many units were recomputed and the seconds it took; ``units_written``: stored units replaced or deleted (a
    full refresh rewrites only the units whose rows changed)."""

    mode: str
    state: RefreshState
    units_recomputed: int
    seconds: float
    units_written: int = 0


class CardPublisher(Protocol):
    """Stores what reads need for a new state: the default scorecard (``api.analysis.published.Publisher``;
    injected, since the analysis builds on this package)."""

    def wanted(self, session: Session, experiment: Experiment, state: RefreshState) -> bool:
        """Whether ``state`` gets a card — asked in the transaction that saves it: if so, the card of the state
        before is kept (and served) until :meth:`publish` replaces it; if not, it is cleared."""
        ...

    def publish(self, db: Database, experiment: Experiment, state: RefreshState) -> None:
        """Build and store the card of ``state``, after the transaction that saved it committed (building one reads
        every stored row: inside that transaction it held SQLite's only write lock)."""
        ...


def plan_metrics(experiment: Experiment) -> list[MetricSpec]:
    """The metric specs of the experiment's frozen plan (what the scorecard aggregates)."""
    plan = plan_of(experiment)
    # why not quantile metrics: a histogram is no per-unit sum; the scorecard computes them live on every read
    return [m.definition.spec(plan.design.cuped_lookback_hours) for m in plan.metrics if not m.definition.is_quantile]


def components_of(experiment: Experiment) -> tuple[str, ...]:
    """The component keys the experiment's stored rows must hold (those of its frozen plan's metrics)."""
    return tuple(repository.component_labels(plan_metrics(experiment)).values())


def usable(state: RefreshState | None, experiment: Experiment) -> RefreshState | None:
    """``state`` when its stored rows can answer the experiment's scorecard (they hold its plan's components)."""
    return state if state is not None and state.components == components_of(experiment) else None


def _mode(previous: RefreshState | None, components: tuple[str, ...], now: datetime, policy: RefreshPolicy,
          full: bool) -> str:
    if full or previous is None or previous.components != components or now < previous.watermark:
        return "full"
    if now - previous.last_full_at >= timedelta(hours=policy.full_refresh_hours):
        return "full"
    return "incremental"


def refresh(db: Database, experiment: Experiment, policy: RefreshPolicy, *, full: bool = False,
            now: datetime | None = None, source: Source | None = None,
            publish: CardPublisher | None = None) -> RefreshResult:
    """Refresh the experiment's stored rows at ``now`` (default: the current time) — see the module docstring.

    ``source``: where the experiment's exposures and events are read (default :func:`source_of`: the plan's
    analysis source or titrate's own tables); the rows are always stored in ``db``. ``publish``: asked in the
    transaction that saves the new state whether it wants a card, which it then builds and stores after the commit,
    before this returns (:class:`CardPublisher`); if that fails, the card is cleared (logged; reads then build it).
    """
    started = time.perf_counter()
    now = now or utc_now()
    settings = get_settings()
    earliest = settings.timestamp_min
    metrics = plan_metrics(experiment)
    labels = repository.component_labels(metrics)
    components = tuple(labels.values())
    with db.read() as session:
        previous = repository.state(session, experiment.id)
        in_source = store_source(session, experiment)
    mode = _mode(previous, components, now, policy, full)
    lookback = timedelta(hours=policy.lookback_hours)
    since = None
    if mode == "incremental" and previous is not None:
        since = previous.watermark - lookback
    own = False
    split: repository.SourceRefresh | None = None
    cutoff: datetime | None = None
    with db.read() as session, (source or source_of(experiment))(session) as (conn, tables):
        if isinstance(tables, OwnTables):
            # why: titrate's events carry their arrival time, so only what arrived since the watermark is read
            # (merged in the write transaction below: repository.merge_arrived)
            own = True
            rows = repository.own_unit_rows(conn, tables, experiment.id, metrics, now, earliest, since)
        else:
            settled = None if mode == "full" or previous is None else previous.settled_through
            if settled is None:
                mode = "full"  # why: a state stored before the split has no window values to add a delta to
            cutoff = now - lookback if settled is None else max(now - lookback, settled)
            with stored_rows(session, experiment, previous) as (store_conn, store):
                split = repository.source_rows(conn, tables, store_conn, store, experiment.id, metrics, now,
                                               earliest, cutoff, settled)
            rows = split.rows
        excluded = repository.excluded_exposures(
            conn, tables, experiment.id, earliest, now + timedelta(hours=settings.timestamp_max_future_hours))
    everything, removed = previous is None, []
    # a source's refresh also touches the units given a delta and those with window values
    split_units = 0 if split is None else len(split.deltas) + len(split.window)
    n_computed = len(rows) + split_units  # before a full refresh's diff drops the unchanged rows
    if mode == "full" and in_source is not None:
        everything = True  # why no diff: the stored rows are in the source; a full refresh there replaces them all
    elif mode == "full" and previous is not None:
        # why a diff: a full refresh rewrites only the units whose rows changed (usually few), so the write
        # transaction — which holds SQLite's only write lock — stays short however many units the experiment has
        with db.read() as session:
            stored = repository.stored_digests(session, experiment.id)
        computed = {str(r["unit_id"]) for r in rows}
        removed = [unit for unit in stored if unit not in computed]
        rows = [r for r in rows
                if not repository.same_digest(stored.get(str(r["unit_id"])), repository.row_digest(r, labels))]
    with db.transaction() as session:
        repository.lock_experiment(session, experiment.id)
        current = repository.state(session, experiment.id)
        if current != previous:  # another refresher stored (or cleared) since we read: keep what is there
            kept = current if current is not None else previous
            assert kept is not None  # they differ, so one of them is a state
            return RefreshResult("skipped", kept, 0, time.perf_counter() - started)
        if in_source is None:
            repository.replace_rows(session, experiment.id, rows, labels, everything=everything, removed=removed)
            if split is not None:
                repository.merge_deltas(session, experiment.id, split.deltas, metrics)
                repository.replace_window(session, experiment.id, split.window, labels)
        else:  # the source keeps them: written (and committed) there while this transaction holds the lock
            with sources.store_writing(session, in_source) as (conn, there):
                store = repository.StoreTables(*there)
                repository.replace_rows(conn, experiment.id, rows, labels, everything=everything, store=store)
                if split is not None:
                    repository.merge_deltas(conn, experiment.id, split.deltas, metrics, store=store)
                    repository.replace_window(conn, experiment.id, split.window, labels, store=store)
        deltas = 0
        if own and since is not None and previous is not None:
            deltas = repository.merge_arrived(session, OwnTables(), experiment.id, metrics, previous.watermark,
                                              since, now)
        recomputed = n_computed + deltas
        new = RefreshState(experiment.id, watermark=now, computed_at=now,
                           last_full_at=now if mode == "full" or previous is None else previous.last_full_at,
                           mode=mode, components=components, excluded_exposures=excluded, units_recomputed=recomputed,
                           settled_through=cutoff)
        card = publish is not None and _wanted(session, experiment, new, publish)
        repository.save_state(session, new, keep_card=card)
    if card and publish is not None:
        _publish(db, experiment, new, publish)
    seconds = time.perf_counter() - started
    written = len(rows) + len(removed) + deltas + split_units
    log.info("scorecard refreshed", extra={"experiment": experiment.key, "mode": mode, "units": recomputed,
                                           "units_written": written, "seconds": round(seconds, 3)})
    return RefreshResult(mode, new, recomputed, seconds, written)


def _wanted(session: Session, experiment: Experiment, state: RefreshState, publish: CardPublisher) -> bool:
    try:
        with session.begin_nested():  # why a savepoint: a failed question must not abort the refresh's transaction
            return publish.wanted(session, experiment, state)
    except Exception:  # publishing is an optimisation: no card then, and reads build it themselves
        log.exception("asking whether to publish a refresh's scorecard failed", extra={"experiment": experiment.key})
        return False


def _publish(db: Database, experiment: Experiment, state: RefreshState, publish: CardPublisher) -> None:
    """Publish ``state``'s card (committed); on failure clear the card kept from the state before, so that no read
    is answered from it for longer than this refresh (if even that fails, the next refresh replaces or clears it)."""
    try:
        publish.publish(db, experiment, state)
        return
    except Exception:  # publishing is an optimisation: the state is kept and reads build the card themselves
        log.exception("publishing the scorecard of a refresh failed", extra={"experiment": experiment.key})
    try:
        with db.transaction() as session:
            repository.lock_experiment(session, experiment.id)
            if repository.state(session, experiment.id) == state:
                repository.drop_card(session, experiment.id)
    except Exception:
        log.exception("clearing the previous scorecard after a failed publish failed",
                      extra={"experiment": experiment.key})


def stored_state(db: Database, experiment: Experiment, policy: RefreshPolicy, *, fresh: bool | None = None,
                 source: Source | None = None, publish: CardPublisher | None = None) -> RefreshState:
    """The state a scorecard read answers from: the last refresh's, unless ``fresh`` is given (False: refresh now,
    incrementally unless a full refresh is due; True: a full refresh now), the experiment was never refreshed, or
    its stored rows lack components the plan needs (then a full refresh now, with ``publish`` as in
    :func:`refresh`)."""
    with db.read() as session:
        current = repository.state(session, experiment.id)
    if fresh is not None or (answer := usable(current, experiment)) is None:
        return refresh(db, experiment, policy, full=bool(fresh), source=source, publish=publish).state
    return answer

