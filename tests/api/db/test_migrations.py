"""Migrations: upgrade → downgrade → upgrade on both databases, and the ORM matches the migrated schema."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from api import migrate
from api.db.base import Base
from api.db.engine import Database


def test_upgrade_downgrade_upgrade_round_trip(db: Database) -> None:
    url = db.url
    migrate.downgrade(url, "base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(url)
    tables = set(inspect(db.engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert migrate.current_revision(db.engine) == migrate.head_revision()


def test_orm_metadata_matches_migrated_schema(db: Database) -> None:
    # `alembic check` raises when autogenerate finds any difference (types compared too).
    command.check(migrate.alembic_config(db.url))


def test_config_version_row_is_seeded(db: Database) -> None:
    from api.experiments.repository import config_version

    with db.read() as session:
        assert config_version(session) >= 1
