"""Sales accounts: the companies deals are made with."""

from crm_assets.domains.base import Column, ColumnType, Domain

REGIONS = ("North America", "Europe", "Asia")

ACCOUNTS = Domain(
    name="accounts",
    entity="sales_accounts",
    singular="sales_account",
    views=("All Accounts",),
    business_key="account_id",
    description="Companies (Freshsales sales accounts), one row per account_id.",
    columns=(
        Column("account_id", ColumnType.BIGINT, "custom_field.cf_account_id", description="Business key"),
        Column("account_name", ColumnType.TEXT, "name"),
        Column("industry", ColumnType.TEXT, "custom_field.cf_industry"),
        Column("account_value", ColumnType.BIGINT, "custom_field.cf_account_value"),
        Column("region", ColumnType.ENUM, "custom_field.cf_region", choices=REGIONS),
    ),
)
