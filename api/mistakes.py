"""Configuration mistakes a person fixes by changing one setting or flag: a bad ``TITRATE_*`` value, a database
that cannot be opened or written, a busy port. Each becomes a ``Mistake`` whose message is one line naming what to
change; the CLI prints it and exits 2 (``api.cli``), never a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from api.db.engine import create_db_engine, is_sqlite
from api.settings import Settings, get_settings

DATABASE_SETTING = "TITRATE_DATABASE_URL"
# SQLSTATE classes of PostgreSQL refusals that are about where or how the database is reached, not about a query:
# connection (08), read-only transaction (25006), auth (28), unknown database (3D), privileges (42501), no such table
# (42P01: not migrated), resources (53).
_ENVIRONMENT_SQLSTATES = ("08", "25006", "28", "3D", "42501", "42P01", "53")
_SECRET_WORDS = ("url", "key", "password", "secret", "token")


class Mistake(Exception):
    """A mistake in configuration or flags; ``str()`` is one line naming the setting or flag to change."""


def _one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message into one line."""
    return " ".join(str(text).split())


def _first_line(text: object) -> str:
    """The first line of a driver's message: its reason (the lines after it quote SQL or add hints)."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def shown_url(url: str) -> str:
    """The database URL as it may be printed: any password masked."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return re.sub(r"://[^@/]*@", "://***@", url)
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def load_settings() -> Settings:
    """The process settings, or a ``Mistake`` naming each ``TITRATE_*`` variable whose value is invalid."""
    try:
        return get_settings()
    except ValidationError as error:
        prefix = str(Settings.model_config.get("env_prefix", ""))
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            variable = (prefix + field).upper()
            value = item.get("input")
            secret = any(word in field for word in _SECRET_WORDS)
            given = "" if secret or not isinstance(value, str) or len(value) > 60 else f"={value!r}"
            problems.append(f"{variable}{given}: {str(item['msg']).removeprefix('Value error, ')}")
        raise Mistake("invalid setting " + "; ".join(problems)) from None


def _sqlite_hint(url: str) -> str:
    """Why SQLite may fail to open the file: the folder it should live in is missing or not a folder."""
    try:
        database = make_url(url).database or ""
    except ArgumentError:
        return ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return ""
    parent = Path(database).expanduser().absolute().parent
    if not parent.exists():
        return f" (the folder {parent} does not exist)"
    if not parent.is_dir():
        return f" ({parent} is not a folder)"
    return ""


def _is_environmental(error: DBAPIError) -> bool:
    """Whether a database error is about reaching or writing the database (not about one statement)."""
    if isinstance(error, OperationalError):
        return True
    sqlstate = str(getattr(error.orig, "sqlstate", "") or "")
    return sqlstate.startswith(_ENVIRONMENT_SQLSTATES)


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn errors about opening, reaching or writing the database at ``url`` into a ``Mistake`` naming
    ``TITRATE_DATABASE_URL`` and the driver's reason; other errors (bugs) pass through unchanged."""
    try:
        yield
    except ArgumentError as error:  # unparseable URL or unknown dialect (NoSuchModuleError)
        raise Mistake(f"{DATABASE_SETTING}={shown_url(url)!r} is not a usable database URL "
                      f"({_one_line(error)}); e.g. sqlite:///./titrate.db or "
                      "postgresql://user@host:5432/titrate") from None
    except DBAPIError as error:
        if not _is_environmental(error):
            raise
        hint = _sqlite_hint(url) if is_sqlite(url) else ""
        if "no such table" in str(error.orig) or getattr(error.orig, "sqlstate", None) == "42P01":
            hint += " (run `titrate migrate` first)"
        raise Mistake(f"{DATABASE_SETTING}={shown_url(url)!r}: the database cannot be used: "
                      f"{_first_line(error.orig)}{hint}") from None


def check_database(url: str) -> None:
    """Open one connection to ``url`` (the URL parses, its driver is installed, the server or file answers);
    a ``Mistake`` naming ``TITRATE_DATABASE_URL`` otherwise."""
    with database_errors(url):
        try:
            engine = create_db_engine(url, pool_size=1)
        except ImportError as error:  # create_engine imports the dialect's driver
            raise Mistake(f"{DATABASE_SETTING}={shown_url(url)!r}: its database driver is not installed "
                          f"({_one_line(error)}); use sqlite:/// or postgresql:// URLs") from None
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
