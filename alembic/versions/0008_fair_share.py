"""Fair share: a tier and a weight on keys, teams and customers (models.fair_share)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("api_keys", "teams", "customers")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("tier", sa.String(16), nullable=True))
        op.add_column(table, sa.Column("weight", sa.Float(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("weight")
            batch.drop_column("tier")
