"""the shared CRM request budget

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-30 11:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crm_rate_budget",
        sa.Column("account", sa.Text(), nullable=False, comment="The CRM account (host) whose budget this is"),
        sa.Column(
            "state",
            sa.Text(),
            nullable=False,
            comment="Recent grant times and the CRM's last rate-limit headers (JSON)",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_crm_rate_budget")),
        comment="The CRM request budget every process of a deployment shares (PostgreSQL; SQLite uses a file)",
    )


def downgrade() -> None:
    op.drop_table("crm_rate_budget")
