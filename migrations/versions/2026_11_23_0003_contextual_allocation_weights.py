"""allocations: per-context weights of contextual Thompson sampling

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # why batch_alter_table: SQLite cannot ALTER most things in place; adding a nullable column works either way.
    with op.batch_alter_table('allocations') as batch:
        batch.add_column(sa.Column(
            'context_weights', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
            nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('allocations') as batch:
        batch.drop_column('context_weights')
