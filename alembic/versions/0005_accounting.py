"""accounting: spend rows, the Lago usage outbox, budgets

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from models.tables import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spend",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.String(48), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("claim", sa.Integer(), nullable=False),
        sa.Column("owner_key", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("model_group", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(64)),
        sa.Column("provider_model", sa.String(255)),
        sa.Column("deployment_id", sa.String(255)),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in (
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "cache_creation_tokens",
                "reasoning_tokens",
            )
        ),
        sa.Column("cost", sa.Numeric(20, 10)),
        sa.Column("cost_source", sa.String(32)),
        sa.Column("called_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "claim", name="uq_spend_job_claim"),
    )
    op.create_index("ix_spend_owner_called", "spend", ["owner_key", "called_at"])
    op.create_index("ix_spend_called", "spend", ["called_at"])
    op.create_table(
        "usage_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.String(160), nullable=False, unique=True),
        sa.Column("external_subscription_id", sa.String(255), nullable=False),
        sa.Column("code", sa.String(128), nullable=False),
        sa.Column("timestamp", sa.Integer(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("precise_total_amount_cents", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime()),
    )
    op.create_index("ix_usage_outbox_status_next", "usage_outbox", ["status", "next_attempt_at"])
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("max_spend", sa.Numeric(20, 10), nullable=False),
        sa.Column("soft_limit", sa.Numeric(20, 10)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_budgets_scope", "budgets", ["scope", "scope_id"])


def downgrade() -> None:
    op.drop_index("ix_budgets_scope", "budgets")
    op.drop_table("budgets")
    op.drop_index("ix_usage_outbox_status_next", "usage_outbox")
    op.drop_table("usage_outbox")
    op.drop_index("ix_spend_called", "spend")
    op.drop_index("ix_spend_owner_called", "spend")
    op.drop_table("spend")
