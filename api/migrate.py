"""Programmatic Alembic: upgrade/downgrade/check used by the CLI, ``/readyz`` and the tests."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from api.db.engine import normalise_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class _QuietRevisionProbe(logging.Filter):
    """Drops alembic's "Context impl …" / "Will assume … DDL" lines while this thread reads the current revision:
    ``/readyz`` reads it on every probe, and a migration (another thread, or later) keeps its log lines."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_QUIET = _QuietRevisionProbe()
logging.getLogger("alembic.runtime.migration").addFilter(_QUIET)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at ``migrations/`` and the given database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database down to ``revision``."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision in ``migrations/versions``."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when never migrated)."""
    _QUIET.active.on = True
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        _QUIET.active.on = False
