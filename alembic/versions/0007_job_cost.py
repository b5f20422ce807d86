"""jobs.cost_source: where a job's cost came from (the deployment's config prices, the
maintained price list, the response cache), beside its cost; jobs by finished_at (the
operator page's last hour); jobs.trace_context (the intake span's traceparent)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("cost_source", sa.String(32), nullable=True))
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])
    op.add_column("jobs", sa.Column("trace_context", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "trace_context")
    op.drop_index("ix_jobs_finished", table_name="jobs")
    op.drop_column("jobs", "cost_source")
