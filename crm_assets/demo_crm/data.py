"""Deterministic synthetic Freshsales records, generated lazily from (seed, entity, index).

The entities are the CRM domains (`crm_assets.domains`) that carry a `DemoRecipe`: their ids, views and
dirt come from the domain and its recipe, their fields from the recipe's `build`. Nothing is
materialized up front: record `i` of an entity is a pure function of the seed, the entity and `i`, built
from two splitmix64 hashes. `created_at` and `updated_at` grow with the index, so a view sorted by either
timestamp is just index order; only mutated records (kept by the store) need sorting. `facts()`
computes what view membership needs without building the record.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from crm_assets.demo_crm.config import DemoConfig
from crm_assets.domains import DEFAULT_DOMAINS, Domain
from crm_assets.domains.demo import (
    COMMON_DIRT,
    ME,
    RECENT_DAYS,
    Built,
    DemoRecipe,
    Dirt,
    Draw,
    ViewKind,
    format_ts,
    owner_of,
    zone_of,
)
from crm_assets.timestamps import parse_instant

_MASK64 = (1 << 64) - 1
_DAY = 86_400
_ID_ORIGIN = 17_000_000_000  # every demo id is above 2^32, like Freshsales'
_ID_BLOCK = 100_000_000  # record ids per entity

# The domains the demo CRM serves unless told otherwise: every shipped domain with a recipe.
DEMO_DOMAINS: tuple[Domain, ...] = tuple(d for d in DEFAULT_DOMAINS if d.demo is not None)


def mix64(x: int) -> int:
    """splitmix64's finalizer: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@dataclass(frozen=True)
class View:
    id: int
    name: str
    kind: ViewKind
    part: int = 0  # for LISTED views: the index in the domain's views


@dataclass(frozen=True)
class EntitySpec:
    """A domain as the demo CRM serves it; every id follows from the recipe's code."""

    domain: Domain
    recipe: DemoRecipe
    views: tuple[View, ...]
    buckets: tuple[Dirt, ...]  # dirt by hash bucket (per mille)
    id_base: int  # CRM id of record 0
    build: Callable[[Draw], Built]  # the recipe's, at hand for the per-record path

    @property
    def entity(self) -> str:  # plural, as in URLs and list responses
        return self.domain.entity

    @property
    def singular(self) -> str:
        return self.domain.singular

    @property
    def code(self) -> int:
        return self.recipe.code

    @property
    def settings_base(self) -> int:  # id of the first field setting
        return _ID_ORIGIN + 1000 * self.code

    @property
    def model_class(self) -> str:  # "SalesAccount"
        return "".join(part.capitalize() for part in self.singular.split("_"))


def _views(domain: Domain, recipe: DemoRecipe) -> tuple[View, ...]:
    """The domain's views (which together list every live record), the recipe's others, then the deleted view."""
    base = _ID_ORIGIN + 1 + 100 * recipe.code
    named = [(name, ViewKind.LISTED, part) for part, name in enumerate(domain.views)]
    named += [(name, kind, 0) for name, kind in recipe.extra_views]
    named.append((domain.deleted_view, ViewKind.DELETED, 0))
    return tuple(View(base + n, name, kind, part) for n, (name, kind, part) in enumerate(named))


def _buckets(recipe: DemoRecipe) -> tuple[Dirt, ...]:
    table: list[Dirt] = []
    for kind, per_mille in (*COMMON_DIRT, *recipe.dirt):
        table.extend([kind] * per_mille)
    if len(table) > 1000:
        raise ValueError(f"demo recipe {recipe.code}: dirt adds up to more than 1000 per mille")
    return tuple(table + [Dirt.CLEAN] * (1000 - len(table)))


def entity_spec(domain: Domain) -> EntitySpec:
    if domain.demo is None:
        raise ValueError(f"domain {domain.name!r} has no demo recipe (Domain.demo), so the demo CRM cannot serve it")
    recipe = domain.demo
    if len(domain.views) > 1 and (recipe.listed_in is None or recipe.listed_in_record is None):
        raise ValueError(f"domain {domain.name!r} has several views: its demo recipe must say which lists a record")
    id_base = _ID_ORIGIN + 1 + (recipe.code - 1) * _ID_BLOCK
    return EntitySpec(domain, recipe, _views(domain, recipe), _buckets(recipe), id_base, recipe.build)


def entity_specs(domains: Sequence[Domain]) -> dict[str, EntitySpec]:
    """Specs by entity; ids and views must not collide, so recipe codes must differ."""
    specs = {d.entity: entity_spec(d) for d in domains}
    codes = [s.code for s in specs.values()]
    if len(set(codes)) != len(codes) or len(specs) != len(domains):
        raise ValueError(f"demo domains need distinct entities and recipe codes: {[(d.name, d.demo) for d in domains]}")
    return specs


class Facts(NamedTuple):
    """What view membership needs to know about a record."""

    deleted: bool
    part: int  # which of the domain's views lists it
    owner_id: int
    created_ts: int
    view_dup: bool  # also listed in the domain's first view


class SyntheticData:
    """The base (never mutated) records of one demo CRM."""

    def __init__(self, config: DemoConfig, today: datetime.date, domains: Sequence[Domain] = DEMO_DOMAINS) -> None:
        self.config = config
        self.dirty = config.dirty
        self.end_ts = int(datetime.datetime(today.year, today.month, today.day, tzinfo=datetime.UTC).timestamp())
        self.start_ts = self.end_ts - int(config.years * 365.25 * _DAY)
        self.recent_ts = self.end_ts - RECENT_DAYS * _DAY
        self.specs = entity_specs(domains)
        self._by_name = {spec.domain.name: spec for spec in self.specs.values()}
        self.counts = {e: config.count(s.domain.name, s.recipe.count) for e, s in self.specs.items()}
        self._count_by_name = {s.domain.name: self.counts[e] for e, s in self.specs.items()}
        self._salts = {e: mix64((config.seed << 8) ^ s.code) for e, s in self.specs.items()}

    # -- the world as recipes see it --

    def count(self, domain: str) -> int:
        """How many records a domain has (0 for one this demo CRM does not serve)."""
        return self._count_by_name.get(domain, 0)

    def crm_id(self, domain: str, index: int) -> int:
        return self._by_name[domain].id_base + index

    # -- the cheap part: hashes, dirt, timestamps, membership facts --

    def _hashes(self, entity: str, i: int) -> tuple[int, int]:
        h1 = mix64(self._salts[entity] ^ (i * 0x9E3779B97F4A7C15 & _MASK64))
        return h1, mix64(h1 ^ 0x5DEECE66D)

    def dirt(self, entity: str, i: int, h1: int) -> Dirt:
        if not self.dirty:
            return _CLEAN
        kind = self.specs[entity].buckets[h1 % 1000]
        return _CLEAN if kind is _DUP and i == 0 else kind

    def created_ts(self, entity: str, i: int) -> int:
        """Strictly increasing in the index (ties only when there are more records than seconds)."""
        return self.start_ts + (i * (self.end_ts - self.start_ts)) // max(self.counts[entity], 1)

    def updated_ts(self, created: int) -> int:
        # Non-decreasing in created, >= created and < end_ts: sorting by it is index order.
        return created + (self.end_ts - created) // 8

    def facts(self, entity: str, i: int) -> Facts:
        h1, _ = self._hashes(entity, i)
        kind = self.dirt(entity, i, h1)
        listed_in = self.specs[entity].recipe.listed_in
        part = listed_in(h1, kind) if listed_in is not None else 0
        return Facts(kind is _DELETED, part, owner_of(h1), self.created_ts(entity, i), kind is _VIEW_DUP)

    # -- full records --

    def record(self, entity: str, i: int) -> dict[str, Any]:
        spec = self.specs[entity]
        h1, h2 = self._hashes(entity, i)
        kind = self.dirt(entity, i, h1)
        created = self.created_ts(entity, i)
        updated, zone = self.updated_ts(created), zone_of(h1)
        created_at, updated_at = format_ts(created, zone), format_ts(updated, zone)
        crm_id = spec.id_base + i
        draw = Draw(self, i, h1, h2, kind, crm_id, created, updated, self.end_ts, zone, created_at, updated_at)
        fields, custom = spec.build(draw)
        return {
            "id": crm_id,
            **fields,
            "owner_id": owner_of(h1),
            "created_at": created_at,
            "updated_at": updated_at,
            "is_deleted": kind is _DELETED,
            "tags": [],
            "custom_field": custom,
        }


def record_facts(record: dict[str, Any], spec: EntitySpec, base: Facts) -> Facts:
    """Membership facts of a (mutated) record, read from its fields; `base` are its facts as generated."""
    created = parse_instant(record.get("created_at"))
    listed_in = spec.recipe.listed_in_record
    part = listed_in(record) if listed_in is not None else 0
    return Facts(
        bool(record.get("is_deleted")),
        part,
        int(record.get("owner_id") or 0),
        int(created.timestamp()) if created else 0,
        base.view_dup and part == base.part,  # listed twice only while it stays where it was
    )


# Module-level aliases: enum attribute lookups are slow, and these run for every record of every view.
_LISTED, _MINE, _DELETED_VIEW = ViewKind.LISTED, ViewKind.MINE, ViewKind.DELETED
_CLEAN, _DUP, _DELETED, _VIEW_DUP = Dirt.CLEAN, Dirt.DUP, Dirt.DELETED, Dirt.VIEW_DUP


def is_member(view: View, facts: Facts, recent_ts: int) -> bool:
    kind = view.kind
    if kind is _DELETED_VIEW:
        return facts.deleted
    if facts.deleted:
        return False
    if kind is _LISTED:
        return facts.part == view.part or (view.part == 0 and facts.view_dup)
    if kind is _MINE:
        return facts.owner_id == ME
    return facts.created_ts >= recent_ts  # RECENT
