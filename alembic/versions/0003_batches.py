"""batches: files, batches, webhook deliveries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from models.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("owner_key", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_files_owner_id", "files", ["owner_key", "id"])
    op.create_table(
        "batches",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("owner_key", sa.String(64), nullable=False),
        sa.Column("api", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(48)),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("errors", sa.JSON()),
        sa.Column("output_file_id", sa.String(48)),
        sa.Column("error_file_id", sa.String(48)),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(255)),
        sa.Column("usage", sa.JSON()),
        sa.Column("metadata", sa.JSON()),
        sa.Column("webhook_url", sa.Text()),
        sa.Column("priority", sa.Integer(), nullable=False),
        *(
            sa.Column(name, UTCDateTime())
            for name in (
                "in_progress_at",
                "expires_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_batches_owner_id", "batches", ["owner_key", "id"])
    op.create_index("ix_batches_status", "batches", ["status"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime()),
        sa.Column("delivered_at", UTCDateTime()),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next", "webhook_deliveries", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_status_next", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_batches_status", "batches")
    op.drop_index("ix_batches_owner_id", "batches")
    op.drop_table("batches")
    op.drop_index("ix_files_owner_id", "files")
    op.drop_table("files")
