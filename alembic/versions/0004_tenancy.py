"""tenancy: api keys, teams, customers; jobs' tpm estimate and response cache

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from models.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _stamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("metadata", sa.JSON()),
        *_stamps(),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("external_subscription_id", sa.String(255)),
        sa.Column("metadata", sa.JSON()),
        *_stamps(),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("alias", sa.String(255)),
        sa.Column("team_id", sa.String(48), sa.ForeignKey("teams.id")),
        sa.Column("customer_id", sa.String(48), sa.ForeignKey("customers.id")),
        sa.Column("models", sa.JSON()),
        *(
            sa.Column(name, sa.Integer())
            for name in (
                "rpm",
                "tpm",
                "max_parallel_jobs",
                "max_priority",
                "max_batch_lines",
                "cache_ttl",
            )
        ),
        sa.Column("external_subscription_id", sa.String(255)),
        sa.Column("metadata", sa.JSON()),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("revoked_at", UTCDateTime()),
        sa.Column("rotated_at", UTCDateTime()),
        *_stamps(),
    )
    op.create_index("ix_api_keys_team", "api_keys", ["team_id"])
    op.create_index("ix_api_keys_customer", "api_keys", ["customer_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("estimated_tokens", sa.Integer()))
        batch.add_column(sa.Column("cache_ttl", sa.Integer()))
        batch.add_column(
            sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cached")
        batch.drop_column("cache_ttl")
        batch.drop_column("estimated_tokens")
    op.drop_index("ix_api_keys_customer", "api_keys")
    op.drop_index("ix_api_keys_team", "api_keys")
    op.drop_table("api_keys")
    op.drop_table("customers")
    op.drop_table("teams")
