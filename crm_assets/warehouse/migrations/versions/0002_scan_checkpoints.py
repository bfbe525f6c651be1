"""resumable scans: scan state, per-view positions and listing counts, durable page staging

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_PAYLOAD = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "raw_scans",
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("scan_id", sa.String(length=32), nullable=False),
        sa.Column("full_scan", sa.Boolean(), nullable=False),
        sa.Column("since", _TIMESTAMP, nullable=True, comment="incremental: records updated at or after this"),
        sa.Column("reason", sa.Text(), nullable=False, comment="why this kind of scan was planned"),
        sa.Column("started_at", _TIMESTAMP, nullable=False),
        sa.Column("checkpointed_at", _TIMESTAMP, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True, comment="the run that started the scan"),
        sa.Column(
            "refused", sa.Text(), nullable=True, comment="why the merge was refused (mass delete); NULL: not refused"
        ),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_raw_scans")),
        sa.UniqueConstraint("scan_id", name=op.f("uq_raw_scans_scan_id")),
        comment="The unfinished extraction of each domain: resumed from its checkpoints, merged once complete",
    )
    op.create_table(
        "raw_scan_views",
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("view", sa.String(length=255), nullable=False),
        sa.Column(
            "next_page", sa.Integer(), nullable=False, comment="the first page the unfinished scan has not staged"
        ),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column(
            "records", sa.BigInteger(), nullable=False, comment="records the unfinished scan staged from this view"
        ),
        sa.Column(
            "last_full_records", sa.BigInteger(), nullable=True, comment="records the last complete full scan listed"
        ),
        sa.Column("last_full_at", _TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("domain", "view", name=op.f("pk_raw_scan_views")),
        comment="Per view: the unfinished scan's position, and what the last complete full scan listed",
    )
    op.create_table(
        "raw_scan_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("scan_id", sa.String(length=32), nullable=False),
        sa.Column(
            "crm_id", sa.BigInteger(), nullable=True, comment="NULL only for a rejected record without a usable id"
        ),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="listed, deleted, confirmed, gone or rejected"),
        sa.Column("payload", _PAYLOAD, nullable=True),
        sa.Column("updated_at", _TIMESTAMP, nullable=True),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True, comment="rejected: why the warehouse cannot store the record"),
        sa.Column("problem", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_scan_records")),
        comment="Pages of unfinished scans, staged durably as they arrive; emptied when the scan is merged",
    )
    with op.batch_alter_table("raw_scan_records", schema=None) as batch_op:
        batch_op.create_index("ix_raw_scan_records_scan_crm_id", ["scan_id", "crm_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("raw_scan_records", schema=None) as batch_op:
        batch_op.drop_index("ix_raw_scan_records_scan_crm_id")
    op.drop_table("raw_scan_records")
    op.drop_table("raw_scan_views")
    op.drop_table("raw_scans")
