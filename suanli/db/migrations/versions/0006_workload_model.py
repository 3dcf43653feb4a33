"""one workload model: stored scheduler requests, spec versions, deployments, loop leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from suanli.db.models import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("user_name", sa.String(length=32), nullable=False),
        sa.Column("template", sa.JSON(), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("state", sa.String(length=16), nullable=False, server_default="active"),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_start_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_deployments_project_name", "deployments", ["project_id", "name"], unique=True
    )
    op.create_index("ix_deployments_user_id", "deployments", ["user_id"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("spec_version", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(sa.Column("request", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("deployment_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_jobs_deployment_id", "deployments", ["deployment_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_jobs_deployment_id", ["deployment_id"])
        batch_op.alter_column("secret", new_column_name="token")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("token", new_column_name="secret")
        batch_op.drop_index("ix_jobs_deployment_id")
        batch_op.drop_constraint("fk_jobs_deployment_id", type_="foreignkey")
        batch_op.drop_column("deployment_id")
        batch_op.drop_column("request")
        batch_op.drop_column("spec_version")
    op.drop_table("leases")
    op.drop_index("ix_deployments_user_id", table_name="deployments")
    op.drop_index("ix_deployments_project_name", table_name="deployments")
    op.drop_table("deployments")
