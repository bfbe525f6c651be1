"""The demo CRM's records: lazily generated base data plus the mutations made since start.

Only mutated records are held in memory (`overrides`, copy-on-write dicts, so a reader holding an
old one is never disturbed). A mutated record's `updated_at` is the wall clock (never before the
data's end), which is later than every base record, so a view sorted by `updated_at` is the base
members in index order followed by the mutated members by (updated_at, id).
"""

from __future__ import annotations

import datetime
import random
import re
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crm_assets.demo_crm.config import DemoConfig
from crm_assets.demo_crm.data import DEMO_DOMAINS, EntitySpec, SyntheticData, View, is_member, record_facts
from crm_assets.domains import Domain
from crm_assets.domains.demo import ZONES, ViewKind, format_ts
from crm_assets.timestamps import parse_instant
from crm_assets.values import value_text

READ_ONLY_FIELDS = frozenset({"id", "created_at", "updated_at", "is_deleted"})
SORT_FIELDS = ("updated_at", "created_at")
_REV_SUFFIX = re.compile(r" \(rev \d+\)$")
_LOOKUP_CACHE_FIELDS = 8  # per entity; each index holds one entry per base record


class UnknownEntity(LookupError):
    pass


class UnknownRecord(LookupError):
    pass


class BadRequest(ValueError):
    pass


@dataclass
class _EntityState:
    spec: EntitySpec
    count: int
    views: tuple[View, ...]
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    mutated_ts: dict[int, int] = field(default_factory=dict)
    forgotten: set[int] = field(default_factory=set)
    version: int = 0
    base_members: dict[int, array[int]] | None = None
    listings: dict[tuple[int, str], tuple[int, array[int]]] = field(default_factory=dict)
    lookup_index: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def field_value(record: dict[str, Any], name: str) -> Any:
    """A standard field, or a custom field by its cf_ name."""
    if name.startswith("cf_"):
        return (record.get("custom_field") or {}).get(name)
    return record.get(name)


def zone_of(record: dict[str, Any]) -> int:
    stamp = str(record.get("created_at") or "")
    for n, (suffix, _) in enumerate(ZONES):
        if stamp.endswith(suffix):
            return n
    return len(ZONES) - 1


class DemoStore:
    """Thread-safe record store; every public method takes the lock for as short as it can."""

    def __init__(self, config: DemoConfig, today: datetime.date, domains: Sequence[Domain] = DEMO_DOMAINS) -> None:
        self.data = SyntheticData(config, today, domains)
        self._lock = threading.RLock()
        self._build_lock = threading.Lock()
        self._clock = 0
        self._touches = 0
        self._states = {
            entity: _EntityState(spec, self.data.counts[entity], spec.views) for entity, spec in self.data.specs.items()
        }

    # -- lookups of entities, views and records --

    def spec_by_singular(self, singular: str) -> EntitySpec | None:
        return next((st.spec for st in self._states.values() if st.spec.singular == singular), None)

    def states(self) -> list[_EntityState]:
        return list(self._states.values())

    @property
    def singulars(self) -> list[str]:
        return [st.spec.singular for st in self._states.values()]

    def state(self, entity: str) -> _EntityState:
        try:
            return self._states[entity]
        except KeyError:
            raise UnknownEntity(f"unknown entity {entity!r}; known: {', '.join(self._states)}") from None

    def view(self, entity: str, view_id: int) -> View:
        for view in self.state(entity).views:
            if view.id == view_id:
                return view
        raise UnknownRecord(f"no view {view_id} for {entity}")

    def _index(self, st: _EntityState, crm_id: int) -> int:
        i = crm_id - st.spec.id_base
        if not 0 <= i < st.count or i in st.forgotten:
            raise UnknownRecord(f"no {st.spec.singular} with id {crm_id}")
        return i

    def _current(self, st: _EntityState, i: int) -> dict[str, Any]:
        return st.overrides.get(i) or self.data.record(st.spec.entity, i)

    def get(self, entity: str, crm_id: int) -> dict[str, Any]:
        """The record (soft-deleted ones too); the caller must not modify it."""
        st = self.state(entity)
        with self._lock:
            i = self._index(st, crm_id)
            record = st.overrides.get(i)
        return record if record is not None else self.data.record(entity, i)

    def crm_ids(self, entity: str) -> list[int]:
        st = self.state(entity)
        with self._lock:
            forgotten = set(st.forgotten)
        return [st.spec.id_base + i for i in range(st.count) if i not in forgotten]

    # -- mutations --

    def _tick(self) -> int:
        # Wall clock, but never before the synthetic data ends: mutated records sort after base ones.
        self._clock = max(int(time.time()), self.data.end_ts, self._clock)
        return self._clock

    def _commit(self, st: _EntityState, i: int, record: dict[str, Any]) -> dict[str, Any]:
        ts = self._tick()
        record["updated_at"] = format_ts(ts, zone_of(record))
        st.overrides.pop(i, None)
        st.overrides[i] = record
        st.mutated_ts[i] = ts
        st.version += 1
        return record

    def update(self, entity: str, crm_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        """Apply a PUT body (unwrapped): set standard fields, merge custom_field, bump updated_at."""
        custom = fields.get("custom_field", {})
        if custom is not None and not isinstance(custom, dict):
            raise BadRequest("custom_field must be an object")
        st = self.state(entity)
        with self._lock:
            i = self._index(st, crm_id)
            current = self._current(st, i)
            record = {**current, **{k: v for k, v in fields.items() if k not in READ_ONLY_FIELDS}}
            record["custom_field"] = {**(current.get("custom_field") or {}), **(custom or {})}
            self._commit(st, i, record)
            if st.spec.recipe.on_update is not None:
                st.spec.recipe.on_update(current, record)
            return record

    def delete(self, entity: str, crm_id: int) -> None:
        st = self.state(entity)
        with self._lock:
            i = self._index(st, crm_id)
            self._commit(st, i, {**self._current(st, i), "is_deleted": True})

    def forget(self, entity: str, crm_id: int) -> None:
        st = self.state(entity)
        with self._lock:
            i = self._index(st, crm_id)
            st.overrides.pop(i, None)
            st.mutated_ts.pop(i, None)
            st.forgotten.add(i)
            st.version += 1

    def touch_fraction(self, entity: str, fraction: float, seed: int = 0) -> list[int]:
        """Change the recipe's touch field (a name, a job title) of that share of the live records."""
        if not 0 <= fraction <= 1:
            raise BadRequest("fraction must be between 0 and 1")
        st = self.state(entity)
        name = st.spec.recipe.touch_field
        with self._lock:
            live = self._live_indexes(st)
            chosen = sorted(random.Random(seed).sample(live, round(fraction * len(live))))
            self._touches += 1
            for i in chosen:
                current = self._current(st, i)
                old = _REV_SUFFIX.sub("", str(current.get(name) or "Renamed"))
                record = {**current, name: f"{old} (rev {self._touches})"}
                self._commit(st, i, record)
        return [st.spec.id_base + i for i in chosen]

    def _live_indexes(self, st: _EntityState) -> list[int]:
        members = self._base_members(st)
        deleted_view = next(v for v in st.views if v.kind is ViewKind.DELETED)
        skip = set(members[deleted_view.id]) | st.forgotten | set(st.overrides)
        live = [i for i in range(st.count) if i not in skip]
        live.extend(i for i, rec in st.overrides.items() if not rec.get("is_deleted"))
        return sorted(live)

    # -- views --

    def _base_members(self, st: _EntityState) -> dict[int, array[int]]:
        """Base-record indexes per view, in index order; computed once (base data never changes)."""
        if st.base_members is None:
            entity, recent = st.spec.entity, self.data.recent_ts
            members = {v.id: array("q") for v in st.views}
            buckets = [(v, members[v.id]) for v in st.views]
            for i in range(st.count):
                facts = self.data.facts(entity, i)
                for view, bucket in buckets:
                    if is_member(view, facts, recent):
                        bucket.append(i)
            st.base_members = members
        return st.base_members

    def warm_up(self) -> None:
        """Compute view membership now rather than on the first page request."""
        with self._lock:
            for st in self._states.values():
                self._base_members(st)

    def _listing(self, st: _EntityState, view: View, sort: str) -> array[int]:
        cached = st.listings.get((view.id, sort))
        if cached is not None and cached[0] == st.version:
            return cached[1]
        base = self._base_members(st)[view.id]
        if st.overrides or st.forgotten:
            skip = st.forgotten.union(st.overrides)
            base = array("q", [i for i in base if i not in skip])
        entity, recent = st.spec.entity, self.data.recent_ts
        mutated = [
            i
            for i, rec in st.overrides.items()
            if is_member(view, record_facts(rec, st.spec, self.data.facts(entity, i)), recent)
        ]
        if sort == "updated_at":
            mutated.sort(key=lambda i: (st.mutated_ts[i], i))
            listing = base + array("q", mutated)
        else:  # created_at never changes and grows with the index
            listing = array("q", sorted([*base, *mutated])) if mutated else base
        st.listings[(view.id, sort)] = (st.version, listing)
        return listing

    def page(
        self, entity: str, view_id: int, page: int, size: int, sort: str, descending: bool
    ) -> tuple[list[dict[str, Any]], int]:
        """Records `size * (page - 1)` onwards of a view in the given order, and the view's total."""
        if sort not in SORT_FIELDS:
            raise BadRequest(f"sort must be one of {', '.join(SORT_FIELDS)}")
        st = self.state(entity)
        view = self.view(entity, view_id)
        with self._lock:
            listing = self._listing(st, view, sort)
            total, start = len(listing), (page - 1) * size
            if descending:
                high = total - start
                chosen = listing[max(high - size, 0) : high][::-1] if high > 0 else array("q")
            else:
                chosen = listing[start : start + size]
            pairs = [(i, st.overrides.get(i)) for i in chosen]
        return [rec if rec is not None else self.data.record(entity, i) for i, rec in pairs], total

    # -- search --

    def _snapshot(self, st: _EntityState) -> tuple[set[int], dict[int, dict[str, Any]]]:
        with self._lock:
            return set(st.forgotten), dict(st.overrides)

    def all_records(self, entity: str) -> Iterable[dict[str, Any]]:
        """Every record, live and soft-deleted, in index order (generated as it goes)."""
        st = self.state(entity)
        forgotten, overrides = self._snapshot(st)
        for i in range(st.count):
            if i not in forgotten:
                yield overrides.get(i) or self.data.record(entity, i)

    def lookup(self, entity: str, name: str, text: str) -> list[dict[str, Any]]:
        """Live records whose field's string form equals `text` exactly."""
        st = self.state(entity)
        index = self._lookup_index(st, name)
        forgotten, overrides = self._snapshot(st)
        hits = [self.data.record(entity, i) for i in index.get(text, ()) if i not in overrides and i not in forgotten]
        hits.extend(rec for rec in overrides.values() if value_text(field_value(rec, name)) == text)
        return sorted((r for r in hits if not r.get("is_deleted")), key=lambda r: int(r["id"]))

    def _lookup_index(self, st: _EntityState, name: str) -> dict[str, list[int]]:
        """Base records by the string form of one field, built once per field (base data is immutable)."""
        with self._build_lock:
            index = st.lookup_index.get(name)
            if index is None:
                index = {}
                for i in range(st.count):
                    text = value_text(field_value(self.data.record(st.spec.entity, i), name))
                    if text is not None:
                        index.setdefault(text, []).append(i)
                if len(st.lookup_index) >= _LOOKUP_CACHE_FIELDS:
                    st.lookup_index.clear()
                st.lookup_index[name] = index
            return index

    def search(self, entity: str, rules: Sequence[dict[str, Any]], sort: str, descending: bool) -> list[dict[str, Any]]:
        """filtered_search: records matching every rule; soft-deleted ones only when a rule asks."""
        if sort not in SORT_FIELDS:
            raise BadRequest(f"sort must be one of {', '.join(SORT_FIELDS)}")
        checks = [_compile_rule(rule) for rule in rules]
        wants_deleted = any(_attribute(rule) in ("deleted", "is_deleted") for rule in rules)
        found = [
            rec
            for rec in self.all_records(entity)
            if (wants_deleted or not rec.get("is_deleted")) and all(check(rec) for check in checks)
        ]
        found.sort(key=lambda r: (_instant_key(r.get(sort)), int(r["id"])), reverse=descending)
        return found

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                entity: {"records": st.count, "mutated": len(st.overrides), "forgotten": len(st.forgotten)}
                for entity, st in self._states.items()
            }


def _instant_key(value: Any) -> float:
    instant = parse_instant(value)
    return instant.timestamp() if instant else float("-inf")


def _attribute(rule: dict[str, Any]) -> str:
    return str(rule.get("attribute") or "")


def _compile_rule(rule: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    if not isinstance(rule, dict) or not rule.get("attribute") or not rule.get("operator"):
        raise BadRequest("each filter_rule needs attribute, operator and value")
    name, operator, value = _attribute(rule), str(rule["operator"]), rule.get("value")
    if name in ("deleted", "is_deleted"):
        name, value = "is_deleted", _truthy(value)
    if operator == "is":
        wanted = value_text(value)
        return lambda rec: value_text(field_value(rec, name)) == wanted
    if operator == "is_in":
        options = {value_text(v) for v in (value if isinstance(value, list) else [value])}
        return lambda rec: value_text(field_value(rec, name)) in options
    if operator == "contains":
        needle = str(value or "").casefold()
        return lambda rec: needle in str(field_value(rec, name) or "").casefold()
    if operator in ("is_after", "is_before"):
        return _time_rule(name, operator, value)
    raise BadRequest(f"unknown operator {operator!r}; use is, is_in, contains, is_after or is_before")


def _time_rule(name: str, operator: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    bound = parse_instant(value)
    if bound is None:
        raise BadRequest(f"{operator} needs an ISO-8601 date or timestamp, got {value!r}")
    after = operator == "is_after"

    def check(record: dict[str, Any]) -> bool:
        instant = parse_instant(field_value(record, name))
        if instant is None:
            return False
        return instant > bound if after else instant < bound

    return check


def _truthy(value: Any) -> bool:
    return value_text(value) in ("1", "true", "True")
