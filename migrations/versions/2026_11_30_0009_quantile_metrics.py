"""metrics: quantile metrics (issue 16, item 3): a nullable quantile column and 'quantile' in the kind check

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # why batch_alter_table: SQLite cannot change a CHECK constraint in place; the batch copies the table.
    with op.batch_alter_table('metrics') as batch:
        batch.add_column(sa.Column('quantile', sa.Float(), nullable=True))
        batch.drop_constraint(op.f('ck_metrics_kind'), type_='check')
        batch.create_check_constraint(op.f('ck_metrics_kind'), "kind IN ('proportion', 'mean', 'ratio', 'quantile')")


def downgrade() -> None:
    op.execute("DELETE FROM metrics WHERE kind = 'quantile'")
    with op.batch_alter_table('metrics') as batch:
        batch.drop_constraint(op.f('ck_metrics_kind'), type_='check')
        batch.create_check_constraint(op.f('ck_metrics_kind'), "kind IN ('proportion', 'mean', 'ratio')")
        batch.drop_column('quantile')
