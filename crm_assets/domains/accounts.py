"""Sales accounts: the companies deals are made with."""

from crm_assets.domains.base import Column, ColumnType, Domain
from crm_assets.domains.demo import Built, DemoRecipe, Dirt, Draw, SettingsField, ViewKind, odd_case

REGIONS = ("North America", "Europe", "Asia")

# -- the demo CRM's accounts --

INDUSTRIES = ("Software", "Manufacturing", "Retail", "Healthcare", "Finance", "Logistics", "Energy", "Media")
_ADJ = (
    "Blue", "Bright", "Silver", "North", "Rapid", "Green", "Prime", "Bold", "Clear", "Red", "Swift",
    "Golden", "Iron", "Quiet", "Solar", "Urban", "Vivid", "Wild", "Lucky", "Noble", "Polar", "Royal",
    "Sharp", "True",
)  # fmt: skip
_NOUN = (
    "Harbor", "Peak", "River", "Stone", "Field", "Bridge", "Cloud", "Forge", "Grove", "Lake", "Mesa",
    "Oak", "Pine", "Ridge", "Shore", "Tower", "Vale", "Wave", "Crest", "Dune", "Falcon", "Meadow",
    "Orbit", "Summit",
)  # fmt: skip
_CORP = ("Ltd", "Inc", "GmbH", "LLC", "Group", "Labs", "Systems", "Partners")
_COUNTRIES = ("United States", "Germany", "India")
FIRST_ACCOUNT_ID = 1001  # cf_account_id of record 0; deals point at accounts by it


def _account(d: Draw) -> Built:
    h1, h2 = d.h1, d.h2
    key: object = FIRST_ACCOUNT_ID + d.key_index
    name: str | None = f"{_ADJ[h2 % 24]} {_NOUN[(h2 >> 5) % 24]} {_CORP[(h2 >> 10) % 8]}"
    industry: str | None = INDUSTRIES[(h2 >> 13) % len(INDUSTRIES)]
    value: object = 10_000 + (h2 >> 16) % 990_000
    region: str | None = REGIONS[(h1 >> 10) % 3]
    if d.kind == Dirt.MISSING:
        which = (h1 >> 20) % 4
        key = None if which == 0 else key
        name = None if which == 1 else name
        industry = "   " if which == 2 else industry
        region = None if which == 3 else region
    elif d.kind == Dirt.CASING and region:
        region = odd_case(region, h2 >> 40)
    elif d.kind == Dirt.UNKNOWN:
        region = "Mars"
    elif d.kind == Dirt.NUMSTR:
        suffix = ".0" if (h2 >> 40) & 1 else ""
        key, value = f"{key}{suffix}", f"{value}{suffix}"
    elif d.kind == Dirt.UNCASTABLE:
        value = "lots"
    fields = {
        "name": name,
        "website": f"https://www.{_NOUN[(h2 >> 5) % 24].lower()}{d.i}.example.com",
        "phone": f"+1-555-{(h2 >> 30) % 10_000:04d}",
        "city": None,
        "country": _COUNTRIES[(h1 >> 10) % 3],
        "number_of_employees": 5 + (h2 >> 36) % 5000,
        "annual_revenue": None,
    }
    custom = {
        "cf_account_id": key,
        "cf_industry": industry,
        "cf_account_value": value,
        "cf_region": region,
        "cf_tier": None,
    }
    return fields, custom


DEMO = DemoRecipe(
    code=1,
    build=_account,
    count=300,
    dirt=((Dirt.UNCASTABLE, 15),),
    extra_views=(("My Accounts", ViewKind.MINE),),
    touch_field="name",
    fields=(
        SettingsField("name", "Name", "text", required=True),
        SettingsField("website", "Website", "text"),
        SettingsField("owner_id", "Sales owner", "dropdown"),
        SettingsField("cf_account_id", "Account ID", "number", custom=True),
        SettingsField("cf_industry", "Industry", "dropdown", custom=True, choices=INDUSTRIES),
        SettingsField("cf_account_value", "Account value", "number", custom=True),
        SettingsField("cf_region", "Region", "dropdown", custom=True, choices=REGIONS),
        SettingsField("cf_tier", "Tier", "text", custom=True),
    ),
)

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
    demo=DEMO,
)
