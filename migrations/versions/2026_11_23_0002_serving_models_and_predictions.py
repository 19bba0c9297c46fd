"""serving: model registry and prediction log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:23:02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('model_specs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('dtype', sa.String(length=16), nullable=False),
    sa.Column('device', sa.String(length=32), nullable=False),
    sa.Column('max_batch', sa.Integer(), nullable=False),
    sa.Column('max_length', sa.Integer(), nullable=False),
    sa.Column('pooling', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("dtype IN ('float32', 'bfloat16', 'float16')", name=op.f('ck_model_specs_dtype')),
    sa.CheckConstraint("pooling IN ('mean', 'cls')", name=op.f('ck_model_specs_pooling')),
    sa.CheckConstraint("task IN ('text-classification', 'embedding')", name=op.f('ck_model_specs_task')),
    sa.CheckConstraint('max_batch >= 1 AND max_length >= 1', name=op.f('ck_model_specs_limits')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_specs')),
    sa.UniqueConstraint('key', name=op.f('uq_model_specs_key'))
    )
    op.create_table('predictions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('variant', sa.String(length=100), nullable=False),
    sa.Column('unit_id', sa.String(length=256), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('n_inputs', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('summary', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('shadow', sa.Boolean(), nullable=False),
    sa.Column('agreement', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_predictions_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_predictions'))
    )
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.create_index('ix_predictions_experiment_variant_created', ['experiment_id', 'variant', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index('ix_predictions_experiment_variant_created')

    op.drop_table('predictions')
    op.drop_table('model_specs')
