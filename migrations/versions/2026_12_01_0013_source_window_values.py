"""scorecard_unit_window_values, scorecard_refreshes.settled_through: an analysis source's stored rows split at a
cutoff, so an incremental refresh reads only the events dated in its lookback window

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # why: a source has no arrival column, so its refresh recomputed every touched unit from its whole history (a
    # scan of every event on a warehouse); with the values of events dated after a cutoff kept apart, a refresh
    # adds the events that settled since the last one and recomputes only the window (issue 14)
    op.create_table(
        'scorecard_unit_window_values',
        sa.Column('experiment_id', sa.Integer(), nullable=False),
        sa.Column('unit_id', sa.String(length=256), nullable=False),
        sa.Column('component', sa.String(length=512), nullable=False),
        sa.Column('value', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'],
                                name=op.f('fk_scorecard_unit_window_values_experiment_id_experiments'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('experiment_id', 'unit_id', 'component', name=op.f('pk_scorecard_unit_window_values')),
    )
    # why nullable: a state stored before this revision has no window rows (the next refresh of a source replaces
    # it whole); titrate's own tables never have any
    with op.batch_alter_table('scorecard_refreshes') as batch:
        batch.add_column(sa.Column('settled_through', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scorecard_refreshes') as batch:
        batch.drop_column('settled_through')
    op.drop_table('scorecard_unit_window_values')
