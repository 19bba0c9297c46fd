"""scorecard_units, scorecard_unit_values, scorecard_refreshes: materialised per-unit scorecard rows; events (name, timestamp) index

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('scorecard_units',
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.String(length=256), nullable=False),
    sa.Column('variant', sa.String(length=100), nullable=False),
    sa.Column('allocation_version', sa.Integer(), nullable=False),
    sa.Column('exposed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attributes', _JSON, nullable=False),
    sa.Column('excluded_events', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'],
                            name=op.f('fk_scorecard_units_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('experiment_id', 'unit_id', name=op.f('pk_scorecard_units'))
    )
    op.create_table('scorecard_unit_values',
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.String(length=256), nullable=False),
    sa.Column('component', sa.String(length=512), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'],
                            name=op.f('fk_scorecard_unit_values_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('experiment_id', 'unit_id', 'component', name=op.f('pk_scorecard_unit_values'))
    )
    op.create_table('scorecard_refreshes',
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('watermark', sa.DateTime(timezone=True), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_full_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('components', _JSON, nullable=False),
    sa.Column('excluded_exposures', sa.BigInteger(), nullable=False),
    sa.Column('units_recomputed', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'],
                            name=op.f('fk_scorecard_refreshes_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('experiment_id', name=op.f('pk_scorecard_refreshes'))
    )
    op.create_index('ix_events_name_ts', 'events', ['name', 'timestamp'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_events_name_ts', table_name='events')
    op.drop_table('scorecard_refreshes')
    op.drop_table('scorecard_unit_values')
    op.drop_table('scorecard_units')
