"""predictions: index on created_at for the retention purge

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_predictions_created_at', 'predictions', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_predictions_created_at', table_name='predictions')
