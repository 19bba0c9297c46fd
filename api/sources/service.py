"""Rules of analysis sources: URLs with ``${ENV}`` secrets, validation by probing the source, one pooled engine per
source, and connections whose failures answer 424/503 with the engine's message (never 500, never a hang).

- **URL.** Stored as given; ``${NAME}`` is replaced from the service's environment each time an engine is built, so
  secrets never reach titrate's database. Shown with the password masked unless the password is itself a
  ``${…}`` reference (shown as given: it is a name, not a secret).
- **Engines.** One per source key, process-wide (:data:`ENGINES`), rebuilt when the expanded URL or the limits
  change and disposed when the source is deleted. PostgreSQL gets the service's own bounded engine
  (``api.db.engine.create_db_engine``: connect, statement and response timeouts) with read-only transactions and the
  UTC time zone; DuckDB and SQLite files are opened read-only, per use (why: a pooled connection would hold the
  file's lock and block the user's own writer); other dialects get a plain pooled engine. Where the database has no
  statement timeout of its own (DuckDB, SQLite, others), a watchdog interrupts a statement running past
  ``source_statement_timeout_seconds``.
- **Validation** (:func:`check_source`, on create): the URL parses (422 ``url``), the dialect loads and the database
  answers (424 with its message; 503 on a timeout), then each mapping is probed with ``LIMIT 0`` queries — the rows
  (422 at ``table``/``sql``), each mapped column (422 at ``columns.<name>``), and its type through the expressions the
  scorecard itself uses (timestamps compared with a UTC timestamp and offset by an interval, values added to a number,
  names and experiment keys compared with text, attributes read as JSON, unit ids joinable across the two
  mappings); on SQLite, which has no column types, up to 1000 rows are sampled instead (ISO text timestamps,
  numeric values) — then one row of each is read.
- **``sql``** must be one read-only ``SELECT`` (or ``WITH … SELECT``): no second statement and no data-changing
  keyword outside quotes and comments; the connections are read-only besides.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import quote

import psycopg
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Executable,
    FromClause,
    Result,
    Table,
    create_engine,
    event,
    make_url,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from api.audit import record
from api.auth.keys import Principal
from api.db.engine import Database, DbTimeouts, create_db_engine, normalise_url
from api.db.tables import AnalysisSource, utc_now
from api.errors import Conflict, DomainError, InvalidInput, NotFound, Unavailable
from api.settings import Settings, get_settings
from api.sources import repository
from api.sources.schemas import SourceCreate, SourceOut
from scorecards.source_views import TableMapping, events_view, exposures_view, materialised_tables
from scorecards.sql_dialect import prepare_engine

log = logging.getLogger(__name__)

#: Errors of SQLAlchemy and of the drivers titrate ships: a source's failure (or, in a probe, a mapping problem).
_DB_ERRORS = (sa_exc.SQLAlchemyError, psycopg.Error, sqlite3.Error)
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Longest engine message passed on to the caller.
_MESSAGE_MAX = 500


class SourceFailed(DomainError):
    """The analysis source cannot answer: unreachable, unknown driver, refused the query (424, the engine's
    message)."""

    status_code = 424


class MissingVariable(Exception):
    """A ``${NAME}`` of a source URL is not set in the service's environment."""


@dataclass(frozen=True)
class SourceLimits:
    """How long one wait on a source may last and how many connections one source may hold."""

    connect_seconds: float = 5.0
    statement_seconds: float = 30.0
    pool_size: int = 5
    #: what a DuckDB source may read besides its own file's directory (``allowed_directories``)
    duckdb_allowed_directories: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceLimits:
        """``TITRATE_SOURCE_CONNECT_TIMEOUT_SECONDS``, ``…_STATEMENT_TIMEOUT_SECONDS``, ``…_POOL_SIZE``,
        ``…_DUCKDB_ALLOWED_DIRECTORIES``."""
        return cls(settings.source_connect_timeout_seconds, settings.source_statement_timeout_seconds,
                   settings.source_pool_size, tuple(settings.source_duckdb_allowed_directories))


# ------------------------------------------------------------------------------------------------------------ URLs


def expand(url: str, environ: Mapping[str, str] | None = None) -> str:
    """``url`` with every ``${NAME}`` replaced by that environment variable (:class:`MissingVariable` if unset)."""
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise MissingVariable(f"environment variable '{name}' (named in the URL as ${{{name}}}) is not set")
        return env[name]

    return _ENV_REFERENCE.sub(value, url)


def masked(url: str) -> str:
    """The stored URL as ``GET`` shows it: the password replaced by ``***`` unless it is a ``${…}`` reference."""
    references: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        references.append(match.group(0))
        return f"titrateenvref{len(references) - 1}x"

    try:
        parsed = make_url(_ENV_REFERENCE.sub(placeholder, url))
    except (sa_exc.ArgumentError, ValueError):
        return "***"  # why: an unparsable URL may hold a password anywhere; it is never stored, but be safe
    password = parsed.password
    hide = password is not None and not re.fullmatch(r"(titrateenvref\d+x)+", str(password))
    shown = parsed.render_as_string(hide_password=hide)
    for i, reference in enumerate(references):
        shown = shown.replace(f"titrateenvref{i}x", reference)
    return shown


def _scrub(message: str, url: URL | None) -> str:
    """An engine's message, first lines only, with the URL's password (if any) removed."""
    text_ = " ".join(message.strip().splitlines()[:3])[:_MESSAGE_MAX]
    if url is not None and url.password:
        text_ = text_.replace(str(url.password), "***")
    return text_


# --------------------------------------------------------------------------------------------------------- engines


def _arm_watchdog(engine: Engine, seconds: float) -> None:
    """Interrupt any statement on ``engine`` still running after ``seconds`` (databases without a server-side
    statement timeout); the connection's ``info`` records that it fired, so the error reads as a timeout."""

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn: Connection, _cursor: Any, _statement: Any, _parameters: Any, _context: Any,
               _many: bool) -> None:
        # why: a pooled connection's info outlives the statement that timed out
        conn.info.pop("titrate_timed_out", None)
        raw = conn.connection.dbapi_connection
        stop = getattr(raw, "interrupt", None)
        if stop is None:
            return

        def fire() -> None:
            conn.info["titrate_timed_out"] = True
            stop()

        timer = threading.Timer(seconds, fire)
        timer.daemon = True
        conn.info["titrate_watchdog"] = timer
        timer.start()

    def _stop(conn: Connection) -> None:
        timer = conn.info.pop("titrate_watchdog", None)
        if timer is not None:
            timer.cancel()

    @event.listens_for(engine, "after_cursor_execute")
    def _done(conn: Connection, *_args: Any) -> None:
        _stop(conn)

    @event.listens_for(engine, "handle_error")
    def _failed(context: sa_exc.ExceptionContext) -> None:  # type: ignore[name-defined]
        if context.connection is not None:
            _stop(context.connection)


def _postgres_engine(url: URL, limits: SourceLimits, writable: bool = False) -> Engine:
    options = url.query.get("options")
    options = " ".join(options) if isinstance(options, tuple) else (options or "")
    # why read-only and UTC: titrate reads a source (it writes only a materialise schema, on a writable engine of
    # its own); a timestamp without time zone is read as UTC
    read_only = "" if writable else " -c default_transaction_read_only=on"
    url = url.update_query_dict({"options": f"{options}{read_only} -c TimeZone=UTC".strip()})
    timeouts = DbTimeouts(connect=max(2.0, limits.connect_seconds), statement=limits.statement_seconds,
                          pool=limits.connect_seconds)
    return create_db_engine(url.render_as_string(hide_password=False), limits.pool_size, timeouts)


def _duckdb_engine(url: URL, limits: SourceLimits, writable: bool = False) -> Engine:
    database = url.database or ":memory:"
    # why every connection writable when one is: DuckDB refuses a second configuration of an open file in a process
    read_only = database != ":memory:" and not writable
    engine = create_engine(url, poolclass=NullPool, connect_args={"read_only": read_only} if read_only else {})

    allowed = list(limits.duckdb_allowed_directories)
    if database != ":memory:":
        allowed.append(os.path.join(os.path.dirname(os.path.abspath(database)), ""))

    @event.listens_for(engine, "connect")
    def _utc(dbapi_connection: Any, _record: Any) -> None:
        try:
            dbapi_connection.execute("SET TimeZone = 'UTC'")
        except Exception:  # noqa: BLE001 — why: without the ICU extension DuckDB has no time zones: all is UTC
            pass
        _confine(dbapi_connection, allowed)

    _arm_watchdog(engine, limits.statement_seconds)
    return engine


def _confine(dbapi_connection: Any, allowed: list[str]) -> None:
    """Refuse a DuckDB source's file system and network access outside ``allowed`` (its own file's directory and
    ``TITRATE_SOURCE_DUCKDB_ALLOWED_DIRECTORIES``): a mapping's ``sql`` or a view could otherwise read any file the
    service can (``read_csv('/etc/passwd')``) or fetch URLs. DuckDB keeps the restriction per database instance and
    refuses to lift it while the instance is open, so a second connection to the same file finds it in place."""
    row = dbapi_connection.execute("SELECT current_setting('enable_external_access')").fetchone()
    if row is not None and row[0] is False:
        return
    dbapi_connection.execute("SET allowed_directories = ?", [allowed])
    dbapi_connection.execute("SET enable_external_access = false")


def _sqlite_engine(url: URL, limits: SourceLimits) -> Engine:
    path = url.database or ""
    if path in ("", ":memory:") or path.startswith("file:"):
        engine = create_engine(url, poolclass=NullPool)
    else:
        # why a read-only URI: connecting to a missing file must fail (424), not create an empty database
        uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
        engine = create_engine("sqlite://", poolclass=NullPool, creator=lambda: sqlite3.connect(
            uri, uri=True, timeout=limits.connect_seconds, check_same_thread=False))

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")

    _arm_watchdog(engine, limits.statement_seconds)
    return engine


def build_engine(url: URL, limits: SourceLimits, writable: bool = False) -> Engine:
    """An engine on a source (see the module docstring); ``sa_exc.NoSuchModuleError`` for an unknown dialect.
    ``writable``: for a source that keeps materialised rows (:data:`MATERIALISE_BACKENDS` only)."""
    url.get_dialect()  # an unknown dialect or missing driver fails here, before anything connects
    backend = url.get_backend_name()
    if backend == "postgresql":
        return _postgres_engine(make_url(normalise_url(url.render_as_string(hide_password=False))), limits, writable)
    if backend == "duckdb":
        return _duckdb_engine(url, limits, writable)
    if backend == "sqlite":
        return _sqlite_engine(url, limits)
    try:
        engine = create_engine(url, pool_size=limits.pool_size, pool_timeout=limits.connect_seconds,
                               pool_pre_ping=True)
    except TypeError:  # a dialect whose pool takes no size (e.g. a NullPool/StaticPool default)
        engine = create_engine(url, pool_pre_ping=True)
    _arm_watchdog(engine, limits.statement_seconds)
    # why: ClickHouse (chDB) needs join_use_nulls, a UTC session and microsecond datetime binds for the scorecard
    # SQL to mean what it means elsewhere (scorecards.sql_dialect.prepare_engine); a no-op on other engines
    return prepare_engine(engine)


class SourceEngines:
    """One engine per source key for the process; rebuilt when the expanded URL or the limits change."""

    def __init__(self, limits: SourceLimits | None = None) -> None:
        self._limits = limits
        self._engines: dict[str, tuple[str, SourceLimits, Engine]] = {}
        self._lock = threading.Lock()

    @property
    def limits(self) -> SourceLimits:
        """The limits in force: configured by the app at startup, else from the process settings."""
        return self._limits if self._limits is not None else SourceLimits.from_settings(get_settings())

    def configure(self, limits: SourceLimits) -> None:
        """Use ``limits`` from now on (the app's settings, at startup); engines are rebuilt on next use."""
        self._limits = limits

    def get(self, source: AnalysisSource, write: bool = False) -> tuple[Engine, URL]:
        """The engine of ``source`` (built at first use), and the expanded URL it connects to; ``write``: the
        writable engine of a source that keeps materialised rows (PostgreSQL: a second engine; DuckDB: the one
        engine, writable whenever the source materialises)."""
        expanded = expand(source.url)
        url = make_url(expanded)
        limits = self.limits
        writable = write or (source.materialise is not None and url.get_backend_name() == "duckdb")
        slot = f"{source.key}\x00write" if write else source.key
        with self._lock:
            cached = self._engines.get(slot)
            if cached is not None and cached[0] == expanded and cached[1] == limits:
                return cached[2], url
            engine = build_engine(url, limits, writable)
            self._engines[slot] = (expanded, limits, engine)
        if cached is not None:
            cached[2].dispose()
        return engine, url

    def dispose(self, key: str) -> None:
        """Close the pooled connections of source ``key`` and forget its engines."""
        with self._lock:
            found = [self._engines.pop(slot, None) for slot in (key, f"{key}\x00write")]
        for cached in found:
            if cached is not None:
                cached[2].dispose()

    def dispose_all(self) -> None:
        """Close every source's connections (shutdown)."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for _, _, engine in engines:
            engine.dispose()


#: The process's source engines (the app configures their limits at startup and disposes them at shutdown).
ENGINES = SourceEngines()


# ---------------------------------------------------------------------------------------------- errors and reads


def _is_timeout(error: BaseException, conn: Connection | None) -> bool:
    if conn is not None and conn.info.get("titrate_timed_out"):
        return True
    original = getattr(error, "orig", error)
    if isinstance(original, psycopg.errors.QueryCanceled):
        return True
    message = str(original).lower()
    return any(phrase in message for phrase in ("timeout expired", "timed out", "did not answer within",
                                                "interrupted"))


def failure(key: str, error: BaseException, url: URL | None, conn: Connection | None = None) -> DomainError:
    """The answer to a source's error: 503 (with ``Retry-After``) when it ran out of time, else 424; both with
    the engine's message (password removed)."""
    original = getattr(error, "orig", None) or error
    message = _scrub(str(original), url)
    if _is_timeout(error, conn):
        return Unavailable(f"analysis source '{key}' did not answer in time: {message}")
    return SourceFailed(f"analysis source '{key}' failed: {message}")


class SourceReader:
    """A connection to a source that runs the analysis' statements; a failure is answered 424/503 (the engine's
    message) instead of escaping as a database error of titrate's own."""

    def __init__(self, key: str, conn: Connection, url: URL) -> None:
        self.key, self.conn, self.url = key, conn, url

    def execute(self, statement: Executable) -> Result[Any]:
        """Run ``statement`` on the source (424/503 on failure)."""
        try:
            return self.conn.execute(statement)
        except Exception as error:  # noqa: BLE001 — why: other drivers raise their own classes; never a 500
            raise failure(self.key, error, self.url, self.conn) from None


@dataclass(frozen=True)
class SourceMappings:
    """A source's exposure and event mappings, as the views take them."""

    exposures: TableMapping
    events: TableMapping


def mapping_of(document: Mapping[str, Any]) -> TableMapping:
    """A stored (or requested) mapping → :class:`TableMapping` (columns left unmapped are dropped)."""
    columns = {name: column for name, column in (document.get("columns") or {}).items() if column is not None}
    return TableMapping(columns=columns, table=document.get("table"), sql=document.get("sql"))


@contextmanager
def reading(session: Session, key: str) -> Iterator[tuple[SourceReader, SourceMappings]]:
    """A read connection to source ``key`` and its mappings, for the length of the block (424 if the source is no
    longer registered or cannot be reached, 503 on a timeout)."""
    source = repository.get_by_key(session, key)
    if source is None:
        raise SourceFailed(f"analysis source '{key}' is not registered (it was deleted); register it again to read "
                           "this experiment's scorecard")
    mappings = SourceMappings(mapping_of(source.exposures), mapping_of(source.events))
    url: URL | None = None
    try:
        engine, url = ENGINES.get(source)
        conn = engine.connect()
    except MissingVariable as error:
        raise SourceFailed(f"analysis source '{key}': {error}") from None
    except Exception as error:  # noqa: BLE001 — why: a driver's own errors (bad URL parts, missing module) too
        raise failure(key, error, url) from None
    try:
        yield SourceReader(key, conn, url), mappings
    finally:
        try:
            conn.close()
        except sa_exc.SQLAlchemyError:  # why: a connection a timeout broke may fail to roll back; it is discarded
            pass


@dataclass(frozen=True)
class SourceViews:
    """One experiment's exposures and events in a source, shaped as titrate's tables (``scorecards.source_views``)."""

    exposures: FromClause
    events: FromClause


@contextmanager
def experiment_views(session: Session, key: str, experiment_key: str, experiment_id: int,
                     allocation_starts: Sequence[tuple[int, datetime]]) -> Iterator[tuple[SourceReader, SourceViews]]:
    """:func:`reading` source ``key`` with the views of one experiment: its rows (``experiment`` column =
    ``experiment_key``), first exposure per unit, allocation version from ``allocation_starts`` (titrate's (version,
    created_at) history), events deduplicated by ``event_id`` — to pass wherever titrate's own tables go."""
    with reading(session, key) as (reader, mappings):
        yield reader, SourceViews(exposures_view(mappings.exposures, experiment_key, experiment_id, allocation_starts),
                                  events_view(mappings.events))


# ------------------------------------------------------------------------------- materialised rows in the source

#: Engines whose sources may keep the materialised scorecard rows in a schema of their own (``materialise``).
MATERIALISE_BACKENDS = ("duckdb", "postgresql")
#: The stored tables of a materialise schema: (unit table, value table, window value table) —
#: ``scorecards.source_views``.
StoreTables = tuple[Table, Table, Table]


def materialise_schema(source: AnalysisSource | None) -> str | None:
    """The schema of the source that keeps the materialised rows (None: titrate's database keeps them)."""
    if source is None or not source.materialise:
        return None
    return str(source.materialise["schema"])


@contextmanager
def store_reading(session: Session, key: str) -> Iterator[tuple[SourceReader, StoreTables]]:
    """:func:`reading` source ``key`` with the tables of its materialise schema (where its materialised rows are
    read; the aggregation runs in the source)."""
    schema = materialise_schema(repository.get_by_key(session, key))
    if schema is None:
        raise SourceFailed(f"analysis source '{key}' keeps no materialised rows")
    with reading(session, key) as (reader, _):
        yield reader, materialised_tables(schema)


@contextmanager
def store_writing(session: Session, key: str) -> Iterator[tuple[Connection, StoreTables]]:
    """A write transaction on source ``key``'s materialise schema, committed when the block ends (rolled back on
    an error; the source's failure is a 424/503 with its message)."""
    source = repository.get_by_key(session, key)
    schema = materialise_schema(source)
    if source is None or schema is None:
        raise SourceFailed(f"analysis source '{key}' is not registered with a materialise schema")
    url: URL | None = None
    conn: Connection | None = None
    try:
        engine, url = ENGINES.get(source, write=True)
        conn = engine.connect()
        with conn.begin():
            store = repository.store_tables(conn, schema)
            # why: a schema created before the window value table existed gets it at its next refresh
            store[2].create(conn, checkfirst=True)
            yield conn, store
    except DomainError:
        raise
    except MissingVariable as error:
        raise SourceFailed(f"analysis source '{key}': {error}") from None
    except Exception as error:  # noqa: BLE001 — why: a driver's own errors too; never a 500
        raise failure(key, error, url, conn) from None
    finally:
        if conn is not None:
            try:
                conn.close()
            except sa_exc.SQLAlchemyError:  # a connection a timeout broke: discarded
                pass


def _check_store(body: SourceCreate, url: URL, limits: SourceLimits) -> None:
    """Create (or check) the materialise schema of ``body`` on a writable connection: 424 with the engine's message
    when the source does not allow it, 503 on a timeout."""
    assert body.materialise is not None
    schema = body.materialise.schema_
    engine = build_engine(url, limits, writable=True)
    conn: Connection | None = None
    try:
        conn = engine.connect()
        with conn.begin():
            repository.create_store(conn, schema)
    except Exception as error:  # noqa: BLE001 — why: a driver's own errors too; never a 500
        answer = failure(body.key, error, url, conn)
        if isinstance(answer, SourceFailed):
            answer = SourceFailed(f"analysis source '{body.key}' does not let titrate keep materialised rows in "
                                  f"schema '{schema}': {_scrub(str(getattr(error, 'orig', None) or error), url)}")
        raise answer from None
    finally:
        if conn is not None:
            conn.close()
        engine.dispose()


# ------------------------------------------------------------------------------------------------ validation


_WRITE_WORDS = re.compile(
    r"\b(insert|update|delete|merge|upsert|replace|create|drop|alter|truncate|grant|revoke|copy|attach|detach|"
    r"install|load|pragma|vacuum|call|execute|export|import|set|reset|begin|commit|rollback|checkpoint|lock|"
    r"comment|refresh|unload|put|remove)\b", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|--[^\n]*|/\*.*?\*/|\$\$.*?\$\$", re.DOTALL)


def read_only_select(sql: str) -> str | None:
    """Why ``sql`` is not one read-only ``SELECT``/``WITH`` query (None when it is). Quotes, quoted identifiers
    and comments are ignored; one trailing ``;`` is allowed; parentheses must balance (the query is wrapped as a
    subquery)."""
    bare = _QUOTED.sub(" ", sql).strip()
    if sql.rstrip().endswith(";"):  # the raw text's last character: nothing (not even a comment) after it
        bare = bare.removesuffix(";").rstrip()
    first = re.match(r"[(\s]*([A-Za-z]+)", bare)
    if first is None or first.group(1).lower() not in ("select", "with"):
        return "must be a read-only query starting with SELECT or WITH"
    if ";" in bare:
        return "must be a single statement (no ';' between statements)"
    depth = 0
    for char in bare:  # why: titrate wraps the query as ``(sql) AS src``; a stray ')' would end that subquery early
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return "has a ')' without its '(' (outside quotes and comments)"
    if depth:
        return "has a '(' without its ')' (outside quotes and comments)"
    word = _WRITE_WORDS.search(bare)
    if word is not None:
        return f"must only read: '{word.group(1)}' is not allowed outside quotes"
    return None


#: What each role must support, as the scorecard uses it (typed databases; SQLite is sampled instead).
_EXPECTS = {
    "timestamp": "a timestamp or date (compared with a UTC timestamp, offset by an interval)",
    "value": "a number",
    "experiment": "text (compared with the experiment's key)",
    "name": "text (compared with metric event names)",
    "attributes": "JSON (or a map/struct)",
}
#: What SQLite's sampled values must be (it has no column types).
_SAMPLED = {"timestamp": "ISO 8601 text (e.g. 2026-03-02T09:30:00Z or 2026-03-02 09:30:00.250)", "value": "a number"}


class _Prober:
    """Runs the probes of one source (``api.sources.repository``) on one connection; a probe's failure is a 422
    naming the field unless the source timed out (503) or dropped the connection (424)."""

    def __init__(self, key: str, conn: Connection, url: URL) -> None:
        self.key, self.conn, self.url = key, conn, url

    def run(self, probe: Callable[[Connection], Any], loc: tuple[str, ...], message: str) -> Any:
        try:
            return probe(self.conn)
        except _DB_ERRORS as error:
            if _is_timeout(error, self.conn) or getattr(error, "connection_invalidated", False):
                raise failure(self.key, error, self.url, self.conn) from None
            self._rollback()
            raise InvalidInput(("body", *loc), f"{message}: {_scrub(str(getattr(error, 'orig', error)), self.url)}"
                               ) from None
        except Exception as error:  # noqa: BLE001 — why: a driver outside PEP 249's classes: the source failed
            raise failure(self.key, error, self.url, self.conn) from None

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except sa_exc.SQLAlchemyError as error:
            raise failure(self.key, error, self.url, self.conn) from None

    def mapping(self, kind: str, mapping: TableMapping) -> None:
        where = "sql" if mapping.sql is not None else "table"
        self.run(lambda c: repository.probe_rows(c, mapping), (kind, where),
                 f"the {kind} rows cannot be read from the source")
        for role, name in mapping.columns.items():
            self.run(partial(repository.probe_column, mapping=mapping, name=name), (kind, "columns", role),
                     f"column '{name}' (the {kind}' {role}) is missing")
        sqlite = self.conn.dialect.name == "sqlite"
        for role, name in mapping.columns.items():
            if sqlite and role in _SAMPLED:
                bad = self.run(partial(repository.count_unusable, mapping=mapping, role=role, name=name),
                               (kind, "columns", role), f"column '{name}' cannot be read")
                if bad:
                    raise InvalidInput(("body", kind, "columns", role),
                                       f"column '{name}' (the {kind}' {role}) must hold {_SAMPLED[role]}: {bad} of "
                                       "the first 1000 values do not")
            elif not sqlite and role in _EXPECTS:
                self.run(partial(repository.probe_type, mapping=mapping, role=role, name=name), (kind, "columns", role),
                         f"column '{name}' (the {kind}' {role}) must be {_EXPECTS[role]}")
        self.run(lambda c: repository.read_one(c, mapping), (kind, where), f"a row of the {kind} cannot be read")

    def joinable(self, exposures: TableMapping, events: TableMapping) -> None:
        self.run(lambda c: repository.probe_join(c, exposures, events), ("events", "columns", "unit_id"),
                 f"column '{events.columns['unit_id']}' (the events' unit_id) cannot be compared with the exposures' "
                 f"unit_id '{exposures.columns['unit_id']}'")


def check_source(body: SourceCreate, limits: SourceLimits) -> None:
    """Connect to the source of ``body`` and probe its mappings (see the module docstring); raises the 422, 424 or
    503 that describes the first problem. Connects with a fresh engine, disposed before returning."""
    for kind, rows in (("exposures", body.exposures), ("events", body.events)):
        if rows.sql is not None and (why := read_only_select(rows.sql)) is not None:
            raise InvalidInput(("body", kind, "sql"), why)
    try:
        url = make_url(expand(body.url))
    except MissingVariable as error:
        raise InvalidInput(("body", "url"), str(error)) from None
    except (sa_exc.ArgumentError, ValueError):
        raise InvalidInput(("body", "url"), "not a SQLAlchemy URL (dialect+driver://user:password@host/database, "
                                            "e.g. duckdb:////data/lake.duckdb)") from None
    if body.materialise is not None and url.get_backend_name() not in MATERIALISE_BACKENDS:
        raise InvalidInput(("body", "materialise", "schema"), "materialised rows can be kept in a schema of a "
                           f"{' or '.join(MATERIALISE_BACKENDS)} source only; leave 'materialise' out to keep them in "
                           "titrate's database")
    try:
        engine = build_engine(url, limits, writable=body.materialise is not None)
    except Exception as error:  # noqa: BLE001 — why: unknown dialect, missing module, a driver's own URL errors
        raise SourceFailed(f"analysis source '{body.key}': cannot load its driver: {_scrub(str(error), url)}"
                           ) from None
    try:
        try:
            conn = engine.connect()
        except Exception as error:  # noqa: BLE001 — why: other drivers raise their own classes; never a 500
            raise failure(body.key, error, url) from None
        with conn:
            prober = _Prober(body.key, conn, url)
            exposures = mapping_of(body.exposures.model_dump())
            events = mapping_of(body.events.model_dump())
            prober.mapping("exposures", exposures)
            prober.mapping("events", events)
            prober.joinable(exposures, events)
    finally:
        engine.dispose()
    if body.materialise is not None:
        _check_store(body, url, limits)


# ------------------------------------------------------------------------------------------------ the registry


def source_out(source: AnalysisSource) -> SourceOut:
    """The JSON of a stored source (URL masked)."""
    return SourceOut(key=source.key, url=masked(source.url), exposures=source.exposures,  # type: ignore[arg-type]
                     events=source.events, materialise=source.materialise,  # type: ignore[arg-type]
                     created_at=source.created_at)


def get_or_404(session: Session, key: str) -> AnalysisSource:
    """The source called ``key``, or 404."""
    source = repository.get_by_key(session, key)
    if source is None:
        raise NotFound(f"no analysis source '{key}'")
    return source


def create_source(session: Session, body: SourceCreate, principal: Principal, limits: SourceLimits,
                  now: datetime | None = None) -> AnalysisSource:
    """Register a source after :func:`check_source` (409 if the key exists). The URL is stored as given."""
    if repository.get_by_key(session, body.key) is not None:
        raise Conflict(f"analysis source '{body.key}' already exists")
    check_source(body, limits)
    exposures = body.exposures.model_dump(mode="json", exclude_none=True)
    events = body.events.model_dump(mode="json", exclude_none=True)
    materialise = None if body.materialise is None else body.materialise.model_dump(mode="json", by_alias=True)
    source = AnalysisSource(key=body.key, url=body.url, exposures=exposures, events=events, materialise=materialise,
                            created_at=now or utc_now())
    session.add(source)
    session.flush()
    ENGINES.dispose(body.key)  # a source of the same key deleted and registered again: no stale engine
    record(session, principal, "source.create", experiment_id=None,
           after={"key": body.key, "url": masked(body.url), "exposures": exposures, "events": events,
                  "materialise": materialise})
    return source


def delete_source(session: Session, key: str, principal: Principal, released: str | None = None) -> None:
    """Remove a source (404 if unknown); 409 while a draft, running or paused experiment reads it. ``released``:
    what :func:`release_stored_rows` did (named in the audit record)."""
    source = get_or_404(session, key)
    _refuse_while_read(session, key)
    # why again, in the deleting transaction: a read that refreshed an ended experiment since the release stored a
    # new state, which must not outlive the source (its rows in a materialise schema are then left there)
    repository.forget_refreshes(session, repository.experiment_ids_naming(session, key),
                                rows=materialise_schema(source) is None)
    record(session, principal, "source.delete", experiment_id=None,
           before={"key": key, "url": masked(source.url), "exposures": source.exposures, "events": source.events},
           after=None if released is None else {"materialised_rows": released})
    repository.delete(session, source)
    ENGINES.dispose(key)


def _refuse_while_read(session: Session, key: str) -> None:
    users = repository.experiments_naming(session, key)
    if users:
        raise Conflict(f"analysis source '{key}' is read by experiment(s) {', '.join(users)} that have not ended; "
                       "stop them (or edit the drafts) first")


def release_stored_rows(db: Database, key: str) -> str | None:
    """Before source ``key`` is deleted (:func:`delete_source`): forget the refresh states of the experiments that
    read it and delete their materialised rows — in titrate's database in the same committed transaction, or, for a
    source that keeps them (``materialise``), from its schema after that commit. A state belongs to the source its
    rows were computed from: a source registered again under the key (perhaps on other data) then refreshes them in
    full, never adds to rows of the old one, and while no source has the key their scorecards answer 424. In that
    order, a deletion that fails later leaves experiments that refresh in full at their next read, never a state
    whose rows are gone. Returns ``"deleted"``, why rows were left in the source's schema (it could not be
    reached: a source is often deleted because its database is gone; logged), or None (no experiment read it).
    404/409 as :func:`delete_source`, before anything changes."""
    with db.transaction() as session:
        source = get_or_404(session, key)
        _refuse_while_read(session, key)
        ids = repository.experiment_ids_naming(session, key)
        in_source = materialise_schema(source) is not None
        repository.forget_refreshes(session, ids, rows=not in_source)
    if not ids:
        return None
    if in_source:
        try:
            with db.read() as session, store_writing(session, key) as (conn, store):
                repository.delete_store_rows(conn, store, ids)
        except DomainError as error:
            log.warning("the materialised rows of a deleted analysis source are left in its schema",
                        extra={"source": key, "experiments": ids, "error": str(error.detail)})
            return f"left in the source: {error.detail}"
    return "deleted"


def known(session: Session, key: str) -> bool:
    """Whether source ``key`` is registered."""
    return repository.get_by_key(session, key) is not None
