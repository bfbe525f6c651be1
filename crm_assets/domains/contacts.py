"""Contacts: the people at accounts."""

from crm_assets.domains.base import Column, ColumnType, Domain
from crm_assets.domains.demo import Built, DemoRecipe, Dirt, Draw, SettingsField, ViewKind, format_date, odd_case

LEAD_SOURCES = ("Website", "Referral", "Email Campaign")

# -- the demo CRM's contacts --

JOB_TITLES = ("CEO", "CTO", "Buyer", "Head of Sales", "Engineer", "Analyst", "Office Manager")
_FIRST = (
    "Ana", "Ben", "Chloe", "David", "Elif", "Farah", "Goran", "Hana", "Ivan", "Jia", "Kofi", "Lena",
    "Marco", "Nina", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wen", "Yusuf",
)  # fmt: skip
_LAST = (
    "Smith", "Garcia", "Muller", "Rossi", "Kim", "Nguyen", "Patel", "Silva", "Kowalski", "Tanaka",
    "Okafor", "Haddad", "Jensen", "Novak", "Costa", "Ivanova", "Chen", "Dubois", "Ahmed", "Larsen",
)  # fmt: skip
_MAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.invalid")
_TIME_ZONES = ("Central America", "Chennai", "UTC")  # the names of the demo's three zones


def _last_contacted(d: Draw) -> str | None:
    pick = (d.h2 >> 20) % 10
    when = d.created_ts + (d.end_ts - d.created_ts) * ((d.h2 >> 24) % 100) // 100
    if pick < 6:
        return format_date(when)
    if pick < 8:
        return d.stamp(when)
    return None


def _contact(d: Draw) -> Built:
    h1, h2, i = d.h1, d.h2, d.i
    first: str | None = _FIRST[h2 % len(_FIRST)]
    last = _LAST[(h2 >> 5) % len(_LAST)]
    address = f"{first}.{last}.{i}@{_MAIL_DOMAINS[(h2 >> 10) % 4]}".lower()
    email: str | None = address
    external_id: str | None = f"C-{100_001 + d.key_index}"
    source: str | None = LEAD_SOURCES[(h1 >> 10) % 3]
    job_title = None if (h2 >> 13) % 10 == 0 else JOB_TITLES[(h2 >> 13) % len(JOB_TITLES)]
    last_contacted = _last_contacted(d)
    if d.kind == Dirt.MISSING:
        which = (h1 >> 20) % 4
        external_id = None if which == 0 else external_id
        first = "" if which == 1 else first
        email = None if which == 2 else email  # the `emails` list still holds it
        source = None if which == 3 else source
    elif d.kind == Dirt.CASING and source:
        source = odd_case(source, h2 >> 40)
    elif d.kind == Dirt.UNKNOWN:
        source = "Carrier Pigeon"
    elif d.kind == Dirt.NUMSTR:
        external_id = str(100_001 + i)  # an all-digit external id: still text
    elif d.kind == Dirt.UNCASTABLE:
        last_contacted = "sometime last week"
    fields = {
        "first_name": first,
        "last_name": last,
        "display_name": f"{first or ''} {last}".strip(),
        "email": email,
        "emails": [{"id": 17_500_000_001 + i, "value": address, "is_primary": True, "label": "work"}],
        "job_title": job_title,
        "mobile_number": f"+44-7700-{(h2 >> 30) % 1_000_000:06d}",
        "time_zone": _TIME_ZONES[d.zone],
        "lead_score": (h2 >> 50) % 100,
        "external_id": external_id,
    }
    return fields, {"cf_lead_source": source, "cf_last_contacted_date": last_contacted}


DEMO = DemoRecipe(
    code=2,
    build=_contact,
    count=3000,
    dirt=((Dirt.UNCASTABLE, 10),),
    extra_views=(("My Contacts", ViewKind.MINE), ("New Contacts", ViewKind.RECENT)),
    touch_field="job_title",
    fields=(
        SettingsField("first_name", "First name", "text"),
        SettingsField("last_name", "Last name", "text", required=True),
        SettingsField("email", "Email", "email"),
        SettingsField("job_title", "Job title", "text"),
        SettingsField("external_id", "External ID", "text"),
        SettingsField("cf_lead_source", "Lead source", "dropdown", custom=True, choices=LEAD_SOURCES),
        SettingsField("cf_last_contacted_date", "Last contacted date", "date", custom=True),
    ),
)

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
    demo=DEMO,
)
