"""index the referencing column of every foreign key (deals.account_id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 12:15:00

Deleting an account cascades to its deals; without an index on deals.account_id every deleted account
costs a scan of the whole deals table (on SQLite, once per deleted account).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deals_account_id", "deals", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_deals_account_id", table_name="deals")
