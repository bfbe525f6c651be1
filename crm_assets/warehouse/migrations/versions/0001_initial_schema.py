"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 09:51:00.262730
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False, comment="Business key"),
        sa.Column("account_name", sa.Text(), nullable=False),
        sa.Column("industry", sa.Text(), nullable=False),
        sa.Column("account_value", sa.BigInteger(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("crm_id", sa.BigInteger(), nullable=False, comment="Freshsales record id"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="Freshsales updated_at (UTC)"),
        sa.CheckConstraint("region IN ('North America', 'Europe', 'Asia')", name=op.f("ck_accounts_region_domain")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("account_id", name=op.f("uq_accounts_account_id")),
        comment="Companies (Freshsales sales accounts), one row per account_id.",
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_accounts_crm_id"), ["crm_id"], unique=False)

    op.create_table(
        "accounts_candidates",
        sa.Column("crm_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("account_name", sa.Text(), nullable=True),
        sa.Column("industry", sa.Text(), nullable=True),
        sa.Column("account_value", sa.BigInteger(), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True, comment="why the record cannot be loaded as is; NULL when it can"),
        sa.PrimaryKeyConstraint("crm_id", name=op.f("pk_accounts_candidates")),
        comment="accounts records coerced to column types, before duplicates and orphans are decided",
    )
    with op.batch_alter_table("accounts_candidates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_accounts_candidates_account_id"), ["account_id"], unique=False)

    op.create_table(
        "contacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("contact_id", sa.String(), nullable=False, comment="Business key"),
        sa.Column("first_name", sa.Text(), nullable=False),
        sa.Column("last_name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("job_title", sa.Text(), nullable=True),
        sa.Column("lead_source", sa.Text(), nullable=False),
        sa.Column("last_contact_date", sa.Date(), nullable=True),
        sa.Column("crm_id", sa.BigInteger(), nullable=False, comment="Freshsales record id"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="Freshsales updated_at (UTC)"),
        sa.CheckConstraint(
            "lead_source IN ('Website', 'Referral', 'Email Campaign')", name=op.f("ck_contacts_lead_source_domain")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("contact_id", name=op.f("uq_contacts_contact_id")),
        comment="People (Freshsales contacts), one row per contact_id (the CRM's external_id).",
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_crm_id"), ["crm_id"], unique=False)

    op.create_table(
        "contacts_candidates",
        sa.Column("crm_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("job_title", sa.Text(), nullable=True),
        sa.Column("lead_source", sa.Text(), nullable=True),
        sa.Column("last_contact_date", sa.Date(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True, comment="why the record cannot be loaded as is; NULL when it can"),
        sa.PrimaryKeyConstraint("crm_id", name=op.f("pk_contacts_candidates")),
        comment="contacts records coerced to column types, before duplicates and orphans are decided",
    )
    with op.batch_alter_table("contacts_candidates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_candidates_contact_id"), ["contact_id"], unique=False)

    op.create_table(
        "crm_update_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("crm_id", sa.BigInteger(), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False, comment="applied, skipped, failed, planned"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_update_audit")),
        comment="One row per record the update_domain_value job touched or tried to",
    )
    with op.batch_alter_table("crm_update_audit", schema=None) as batch_op:
        batch_op.create_index("ix_crm_update_audit_run", ["run_id"], unique=False)

    op.create_table(
        "deals_candidates",
        sa.Column("crm_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deal_id", sa.BigInteger(), nullable=True),
        sa.Column("deal_name", sa.Text(), nullable=True),
        sa.Column("deal_size", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("probability_of_closure", sa.Text(), nullable=True),
        sa.Column("deal_stage", sa.Text(), nullable=True),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True, comment="why the record cannot be loaded as is; NULL when it can"),
        sa.PrimaryKeyConstraint("crm_id", name=op.f("pk_deals_candidates")),
        comment="deals records coerced to column types, before duplicates and orphans are decided",
    )
    with op.batch_alter_table("deals_candidates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deals_candidates_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deals_candidates_deal_id"), ["deal_id"], unique=False)

    op.create_table(
        "raw_accounts",
        sa.Column("crm_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="The record exactly as the CRM returned it",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("change_seq", sa.BigInteger(), nullable=False, comment="raise with every change; see sync_state"),
        sa.PrimaryKeyConstraint("crm_id", name=op.f("pk_raw_accounts")),
        comment="Freshsales sales_accounts as extracted, one row per CRM id",
    )
    with op.batch_alter_table("raw_accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_raw_accounts_change_seq"), ["change_seq"], unique=False)

    op.create_table(
        "raw_contacts",
        sa.Column("crm_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="The record exactly as the CRM returned it",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("change_seq", sa.BigInteger(), nullable=False, comment="raise with every change; see sync_state"),
        sa.PrimaryKeyConstraint("crm_id", name=op.f("pk_raw_contacts")),
        comment="Freshsales contacts as extracted, one row per CRM id",
    )
    with op.batch_alter_table("raw_contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_raw_contacts_change_seq"), ["change_seq"], unique=False)

    op.create_table(
        "raw_deals",
        sa.Column("crm_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="The record exactly as the CRM returned it",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("change_seq", sa.BigInteger(), nullable=False, comment="raise with every change; see sync_state"),
        sa.PrimaryKeyConstraint("crm_id", name=op.f("pk_raw_deals")),
        comment="Freshsales deals as extracted, one row per CRM id",
    )
    with op.batch_alter_table("raw_deals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_raw_deals_change_seq"), ["change_seq"], unique=False)

    op.create_table(
        "rejected_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("crm_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "problem",
            sa.String(length=255),
            nullable=False,
            comment="the kinds of problem, without values, for counting",
        ),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_records")),
        comment="Records that could not be loaded, and why; re-decided whenever a record or its rivals change",
    )
    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.create_index("ix_rejected_records_domain_crm_id", ["domain", "crm_id"], unique=False)

    op.create_table(
        "sync_state",
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.DateTime(timezone=True), nullable=True, comment="Highest updated_at seen"),
        sa.Column("last_full_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleaned_through", sa.BigInteger(), nullable=True, comment="raw change_seq the clean table reflects"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_sync_state")),
        comment="Incremental extraction cursors and how far each clean table has caught up",
    )
    op.create_table(
        "deal_aggregations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("aggregation_type", sa.String(length=16), nullable=False),
        sa.Column("aggregation_date", sa.Date(), nullable=False),
        sa.Column("total_deal_size", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("deal_count", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "aggregation_type IN ('daily', 'weekly', 'monthly')",
            name=op.f("ck_deal_aggregations_aggregation_type_domain"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.account_id"],
            name=op.f("fk_deal_aggregations_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deal_aggregations")),
        sa.UniqueConstraint(
            "account_id", "aggregation_type", "aggregation_date", name=op.f("uq_deal_aggregations_account_id")
        ),
        comment="Deal totals per account and day / ISO week / month (UTC windows)",
    )
    with op.batch_alter_table("deal_aggregations", schema=None) as batch_op:
        batch_op.create_index("ix_deal_aggregations_type_date", ["aggregation_type", "aggregation_date"], unique=False)

    op.create_table(
        "deals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("deal_id", sa.BigInteger(), nullable=False, comment="Business key"),
        sa.Column("deal_name", sa.Text(), nullable=False),
        sa.Column("deal_size", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("probability_of_closure", sa.Text(), nullable=False),
        sa.Column("deal_stage", sa.Text(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("crm_id", sa.BigInteger(), nullable=False, comment="Freshsales record id"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="Freshsales updated_at (UTC)"),
        sa.CheckConstraint(
            "deal_stage IN ('Prospecting', 'Negotiation', 'Closed-Won', 'Closed-Lost')",
            name=op.f("ck_deals_deal_stage_domain"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.account_id"], name=op.f("fk_deals_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deals")),
        sa.UniqueConstraint("deal_id", name=op.f("uq_deals_deal_id")),
        comment="Deals, one row per deal_id; every deal belongs to a loaded account.",
    )
    with op.batch_alter_table("deals", schema=None) as batch_op:
        batch_op.create_index("ix_deals_created_at", ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_deals_crm_id"), ["crm_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deals_crm_id"))
        batch_op.drop_index("ix_deals_created_at")

    op.drop_table("deals")
    with op.batch_alter_table("deal_aggregations", schema=None) as batch_op:
        batch_op.drop_index("ix_deal_aggregations_type_date")

    op.drop_table("deal_aggregations")
    op.drop_table("sync_state")
    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.drop_index("ix_rejected_records_domain_crm_id")

    op.drop_table("rejected_records")
    with op.batch_alter_table("raw_deals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_deals_change_seq"))

    op.drop_table("raw_deals")
    with op.batch_alter_table("raw_contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_contacts_change_seq"))

    op.drop_table("raw_contacts")
    with op.batch_alter_table("raw_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_accounts_change_seq"))

    op.drop_table("raw_accounts")
    with op.batch_alter_table("deals_candidates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deals_candidates_deal_id"))
        batch_op.drop_index(batch_op.f("ix_deals_candidates_account_id"))

    op.drop_table("deals_candidates")
    with op.batch_alter_table("crm_update_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_update_audit_run")

    op.drop_table("crm_update_audit")
    with op.batch_alter_table("contacts_candidates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_candidates_contact_id"))

    op.drop_table("contacts_candidates")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_crm_id"))

    op.drop_table("contacts")
    with op.batch_alter_table("accounts_candidates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_candidates_account_id"))

    op.drop_table("accounts_candidates")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_crm_id"))

    op.drop_table("accounts")
