"""analysis_sources: users' databases analysed in place; experiments.analysis_source

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 16:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('analysis_sources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('exposures', _JSON, nullable=False),
    sa.Column('events', _JSON, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_analysis_sources')),
    sa.UniqueConstraint('key', name=op.f('uq_analysis_sources_key'))
    )
    # why batch_alter_table: SQLite cannot ALTER most things in place.
    with op.batch_alter_table('experiments') as batch:
        batch.add_column(sa.Column('analysis_source', sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('experiments') as batch:
        batch.drop_column('analysis_source')
    op.drop_table('analysis_sources')
