"""dead_letters: rows the database refused; experiments: exposures dropped / dead-lettered

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('experiment_id', sa.BigInteger(), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    op.create_index('ix_dead_letters_kind_created_at', 'dead_letters', ['kind', 'created_at'], unique=False)
    # why batch_alter_table: SQLite cannot ALTER most things in place; a NOT NULL column with a default works.
    with op.batch_alter_table('experiments') as batch:
        batch.add_column(sa.Column('exposures_dropped', sa.BigInteger(), server_default='0', nullable=False))
        batch.add_column(sa.Column('exposures_dead_lettered', sa.BigInteger(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('experiments') as batch:
        batch.drop_column('exposures_dead_lettered')
        batch.drop_column('exposures_dropped')
    op.drop_index('ix_dead_letters_kind_created_at', table_name='dead_letters')
    op.drop_table('dead_letters')
