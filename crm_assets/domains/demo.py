"""What a domain tells the demo CRM: a recipe for its synthetic records, and the vocabulary recipes share.

Each domain module declares its `Domain` and, beside it, a `DemoRecipe`: the entity's own fields, the dirt
it carries, the views beyond the domain's, and its field settings. The demo CRM (`crm_assets.demo_crm`)
derives its entities, views, ids and endpoints from the domains and these recipes, so a new CRM domain is
one module. Nothing here imports the demo CRM, so domain modules can import this one.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Protocol

Record = dict[str, Any]


class Dirt(IntEnum):
    """What is wrong with a record, at most one thing each; chosen by the record's hash (per mille)."""

    CLEAN = 0
    DUP = 1  # copies an earlier record's business key
    MISSING = 2  # a required field empty or absent
    CASING = 3  # a label in odd case or spacing
    UNKNOWN = 4  # a label outside the choices
    DELETED = 5  # soft-deleted (in the Recycle Bin)
    NUMSTR = 6  # numbers sent as strings
    UNCASTABLE = 7  # a value of the wrong type
    ORPHAN = 8  # points to a record that does not exist
    VIEW_DUP = 9  # also listed in the domain's first view
    AMOUNT_ODD = 10  # money without decimals or with three
    AMOUNT_NULL = 11  # money left empty


# Dirt every entity carries, before the recipe's own; order matters (it lays out the hash buckets).
COMMON_DIRT: tuple[tuple[Dirt, int], ...] = (
    (Dirt.DUP, 20),
    (Dirt.MISSING, 20),
    (Dirt.CASING, 30),
    (Dirt.UNKNOWN, 15),
    (Dirt.DELETED, 20),
    (Dirt.NUMSTR, 30),
)


class ViewKind(StrEnum):
    """What a view lists."""

    LISTED = "listed"  # one of the domain's own views (together they list every live record)
    MINE = "mine"  # owned by the API key's user
    RECENT = "recent"  # created in the last RECENT_DAYS
    DELETED = "deleted"  # the domain's deleted_view


RECENT_DAYS = 30

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

# Account time zones: timestamps render in one of these (numeric offset, or Z for UTC accounts).
ZONES: tuple[tuple[str, int], ...] = (("-06:00", -6 * 3600), ("+05:30", 5 * 3600 + 1800), ("Z", 0))
_EPOCH = datetime.datetime(1970, 1, 1)


def format_ts(ts: int, zone: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS±HH:MM` (or `Z`) for a Unix time, in one of the account zones."""
    suffix, offset = ZONES[zone]
    return (_EPOCH + datetime.timedelta(seconds=ts + offset)).isoformat() + suffix


def format_date(ts: int) -> str:
    return (_EPOCH + datetime.timedelta(seconds=ts)).date().isoformat()


def normalize_label(value: object) -> str | None:
    """How the cleaning step compares labels: trimmed, whitespace collapsed, case-folded."""
    if not isinstance(value, str):
        return None
    return " ".join(value.split()).casefold() or None


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


class World(Protocol):
    """The rest of the demo CRM, as a recipe may see it (another domain's records, for references)."""

    def count(self, domain: str) -> int: ...

    def crm_id(self, domain: str, index: int) -> int: ...


@dataclass(slots=True)  # not frozen: made once per generated record, and frozen dataclasses init slowly
class Draw:
    """Everything chance decides about record `i`: two 64-bit hashes, its dirt, zone and timestamps."""

    world: World
    i: int
    h1: int
    h2: int
    kind: Dirt
    crm_id: int
    created_ts: int
    updated_ts: int
    end_ts: int  # the data's end (start of `today`, UTC)
    zone: int  # index in ZONES: the zone its timestamps are written in
    created_at: str  # created_ts and updated_ts as the CRM writes them
    updated_at: str

    def stamp(self, ts: int) -> str:
        """A timestamp in this record's zone."""
        return format_ts(ts, self.zone)

    @property
    def key_index(self) -> int:
        """The index the business key is made from: an earlier record's for a duplicate."""
        if self.kind != Dirt.DUP:
            return self.i
        return self.i - 1 - (self.h2 >> 48) % min(self.i, 97)


def owner_of(h1: int) -> int:
    """The owner of a record: one of USERS, by its first hash."""
    owner: int = USERS[(h1 >> 17) % len(USERS)]["id"]
    return owner


def zone_of(h1: int) -> int:
    return (h1 >> 25) % len(ZONES)


@dataclass(frozen=True)
class SettingsField:
    """One entry of `GET /api/settings/<entity>/fields`."""

    name: str  # the Freshsales field: "name", "cf_region"
    label: str
    type: str  # text, number, dropdown, date, email
    custom: bool = False
    choices: tuple[str, ...] = ()
    required: bool = False


# The entity's own fields (in the order the CRM sends them, between "id" and "owner_id") and its custom fields.
Built = tuple[Record, Record]


@dataclass(frozen=True)
class DemoRecipe:
    """How the demo CRM makes and serves a domain's records."""

    code: int  # salts the hashes and places the ids: unique per domain, never reused
    build: Callable[[Draw], Built]
    fields: tuple[SettingsField, ...]
    touch_field: str  # the field `/_demo/touch` renames
    count: int = 1000  # records when DemoConfig names no count for the domain
    dirt: tuple[tuple[Dirt, int], ...] = ()  # per mille, after COMMON_DIRT
    extra_views: tuple[tuple[str, ViewKind], ...] = ()  # between the domain's views and its deleted_view
    # Which of the domain's views lists a record: from its hash and dirt (cheap), and from its fields.
    listed_in: Callable[[int, Dirt], int] | None = None
    listed_in_record: Callable[[Record], int] | None = None
    on_update: Callable[[Record, Record], None] | None = None  # (before, after): keep linked fields in step
    selectors: Mapping[str, Callable[[], Any]] = field(default_factory=dict)  # GET /api/selector/<name>
