"""Deterministic synthetic Freshsales records, generated lazily from (seed, entity, index).

Nothing is materialized up front: record `i` of an entity is a pure function of the seed, the
entity and `i`, built from two splitmix64 hashes. `created_at` and `updated_at` grow with the index,
so a view sorted by either timestamp is just index order; only mutated records (kept by the store)
need sorting. `facts()` computes what view membership needs without building the record.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, NamedTuple

from crm_assets.demo_crm.config import DemoConfig
from crm_assets.timestamps import parse_instant

_MASK64 = (1 << 64) - 1
_DAY = 86_400
RECENT_DAYS = 30  # "New Contacts" / "Recent Deals": created in the last 30 days


def mix64(x: int) -> int:
    """splitmix64's finalizer: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@dataclass(frozen=True)
class EntitySpec:
    entity: str  # plural, as in URLs and list responses
    singular: str
    code: int
    id_base: int  # CRM id of record 0
    view_base: int  # id of the first view
    config_count: str  # DemoConfig attribute holding the number of records


ACCOUNTS = EntitySpec("sales_accounts", "sales_account", 1, 17_000_000_001, 17_000_000_101, "accounts")
CONTACTS = EntitySpec("contacts", "contact", 2, 17_100_000_001, 17_000_000_201, "contacts")
DEALS = EntitySpec("deals", "deal", 3, 17_200_000_001, 17_000_000_301, "deals")
ENTITIES: dict[str, EntitySpec] = {s.entity: s for s in (ACCOUNTS, CONTACTS, DEALS)}
BY_SINGULAR: dict[str, EntitySpec] = {s.singular: s for s in (ACCOUNTS, CONTACTS, DEALS)}

# View kinds: what a view lists. Names follow the Freshsales defaults.
ALL, MINE, RECENT, DELETED, OPEN, WON, LOST = "all", "mine", "recent", "deleted", "open", "won", "lost"
VIEW_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "sales_accounts": (("All Accounts", ALL), ("My Accounts", MINE), ("Recycle Bin", DELETED)),
    "contacts": (
        ("All Contacts", ALL),
        ("My Contacts", MINE),
        ("New Contacts", RECENT),
        ("Recycle Bin", DELETED),
    ),
    "deals": (
        ("Open Deals", OPEN),
        ("Won Deals", WON),
        ("Lost Deals", LOST),
        ("My Deals", MINE),
        ("Recent Deals", RECENT),
        ("Recycle Bin", DELETED),
    ),
}


@dataclass(frozen=True)
class View:
    id: int
    name: str
    kind: str


def views_of(entity: str) -> tuple[View, ...]:
    base = ENTITIES[entity].view_base
    return tuple(View(base + n, name, kind) for n, (name, kind) in enumerate(VIEW_NAMES[entity]))


# Users: the API key belongs to the first one ("My ..." views).
USERS: tuple[dict[str, Any], ...] = tuple(
    {
        "id": 17_000_000_011 + n,
        "display_name": name,
        "email": f"{name.split()[0].lower()}@demo-crm.invalid",
        "is_active": True,
        "work_number": None,
        "mobile_number": None,
    }
    for n, name in enumerate(("Dana Demo", "Rohan Iyer", "Mia Lopez", "Sam Chen"))
)
ME = USERS[0]["id"]

REGIONS = ("North America", "Europe", "Asia")
LEAD_SOURCES = ("Website", "Referral", "Email Campaign")
STAGES = ("Prospecting", "Negotiation", "Closed-Won", "Closed-Lost")
STAGE_IDS = {label: 17_000_000_501 + n for n, label in enumerate(STAGES)}
STAGE_PROBABILITY = {"Prospecting": 20, "Negotiation": 60, "Closed-Won": 100, "Closed-Lost": 0}
PIPELINE_ID = 17_000_000_500
UNKNOWN_LABELS = {"sales_accounts": "Mars", "contacts": "Carrier Pigeon", "deals": "Stalled"}
INDUSTRIES = ("Software", "Manufacturing", "Retail", "Healthcare", "Finance", "Logistics", "Energy", "Media")
PROBABILITY_LABELS = ("Low", "Medium", "High")
JOB_TITLES = ("CEO", "CTO", "Buyer", "Head of Sales", "Engineer", "Analyst", "Office Manager")
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
_FIRST = (
    "Ana", "Ben", "Chloe", "David", "Elif", "Farah", "Goran", "Hana", "Ivan", "Jia", "Kofi", "Lena",
    "Marco", "Nina", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wen", "Yusuf",
)  # fmt: skip
_LAST = (
    "Smith", "Garcia", "Muller", "Rossi", "Kim", "Nguyen", "Patel", "Silva", "Kowalski", "Tanaka",
    "Okafor", "Haddad", "Jensen", "Novak", "Costa", "Ivanova", "Chen", "Dubois", "Ahmed", "Larsen",
)  # fmt: skip
_PRODUCTS = ("Licenses", "Renewal", "Pilot", "Expansion", "Support Plan", "Hardware", "Training", "Upgrade")
_MAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.invalid")
# Account time zones: timestamps render in one of these (numeric offset, or Z for UTC accounts).
ZONES: tuple[tuple[str, int], ...] = (("-06:00", -6 * 3600), ("+05:30", 5 * 3600 + 1800), ("Z", 0))

# Dirt kinds; at most one per record, chosen by the record's hash bucket (per mille).
CLEAN, DUP, MISSING, CASING, UNKNOWN, DELETED_DIRT, NUMSTR, UNCASTABLE = range(8)
ORPHAN, VIEW_DUP, AMOUNT_ODD, AMOUNT_NULL = range(8, 12)
_COMMON_RATES = ((DUP, 20), (MISSING, 20), (CASING, 30), (UNKNOWN, 15), (DELETED_DIRT, 20), (NUMSTR, 30))
_RATES: dict[str, tuple[tuple[int, int], ...]] = {
    "sales_accounts": (*_COMMON_RATES, (UNCASTABLE, 15)),
    "contacts": (*_COMMON_RATES, (UNCASTABLE, 10)),
    "deals": (*_COMMON_RATES, (UNCASTABLE, 10), (ORPHAN, 20), (VIEW_DUP, 10), (AMOUNT_ODD, 30), (AMOUNT_NULL, 20)),
}


def _bucket_table(entity: str) -> tuple[int, ...]:
    table: list[int] = []
    for kind, per_mille in _RATES[entity]:
        table.extend([kind] * per_mille)
    return tuple(table + [CLEAN] * (1000 - len(table)))


def normalize_label(value: object) -> str | None:
    """How the cleaning step compares labels: trimmed, whitespace collapsed, case-folded."""
    if not isinstance(value, str):
        return None
    return " ".join(value.split()).casefold() or None


_STAGE_CLASS = {"prospecting": OPEN, "negotiation": OPEN, "closed-won": WON, "closed-lost": LOST}


def stage_class(label: object) -> str:
    """Open, Won or Lost view for a deal stage label; unknown or missing labels count as open."""
    return _STAGE_CLASS.get(normalize_label(label) or "", OPEN)


def odd_case(label: str, variant: int) -> str:
    """The label as a careless user typed it: still the same label after normalization."""
    choice = variant % 4
    if choice == 0:
        return " " + label.lower().replace(" ", "  ")
    if choice == 1:
        return label.upper() + " "
    if choice == 2:
        return "  " + label.swapcase()
    return label.lower() + "\t"


def format_ts(ts: int, zone: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS±HH:MM` (or `Z`) for a Unix time, in one of the account zones."""
    suffix, offset = ZONES[zone]
    return (_EPOCH + datetime.timedelta(seconds=ts + offset)).isoformat() + suffix


def format_date(ts: int) -> str:
    return (_EPOCH + datetime.timedelta(seconds=ts)).date().isoformat()


_EPOCH = datetime.datetime(1970, 1, 1)


class Facts(NamedTuple):
    """What view membership needs to know about a record."""

    deleted: bool
    stage: str  # OPEN / WON / LOST (deals); OPEN elsewhere
    owner_id: int
    created_ts: int
    view_dup: bool  # a won deal also listed in Open Deals


class SyntheticData:
    """The base (never mutated) records of one demo CRM."""

    def __init__(self, config: DemoConfig, today: datetime.date) -> None:
        self.config = config
        self.dirty = config.dirty
        self.end_ts = int(datetime.datetime(today.year, today.month, today.day, tzinfo=datetime.UTC).timestamp())
        self.start_ts = self.end_ts - int(config.years * 365.25 * _DAY)
        self.recent_ts = self.end_ts - RECENT_DAYS * _DAY
        self.counts = {spec.entity: int(getattr(config, spec.config_count)) for spec in ENTITIES.values()}
        self._salts = {spec.entity: mix64((config.seed << 8) ^ spec.code) for spec in ENTITIES.values()}
        self._buckets = {entity: _bucket_table(entity) for entity in ENTITIES}

    # -- the cheap part: hashes, dirt, timestamps, membership facts --

    def _hashes(self, entity: str, i: int) -> tuple[int, int]:
        h1 = mix64(self._salts[entity] ^ (i * 0x9E3779B97F4A7C15 & _MASK64))
        return h1, mix64(h1 ^ 0x5DEECE66D)

    def dirt(self, entity: str, i: int, h1: int) -> int:
        if not self.dirty:
            return CLEAN
        kind = self._buckets[entity][h1 % 1000]
        return CLEAN if kind == DUP and i == 0 else kind

    def created_ts(self, entity: str, i: int) -> int:
        """Strictly increasing in the index (ties only when there are more records than seconds)."""
        return self.start_ts + (i * (self.end_ts - self.start_ts)) // max(self.counts[entity], 1)

    def updated_ts(self, created: int) -> int:
        # Non-decreasing in created, >= created and < end_ts: sorting by it is index order.
        return created + (self.end_ts - created) // 8

    def _deal_stage(self, h1: int, kind: int) -> str:
        if kind == VIEW_DUP:
            return "Closed-Won"
        pick = (h1 >> 10) % 100
        return STAGES[0 if pick < 30 else 1 if pick < 55 else 2 if pick < 80 else 3]

    def facts(self, entity: str, i: int) -> Facts:
        h1, _ = self._hashes(entity, i)
        kind = self.dirt(entity, i, h1)
        stage = OPEN
        if entity == "deals":
            missing_stage = kind == MISSING and (h1 >> 20) % 4 == 2
            stage = OPEN if kind == UNKNOWN or missing_stage else stage_class(self._deal_stage(h1, kind))
        owner = USERS[(h1 >> 17) % len(USERS)]["id"]
        return Facts(kind == DELETED_DIRT, stage, owner, self.created_ts(entity, i), kind == VIEW_DUP)

    def view_dup(self, entity: str, i: int) -> bool:
        h1, _ = self._hashes(entity, i)
        return self.dirt(entity, i, h1) == VIEW_DUP

    def dup_of(self, i: int, h2: int) -> int:
        """The earlier record whose business key a duplicate copies."""
        return i - 1 - (h2 >> 48) % min(i, 97)

    # -- full records --

    def record(self, entity: str, i: int) -> dict[str, Any]:
        h1, h2 = self._hashes(entity, i)
        kind = self.dirt(entity, i, h1)
        created = self.created_ts(entity, i)
        if entity == "deals":
            return self._deal(i, h1, h2, kind, created)
        if entity == "contacts":
            return self._contact(i, h1, h2, kind, created)
        return self._account(i, h1, h2, kind, created)

    def _stamps(self, h1: int, created: int) -> tuple[int, str, str]:
        zone = (h1 >> 25) % len(ZONES)
        return zone, format_ts(created, zone), format_ts(self.updated_ts(created), zone)

    def account_name(self, h2: int) -> str:
        return f"{_ADJ[h2 % 24]} {_NOUN[(h2 >> 5) % 24]} {_CORP[(h2 >> 10) % 8]}"

    def _account(self, i: int, h1: int, h2: int, kind: int, created: int) -> dict[str, Any]:
        _, created_at, updated_at = self._stamps(h1, created)
        key: object = 1001 + (self.dup_of(i, h2) if kind == DUP else i)
        name: str | None = self.account_name(h2)
        industry: str | None = INDUSTRIES[(h2 >> 13) % len(INDUSTRIES)]
        value: object = 10_000 + (h2 >> 16) % 990_000
        region: str | None = REGIONS[(h1 >> 10) % 3]
        if kind == MISSING:
            which = (h1 >> 20) % 4
            key = None if which == 0 else key
            name = None if which == 1 else name
            industry = "   " if which == 2 else industry
            region = None if which == 3 else region
        elif kind == CASING and region:
            region = odd_case(region, h2 >> 40)
        elif kind == UNKNOWN:
            region = UNKNOWN_LABELS["sales_accounts"]
        elif kind == NUMSTR:
            suffix = ".0" if (h2 >> 40) & 1 else ""
            key, value = f"{key}{suffix}", f"{value}{suffix}"
        elif kind == UNCASTABLE:
            value = "lots"
        return {
            "id": ACCOUNTS.id_base + i,
            "name": name,
            "website": f"https://www.{_NOUN[(h2 >> 5) % 24].lower()}{i}.example.com",
            "phone": f"+1-555-{(h2 >> 30) % 10_000:04d}",
            "city": None,
            "country": ("United States", "Germany", "India")[(h1 >> 10) % 3],
            "number_of_employees": 5 + (h2 >> 36) % 5000,
            "annual_revenue": None,
            "owner_id": USERS[(h1 >> 17) % len(USERS)]["id"],
            "created_at": created_at,
            "updated_at": updated_at,
            "is_deleted": kind == DELETED_DIRT,
            "tags": [],
            "custom_field": {
                "cf_account_id": key,
                "cf_industry": industry,
                "cf_account_value": value,
                "cf_region": region,
                "cf_tier": None,
            },
        }

    def _contact(self, i: int, h1: int, h2: int, kind: int, created: int) -> dict[str, Any]:
        _, created_at, updated_at = self._stamps(h1, created)
        first: str | None = _FIRST[h2 % len(_FIRST)]
        last = _LAST[(h2 >> 5) % len(_LAST)]
        address = f"{first}.{last}.{i}@{_MAIL_DOMAINS[(h2 >> 10) % 4]}".lower()
        email: str | None = address
        external_id: str | None = f"C-{100_001 + (self.dup_of(i, h2) if kind == DUP else i)}"
        source: str | None = LEAD_SOURCES[(h1 >> 10) % 3]
        job_title = None if (h2 >> 13) % 10 == 0 else JOB_TITLES[(h2 >> 13) % len(JOB_TITLES)]
        last_contacted = self._last_contacted(h1, h2, created)
        if kind == MISSING:
            which = (h1 >> 20) % 4
            external_id = None if which == 0 else external_id
            first = "" if which == 1 else first
            email = None if which == 2 else email  # the `emails` list still holds it
            source = None if which == 3 else source
        elif kind == CASING and source:
            source = odd_case(source, h2 >> 40)
        elif kind == UNKNOWN:
            source = UNKNOWN_LABELS["contacts"]
        elif kind == NUMSTR:
            external_id = str(100_001 + i)  # an all-digit external id: still text
        elif kind == UNCASTABLE:
            last_contacted = "sometime last week"
        return {
            "id": CONTACTS.id_base + i,
            "first_name": first,
            "last_name": last,
            "display_name": f"{first or ''} {last}".strip(),
            "email": email,
            "emails": [{"id": 17_500_000_001 + i, "value": address, "is_primary": True, "label": "work"}],
            "job_title": job_title,
            "mobile_number": f"+44-7700-{(h2 >> 30) % 1_000_000:06d}",
            "time_zone": ("Central America", "Chennai", "UTC")[(h1 >> 25) % 3],
            "lead_score": (h2 >> 50) % 100,
            "external_id": external_id,
            "owner_id": USERS[(h1 >> 17) % len(USERS)]["id"],
            "created_at": created_at,
            "updated_at": updated_at,
            "is_deleted": kind == DELETED_DIRT,
            "tags": [],
            "custom_field": {"cf_lead_source": source, "cf_last_contacted_date": last_contacted},
        }

    def _last_contacted(self, h1: int, h2: int, created: int) -> str | None:
        pick = (h2 >> 20) % 10
        when = created + (self.end_ts - created) * ((h2 >> 24) % 100) // 100
        if pick < 6:
            return format_date(when)
        if pick < 8:
            return format_ts(when, (h1 >> 25) % len(ZONES))
        return None

    def _deal(self, i: int, h1: int, h2: int, kind: int, created: int) -> dict[str, Any]:
        _, created_at, updated_at = self._stamps(h1, created)
        label = self._deal_stage(h1, kind)
        stage: str | None = label
        deal_id: object = 1 + (self.dup_of(i, h2) if kind == DUP else i)
        name: str | None = f"{_PRODUCTS[h2 % len(_PRODUCTS)]} #{i + 1}"
        prob_label: str | None = PROBABILITY_LABELS[(h2 >> 4) % 3]
        n_accounts = self.counts["sales_accounts"]
        account_index = (h2 >> 20) % n_accounts if n_accounts else 0
        account: object = 1001 + account_index
        crm_account: int | None = ACCOUNTS.id_base + account_index if n_accounts else None
        whole = 100 + (h2 >> 8) % 49_900
        amount: str | None = f"{whole * 10}.0"
        if kind == MISSING:
            which = (h1 >> 20) % 4
            name = None if which == 0 else name
            prob_label = "" if which == 1 else prob_label
            stage = None if which == 2 else stage
            deal_id = None if which == 3 else deal_id
        elif kind == CASING:
            stage = odd_case(label, h2 >> 40)
        elif kind == UNKNOWN:
            stage = UNKNOWN_LABELS["deals"]
        elif kind == NUMSTR:
            suffix = ".0" if (h2 >> 40) & 1 else ""
            deal_id, account = f"{deal_id}{suffix}", f"{account}{suffix}"
        elif kind == UNCASTABLE:
            deal_id = "lots"
        elif kind == ORPHAN:
            account, crm_account = 1001 + n_accounts + (h2 >> 44) % 1000, None
        elif kind == AMOUNT_ODD:
            amount = f"{whole * 10}" if (h2 >> 40) & 1 else f"{whole * 10}.505"
        elif kind == AMOUNT_NULL:
            amount = None
        known = label if stage == label or kind == CASING else None
        closed = format_date(self.updated_ts(created)) if known in ("Closed-Won", "Closed-Lost") else None
        return {
            "id": DEALS.id_base + i,
            "name": name,
            "amount": amount,
            "base_currency_amount": amount,
            "expected_close": format_date(created + (30 + (h2 >> 52) % 150) * _DAY),
            "closed_date": closed,
            "probability": STAGE_PROBABILITY.get(known or "", 50),
            "deal_pipeline_id": PIPELINE_ID,
            "deal_stage_id": STAGE_IDS.get(known or ""),
            "stage_updated_time": updated_at,
            "sales_account_id": crm_account,
            "owner_id": USERS[(h1 >> 17) % len(USERS)]["id"],
            "created_at": created_at,
            "updated_at": updated_at,
            "is_deleted": kind == DELETED_DIRT,
            "tags": [],
            "custom_field": {
                "cf_deal_id": deal_id,
                "cf_probability_of_closure": prob_label,
                "cf_deal_stage": stage,
                "cf_account_id": account,
                "cf_competitor": None,
            },
        }


def record_facts(record: dict[str, Any], entity: str, view_dup: bool) -> Facts:
    """Membership facts of a (mutated) record, read from its fields."""
    created = parse_instant(record.get("created_at"))
    stage = OPEN
    if entity == "deals":
        stage = stage_class((record.get("custom_field") or {}).get("cf_deal_stage"))
    return Facts(
        bool(record.get("is_deleted")),
        stage,
        int(record.get("owner_id") or 0),
        int(created.timestamp()) if created else 0,
        view_dup and stage == WON,
    )


def is_member(kind: str, facts: Facts, recent_ts: int) -> bool:
    if kind == DELETED:
        return facts.deleted
    if facts.deleted:
        return False
    if kind == ALL:
        return True
    if kind == MINE:
        return facts.owner_id == ME
    if kind == RECENT:
        return facts.created_ts >= recent_ts
    if kind == OPEN:
        return facts.stage == OPEN or facts.view_dup
    return facts.stage == kind  # WON / LOST
