"""Finding every CRM record with key == value, and planning the change of each (old -> new, or skip).

Records are found in two places, because neither alone finds them all: the CRM's filtered search on
the key's Freshsales field (records not synced yet, duplicates the warehouse rejected) and the
warehouse's clean table (records whose CRM spelling differs from the typed value, like "203.0" or
" negotiation"). Every candidate is then read from the CRM and kept only if its key, cast by the
domain's rules, equals the value: the CRM is the truth, the warehouse only a lead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.engine import Engine

from crm_assets.domains import ColumnType
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmNotFoundError
from crm_assets.timestamps import parse_instant
from crm_assets.values import value_text
from crm_assets.write_back.fields import Record, search_attribute, typed_field, typed_text
from crm_assets.write_back.model import Action, PlannedChange, UpdatePlan, ValidatedUpdate
from crm_assets.write_back.store import warehouse_candidates


def plan_record(update: ValidatedUpdate, record: Record) -> PlannedChange | None:
    """The change for one CRM record, or None when it does not match (or is deleted)."""
    if record.get("is_deleted") or typed_field(record, update.key_column) != update.key_value:
        return None
    current = typed_field(record, update.target)
    return PlannedChange(
        crm_id=int(record["id"]),
        action=Action.SKIP if current == update.new_value else Action.UPDATE,
        old_text=typed_text(record, update.target, current),
        new_text=update.new_text,
        updated_at=value_text(record.get("updated_at")),
        created_at=value_text(record.get("created_at")),
    )


def build_plan(update: ValidatedUpdate, records: Iterable[Record]) -> UpdatePlan:
    planned = (plan_record(update, record) for record in records)
    changes = sorted((c for c in planned if c is not None), key=lambda c: c.crm_id)
    return UpdatePlan(update, tuple(changes))


def _spellings(update: ValidatedUpdate) -> list[str]:
    """Forms the key may have in the CRM that an exact-match search can find; the warehouse covers the rest."""
    column, value = update.key_column, update.key_value
    raw = update.request.value
    forms = {raw, raw.strip(), value_text(value) or ""}
    if column.type in (ColumnType.BIGINT, ColumnType.INTEGER):
        forms.add(f"{value}.0")
    if column.type is ColumnType.ENUM:
        forms |= {str(value).lower(), str(value).upper()}
    return sorted(form for form in forms if form)


def crm_candidates(client: FreshsalesClient, update: ValidatedUpdate) -> set[int]:
    """CRM ids the filtered search finds for the key's usual spellings."""
    domain = update.domain
    rule = {"attribute": search_attribute(update.key_column), "operator": "is_in", "value": _spellings(update)}
    found: set[int] = set()
    for page in client.filtered_search(domain.singular, [rule], domain.entity):
        found |= {int(record["id"]) for record in page if isinstance(record.get("id"), int | str)}
    return found


def _read(client: FreshsalesClient, update: ValidatedUpdate, crm_id: int, log: logging.Logger) -> Record | None:
    domain = update.domain
    try:
        return client.get_record(domain.entity, domain.singular, crm_id)
    except CrmNotFoundError:
        log.info(f"{domain.singular} {crm_id} is in the warehouse but no longer in the CRM: left alone")
        return None


def find_matching_records(
    client: FreshsalesClient, engine: Engine, update: ValidatedUpdate, log: logging.Logger
) -> list[Record]:
    """Every live CRM record whose key equals the value, read fresh from the CRM, ordered by CRM id."""
    from_crm = crm_candidates(client, update)
    from_warehouse = warehouse_candidates(engine, update)
    candidates = sorted(from_crm | from_warehouse)
    log.info(
        f"{len(candidates)} candidate record(s) for {update.key_column.name} = {update.request.value!r}: "
        f"{len(from_crm)} from the CRM's search, {len(from_warehouse)} from the warehouse; reading each from the CRM"
    )
    with ThreadPoolExecutor(max_workers=client.max_concurrency) as pool:
        fetched = list(pool.map(lambda crm_id: _read(client, update, crm_id, log), candidates))
    records = [r for r in fetched if r is not None]
    stale = sorted(from_warehouse - {int(r["id"]) for r in records if plan_record(update, r) is not None})
    if stale:
        log.info(f"{len(stale)} warehouse row(s) no longer match in the CRM (the warehouse is behind): {stale[:20]}")
    return records


def created_date(value: Any) -> str | None:
    """The UTC date of a CRM created_at, as the aggregation partitions count it."""
    instant = parse_instant(value)
    return instant.date().isoformat() if instant else None
