"""engine nodes: a cluster engine's state, reason, availability and pools of each node

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 17:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("engine_state", sa.String(length=128), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("engine_reason", sa.String(length=500), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("available", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column("pools", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("pools")
        batch_op.drop_column("available")
        batch_op.drop_column("engine_reason")
        batch_op.drop_column("engine_state")
