"""money totals as NUMERIC(38, 2): deal_aggregations.total_deal_size, pipeline_daily.open_deal_value

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00

A deal's size is NUMERIC(18, 2), and so were the sums of sizes: two deals of one account in one window
near the largest size overflowed the total (PostgreSQL: numeric field overflow, on every later run).
NUMERIC(38, 2), the widest polars Decimal, holds the sum of any realistic number of the largest deals.
PostgreSQL widens the columns in place (no table rewrite: the scale is unchanged); SQLite, where the
declared type only names the affinity (the same NUMERIC), rebuilds the two tables to record it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (("deal_aggregations", "total_deal_size"), ("pipeline_daily", "open_deal_value"))


def upgrade() -> None:
    for table, column in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column, existing_type=sa.Numeric(18, 2), type_=sa.Numeric(38, 2), existing_nullable=False
            )


def downgrade() -> None:
    # Fails (numeric field overflow) while a stored total needs more than 18 digits.
    for table, column in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column, existing_type=sa.Numeric(38, 2), type_=sa.Numeric(18, 2), existing_nullable=False
            )
