"""router and providers: job attempts, served group, waiting for capacity, usage details

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from models.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("served_group", sa.String(255)))
        batch.add_column(sa.Column("not_before", UTCDateTime()))
        batch.add_column(sa.Column("wait_reason", sa.Text()))
        batch.add_column(sa.Column("calls", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("cached_tokens", sa.Integer()))
        batch.add_column(sa.Column("cache_creation_tokens", sa.Integer()))
        batch.add_column(sa.Column("reasoning_tokens", sa.Integer()))
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.String(48), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("claim", sa.Integer(), nullable=False),
        sa.Column("model_group", sa.String(255), nullable=False),
        sa.Column("deployment_id", sa.String(255), nullable=False),
        sa.Column("error_class", sa.String(64)),
        sa.Column("status_code", sa.Integer()),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_job_attempts_job_id", "job_attempts", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_job_attempts_job_id", "job_attempts")
    op.drop_table("job_attempts")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reasoning_tokens")
        batch.drop_column("cache_creation_tokens")
        batch.drop_column("cached_tokens")
        batch.drop_column("calls")
        batch.drop_column("wait_reason")
        batch.drop_column("not_before")
        batch.drop_column("served_group")
