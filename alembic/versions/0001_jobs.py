"""jobs table

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from models.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("deployment_id", sa.String(255)),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON()),
        sa.Column("error", sa.JSON()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("deadline", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
        sa.Column("published_at", UTCDateTime()),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("lease_until", UTCDateTime()),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer()),
        sa.Column("completion_tokens", sa.Integer()),
        sa.Column("total_tokens", sa.Integer()),
        sa.Column("cost", sa.Numeric(20, 10)),
        sa.Column("owner_key", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.String(48)),
        sa.Column("custom_id", sa.String(512)),
        sa.Column("metadata", sa.JSON()),
        sa.Column("webhook_url", sa.Text()),
    )
    op.create_index("ix_jobs_owner_status_id", "jobs", ["owner_key", "status", "id"])
    op.create_index("ix_jobs_owner_id", "jobs", ["owner_key", "id"])
    op.create_index("ix_jobs_batch_status", "jobs", ["batch_id", "status"])
    op.create_index("ix_jobs_status_published", "jobs", ["status", "published_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_published", "jobs")
    op.drop_index("ix_jobs_batch_status", "jobs")
    op.drop_index("ix_jobs_owner_id", "jobs")
    op.drop_index("ix_jobs_owner_status_id", "jobs")
    op.drop_table("jobs")
