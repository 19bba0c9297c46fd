"""analysis_sources.materialise: a schema of the source that keeps an experiment's materialised scorecard rows

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    # why nullable: a source without it keeps its rows in titrate's database, as every source did before
    with op.batch_alter_table('analysis_sources') as batch:
        batch.add_column(sa.Column('materialise', _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('analysis_sources') as batch:
        batch.drop_column('materialise')
