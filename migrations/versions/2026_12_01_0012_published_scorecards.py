"""scorecard_refreshes.card: the scorecard of a refresh, published with it so a read is a lookup

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # why nullable: a state stored before this revision (or one whose card could not be built) has no card; the
    # read then builds it, as every read did before (issues 14 and 18: read p99 and assignment under mixed load)
    with op.batch_alter_table('scorecard_refreshes') as batch:
        batch.add_column(sa.Column('card', sa.Text(), nullable=True))
        batch.add_column(sa.Column('card_key', sa.String(length=200), nullable=True))
        # why: the refresh job builds cards only for experiments read lately (a card costs a stored aggregation)
        batch.add_column(sa.Column('card_wanted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scorecard_refreshes') as batch:
        batch.drop_column('card_wanted_at')
        batch.drop_column('card_key')
        batch.drop_column('card')
