"""Fixtures for the write-back tests: a small demo CRM on loopback HTTP and a seeded warehouse."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import crm_assets.freshsales.client as client_module
from crm_assets.defs.write_back.job import update_domain_value
from crm_assets.demo_crm import DEMO_API_KEY, DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.domains import get_domain
from crm_assets.freshsales.client import parse_instant
from crm_assets.resources import CrmResource, WarehouseResource
from crm_assets.transform.coerce import cast_value
from crm_assets.values import value_text
from crm_assets.warehouse.schema import CLEAN_TABLES
from crm_assets.write_back.fields import read_field


@pytest.fixture(autouse=True)
def no_retry_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Injected 500s are retried by the client; without waiting between tries, so tests stay fast."""
    monkeypatch.setattr(client_module, "backoff_delay", lambda *args, **kwargs: 0.0)


@pytest.fixture
def demo() -> DemoCrm:
    return DemoCrm(DemoConfig(accounts=30, contacts=10, deals=30, seed=5, dirty=False))


@pytest.fixture
def crm_url(demo: DemoCrm) -> Iterator[str]:
    with serve_demo_crm(demo) as url:
        yield url


def resources(crm_url: str, warehouse_url: str) -> dict[str, Any]:
    return {
        "crm": CrmResource(base_url=crm_url, api_key=DEMO_API_KEY, rate_limit_per_minute=0, rate_limit_per_hour=0),
        "warehouse": WarehouseResource(url=warehouse_url),
    }


def clean_row(domain_name: str, record: dict[str, Any]) -> dict[str, Any]:
    """The warehouse row the cleaning pipeline would load for a (clean) CRM record."""
    domain = get_domain(domain_name)
    row = {c.name: cast_value(c, value_text(read_field(record, c))) for c in domain.columns}
    return row | {"crm_id": record["id"], "updated_at": parse_instant(record["updated_at"])}


def seed_warehouse(engine: Engine, demo: DemoCrm, deal_ids: Iterable[int] = (), all_accounts: bool = True) -> None:
    """Every demo account, and the given deals (by CRM id), as clean rows."""
    accounts = [
        clean_row("accounts", demo.get_record("sales_accounts", i) or {}) for i in demo.crm_ids("sales_accounts")
    ]
    deals = [clean_row("deals", demo.get_record("deals", i) or {}) for i in deal_ids]
    with engine.begin() as conn:
        if all_accounts and accounts:
            conn.execute(sa.insert(CLEAN_TABLES["accounts"]), accounts)
        if deals:
            conn.execute(sa.insert(CLEAN_TABLES["deals"]), deals)


def run_update(crm_url: str, warehouse_url: str, **config: Any) -> dg.ExecuteInProcessResult:
    """The job in process on a throwaway instance; failures are returned, not raised."""
    return update_domain_value.execute_in_process(
        run_config=config, resources=resources(crm_url, warehouse_url), raise_on_error=False
    )


def rows(engine: Engine, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).where(*where).order_by(table.c.id)).mappings()]
