"""Contacts: the people at accounts."""

from crm_assets.domains.base import Column, ColumnType, Domain

LEAD_SOURCES = ("Website", "Referral", "Email Campaign")

CONTACTS = Domain(
    name="contacts",
    entity="contacts",
    singular="contact",
    views=("All Contacts",),
    business_key="contact_id",
    description="People (Freshsales contacts), one row per contact_id (the CRM's external_id).",
    columns=(
        Column("contact_id", ColumnType.TEXT, "external_id", description="Business key"),
        Column("first_name", ColumnType.TEXT, "first_name"),
        Column("last_name", ColumnType.TEXT, "last_name"),
        Column("email", ColumnType.TEXT, "email"),
        Column("job_title", ColumnType.TEXT, "job_title", nullable=True),
        Column("lead_source", ColumnType.ENUM, "custom_field.cf_lead_source", choices=LEAD_SOURCES),
        Column("last_contact_date", ColumnType.DATE, "custom_field.cf_last_contacted_date", nullable=True),
    ),
)
