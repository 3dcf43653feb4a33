"""dev environments: SSH keys, the tools' token, project limits and owners' access

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from suanli.db.models import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ssh_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("algorithm", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.String(length=8192), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_index("ix_ssh_keys_user_id", "ssh_keys", ["user_id"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("secret", sa.String(length=64), nullable=False, server_default="")
        )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "owners_open_devenvs", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    with op.batch_alter_table("project_quotas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("devenv_max_lifetime_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("project_quotas", schema=None) as batch_op:
        batch_op.drop_column("devenv_max_lifetime_seconds")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("owners_open_devenvs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("secret")
    op.drop_index("ix_ssh_keys_user_id", table_name="ssh_keys")
    op.drop_table("ssh_keys")
