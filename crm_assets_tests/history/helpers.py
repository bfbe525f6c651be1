"""Raw CRM records with chosen timestamps, and a sync that writes them and runs the clean steps."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains import ACCOUNTS, DEALS, Domain
from crm_assets.warehouse.clean_load import TableChanges, clean_changes
from crm_assets.warehouse.raw import RawWriter
from crm_assets.warehouse.schema import deal_history


def stamp(day: int, hour: int = 12, month: int = 3) -> str:
    return f"2024-{month:02d}-{day:02d}T{hour:02d}:00:00Z"


def instant(day: int, hour: int = 12, month: int = 3) -> datetime:
    return datetime(2024, month, day, hour, tzinfo=UTC)


def account(crm_id: int, key: int, region: str, updated: str = stamp(1, 0)) -> dict[str, Any]:
    fields = {"cf_account_id": key, "cf_industry": "Tech", "cf_account_value": "100", "cf_region": region}
    return {"id": crm_id, "name": f"A{key}", "updated_at": updated, "custom_field": fields}


def deal(
    crm_id: int, key: int, account_key: int, updated: str, *, stage: str = "Prospecting", amount: Any = "100"
) -> dict[str, Any]:
    fields = {
        "cf_deal_id": key,
        "cf_probability_of_closure": "50%",
        "cf_deal_stage": stage,
        "cf_account_id": account_key,
    }
    return {
        "id": crm_id,
        "name": f"D{key}",
        "amount": amount,
        "created_at": "2024-02-01T09:00:00Z",
        "updated_at": updated,
        "custom_field": fields,
    }


def sync(
    engine: Engine,
    accounts: list[dict[str, Any]] = (),  # type: ignore[assignment]
    deals: list[dict[str, Any]] = (),  # type: ignore[assignment]
    *,
    deleted_accounts: list[dict[str, Any]] = (),  # type: ignore[assignment]
    deleted_deals: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> TableChanges:
    """Write CRM records to the raw tables and clean accounts then deals; returns the deals' changes."""
    for domain, records, gone in ((ACCOUNTS, accounts, deleted_accounts), (DEALS, deals, deleted_deals)):
        with engine.begin() as conn:
            writer = RawWriter(conn, domain, "run")
            writer.add(list(records))
            writer.add([r | {"is_deleted": True} for r in gone], deleted=True)
            writer.merge(reconcile=False)
    changes = TableChanges()
    for domain in (ACCOUNTS, DEALS):
        changes = clean(engine, domain)
    return changes


def clean(engine: Engine, domain: Domain) -> TableChanges:
    with engine.begin() as conn:
        return clean_changes(conn, domain, "run", batch_size=3, chunk_size=2)


def versions(engine: Engine) -> list[dict[str, Any]]:
    """Every deal_history row, by deal and valid_from, timestamps in UTC."""
    h = deal_history.c
    query = sa.select(deal_history).order_by(h.deal_id, h.valid_from, h.id)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for row in rows:
        for name in ("valid_from", "valid_to", "first_observed_at", "created_at"):
            if row[name] is not None and row[name].tzinfo is None:
                row[name] = row[name].replace(tzinfo=UTC)
    return rows


def backdated_versions(rows: list[dict[str, Any]]) -> list[tuple[int, datetime, datetime]]:
    """(deal_id, valid_from, next valid_from) wherever a version does not start after the one it closes.

    `rows` as `versions` returns them; an empty list means every closed version was open for a while.
    """
    found = []
    for previous, current in pairwise(rows):
        if previous["deal_id"] == current["deal_id"] and current["valid_from"] <= previous["valid_from"]:
            found.append((current["deal_id"], previous["valid_from"], current["valid_from"]))
    return found
