"""Deals: opportunities with an account. Freshsales has no "All Deals" view, so three views list them."""

from crm_assets.domains.base import Column, ColumnType, Domain, ForeignKey

DEAL_STAGES = ("Prospecting", "Negotiation", "Closed-Won", "Closed-Lost")

DEALS = Domain(
    name="deals",
    entity="deals",
    singular="deal",
    views=("Open Deals", "Won Deals", "Lost Deals"),
    business_key="deal_id",
    description="Deals, one row per deal_id; every deal belongs to a loaded account.",
    columns=(
        Column("deal_id", ColumnType.BIGINT, "custom_field.cf_deal_id", description="Business key"),
        Column("deal_name", ColumnType.TEXT, "name"),
        Column("deal_size", ColumnType.DECIMAL, "amount", nullable=True),
        Column("probability_of_closure", ColumnType.TEXT, "custom_field.cf_probability_of_closure"),
        Column("deal_stage", ColumnType.ENUM, "custom_field.cf_deal_stage", choices=DEAL_STAGES),
        Column("account_id", ColumnType.BIGINT, "custom_field.cf_account_id"),
        Column("created_at", ColumnType.TIMESTAMP, "created_at"),
    ),
    foreign_keys=(ForeignKey("account_id", "accounts", "account_id"),),
    read_only=frozenset({"created_at"}),
)
