"""model_specs: remote model variants (issue 15): an endpoint column; path, dtype, device, max_length, pooling nullable

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
_LOCAL_ONLY = (('path', sa.Text()), ('dtype', sa.String(length=16)), ('device', sa.String(length=32)),
               ('max_length', sa.Integer()), ('pooling', sa.String(length=16)))


def upgrade() -> None:
    # why batch_alter_table: SQLite cannot drop NOT NULL in place; the batch copies the table.
    with op.batch_alter_table('model_specs') as batch:
        batch.add_column(sa.Column('endpoint', _JSON, nullable=True))
        for name, type_ in _LOCAL_ONLY:
            batch.alter_column(name, existing_type=type_, nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM model_specs WHERE endpoint IS NOT NULL")
    with op.batch_alter_table('model_specs') as batch:
        for name, type_ in _LOCAL_ONLY:
            batch.alter_column(name, existing_type=type_, nullable=False)
        batch.drop_column('endpoint')
