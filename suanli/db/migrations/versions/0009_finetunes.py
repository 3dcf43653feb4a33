"""fine-tuning runs: progress, estimate, final metrics, registered output, comparison

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 05:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "finetunes",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("estimate", sa.JSON(), nullable=False),
        sa.Column("final_metrics", sa.JSON(), nullable=False),
        sa.Column("output_version_id", sa.Integer(), nullable=True),
        sa.Column("registration", sa.String(length=16), nullable=False),
        sa.Column("register_problem", sa.JSON(), nullable=False),
        sa.Column("compare_job_id", sa.Integer(), nullable=True),
        sa.Column("compare_state", sa.String(length=16), nullable=False),
        sa.Column("compare_prompts", sa.JSON(), nullable=False),
        sa.Column("compare_answers", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["output_version_id"], ["data_versions.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["compare_job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("job_id"),
    )


def downgrade() -> None:
    op.drop_table("finetunes")
