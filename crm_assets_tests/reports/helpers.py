"""Building warehouse test data directly (after migrate), without the sync assets."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.reports.aggregate import AggregationRow, read_aggregations
from crm_assets.reports.windows import Cadence
from crm_assets.resources import ExportDirectory, WarehouseResource
from crm_assets.warehouse.schema import CLEAN_TABLES

ACCOUNTS = CLEAN_TABLES["accounts"]
DEALS = CLEAN_TABLES["deals"]
NOW = datetime(2026, 11, 24, tzinfo=UTC)
REGIONS = ("North America", "Europe", "Asia")


def add_accounts(engine: Engine, account_ids: Iterable[int]) -> None:
    rows = [
        {
            "account_id": a,
            "account_name": f"Account {a}",
            "industry": "Software",
            "account_value": 1000 * a,
            "region": REGIONS[a % 3],
            "crm_id": 10_000 + a,
            "updated_at": NOW,
        }
        for a in account_ids
    ]
    with engine.begin() as conn:
        conn.execute(ACCOUNTS.insert(), rows)


def deal_row(deal_id: int, account_id: int, created_at: datetime | str, size: str | None) -> dict[str, object]:
    """A deal; created_at is converted to UTC before writing, as the clean load does."""
    moment = datetime.fromisoformat(created_at) if isinstance(created_at, str) else created_at
    return {
        "deal_id": deal_id,
        "deal_name": f"Deal {deal_id}",
        "deal_size": None if size is None else Decimal(size),
        "probability_of_closure": "50%",
        "deal_stage": "Prospecting",
        "account_id": account_id,
        "created_at": moment.astimezone(UTC),
        "crm_id": 50_000 + deal_id,
        "updated_at": NOW,
    }


def add_deals(engine: Engine, rows: list[dict[str, object]]) -> None:
    with engine.begin() as conn:
        conn.execute(DEALS.insert(), rows)


def update_deal(engine: Engine, deal_id: int, **values: object) -> None:
    if isinstance(values.get("created_at"), str):
        values["created_at"] = datetime.fromisoformat(str(values["created_at"])).astimezone(UTC)
    with engine.begin() as conn:
        conn.execute(sa.update(DEALS).where(DEALS.c.deal_id == deal_id).values(**values))


def delete_deal(engine: Engine, deal_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(DEALS).where(DEALS.c.deal_id == deal_id))


def rows(engine: Engine, cadence: Cadence) -> list[tuple[str, int, str, int]]:
    """(window, account, total, count) of every stored row of a cadence, comparable across dialects."""
    with engine.connect() as conn:
        stored: list[AggregationRow] = read_aggregations(conn, cadence)
    return [(r.aggregation_date.isoformat(), r.account_id, str(r.total_deal_size), r.deal_count) for r in stored]


def materialize_on(
    url: str, instance: dg.DagsterInstance, assets: Sequence[Any], **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """Materialize `assets` on the warehouse at `url`, exporting to $CRM_EXPORT_DIR."""
    resources = {"warehouse": WarehouseResource(url=url), "exports": ExportDirectory(path=os.environ["CRM_EXPORT_DIR"])}
    return dg.materialize(assets, resources=resources, instance=instance, **kwargs)
