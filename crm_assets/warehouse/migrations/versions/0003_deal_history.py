"""deal history: deal_history, deal_stage_transitions, pipeline_daily

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-30 11:30:00

A warehouse that already holds deals starts its history with them: one open version per deal, valid
from its CRM updated_at, first observed now.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIMESTAMP = sa.DateTime(timezone=True)
_TRACKED = ("deal_name", "deal_size", "deal_stage", "probability_of_closure", "account_id", "created_at")


def upgrade() -> None:
    history = op.create_table(
        "deal_history",
        sa.Column("id", _KEY, autoincrement=True, nullable=False),
        sa.Column("deal_id", sa.BigInteger(), nullable=False),
        sa.Column("crm_id", sa.BigInteger(), nullable=False, comment="Freshsales record id of this version"),
        sa.Column("valid_from", _TIMESTAMP, nullable=False, comment="the CRM's updated_at of this version (UTC)"),
        sa.Column("valid_to", _TIMESTAMP, nullable=True, comment="valid_from of the next version; NULL = current"),
        sa.Column("deal_name", sa.Text(), nullable=True),
        sa.Column("deal_size", sa.Numeric(18, 2), nullable=True),
        sa.Column("deal_stage", sa.Text(), nullable=True),
        sa.Column("probability_of_closure", sa.Text(), nullable=True),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=True),
        sa.Column("is_deleted", sa.Boolean(), nullable=False, comment="this version records the deal leaving `deals`"),
        sa.Column("first_observed_at", _TIMESTAMP, nullable=False, comment="when a sync first saw this deal"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deal_history")),
        comment="One row per version of a deal (type 2): what `deals` held for it from valid_from to valid_to",
    )
    with op.batch_alter_table("deal_history", schema=None) as batch_op:
        batch_op.create_index("ix_deal_history_deal_id_valid_from", ["deal_id", "valid_from"], unique=False)
        batch_op.create_index(
            "uq_deal_history_open_deal_id",
            ["deal_id"],
            unique=True,
            postgresql_where=sa.text("valid_to IS NULL"),
            sqlite_where=sa.text("valid_to IS NULL"),
        )
        batch_op.create_index(
            "ix_deal_history_open_account_id",
            ["account_id"],
            unique=False,
            postgresql_where=sa.text("valid_to IS NULL"),
            sqlite_where=sa.text("valid_to IS NULL"),
        )

    op.create_table(
        "deal_stage_transitions",
        sa.Column("id", _KEY, autoincrement=True, nullable=False),
        sa.Column("deal_id", sa.BigInteger(), nullable=False),
        sa.Column("from_stage", sa.Text(), nullable=False),
        sa.Column("to_stage", sa.Text(), nullable=False),
        sa.Column("changed_at", _TIMESTAMP, nullable=False),
        sa.Column(
            "days_in_from_stage",
            sa.Float(),
            nullable=True,
            comment="NULL when from_stage was entered before the history",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deal_stage_transitions")),
        comment="One row per stage change of a deal, derived from deal_history",
    )
    with op.batch_alter_table("deal_stage_transitions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deal_stage_transitions_deal_id"), ["deal_id"], unique=False)

    op.create_table(
        "pipeline_daily",
        sa.Column("id", _KEY, autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("deal_stage", sa.Text(), nullable=False),
        sa.Column(
            "region", sa.Text(), nullable=True, comment="the account's region now; NULL when the account is gone"
        ),
        sa.Column("open_deal_count", sa.Integer(), nullable=False),
        sa.Column("open_deal_value", sa.Numeric(18, 2), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_daily")),
        comment="Open deals per stage and region as of the end of each UTC day, from deal_history",
    )
    with op.batch_alter_table("pipeline_daily", schema=None) as batch_op:
        batch_op.create_index("ix_pipeline_daily_day", ["day"], unique=False)

    _seed_from_deals(history)


def _seed_from_deals(history: sa.Table) -> None:
    deals = sa.table("deals", *(sa.column(c) for c in ("deal_id", "crm_id", "updated_at", *_TRACKED)))
    source = sa.select(
        deals.c.deal_id,
        deals.c.crm_id,
        deals.c.updated_at,
        *(deals.c[c] for c in _TRACKED),
        sa.false(),
        sa.literal(datetime.now(UTC), _TIMESTAMP),
    )
    columns = ["deal_id", "crm_id", "valid_from", *_TRACKED, "is_deleted", "first_observed_at"]
    op.execute(history.insert().from_select(columns, source))


def downgrade() -> None:
    op.drop_table("pipeline_daily")
    op.drop_table("deal_stage_transitions")
    op.drop_table("deal_history")
