"""Fixtures: small demo CRMs with a fixed `today`, and clients on the in-process transport."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crm_assets.demo_crm import DEMO_API_KEY, DEMO_BASE_URL, DemoConfig, DemoCrm
from crm_assets.timestamps import parse_instant

TODAY = datetime.date(2025, 6, 1)
AUTH = {"Authorization": f"Token token={DEMO_API_KEY}"}
VIEW_IDS = {
    "sales_accounts": {"All Accounts": 17_000_000_101, "Recycle Bin": 17_000_000_103},
    "contacts": {"All Contacts": 17_000_000_201, "Recycle Bin": 17_000_000_204},
    "deals": {"Open Deals": 17_000_000_301, "Won Deals": 17_000_000_302, "Lost Deals": 17_000_000_303},
}


def small_config(**overrides: Any) -> DemoConfig:
    return dataclasses.replace(DemoConfig(accounts=40, contacts=120, deals=200, today=TODAY), **overrides)


def client_for(demo: DemoCrm, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(base_url=DEMO_BASE_URL, transport=demo.transport(), headers=AUTH, timeout=timeout)


def must_get(demo: DemoCrm, entity: str, crm_id: int) -> dict[str, Any]:
    record = demo.get_record(entity, crm_id)
    assert record is not None, (entity, crm_id)
    return record


def instant(value: object) -> datetime.datetime:
    parsed = parse_instant(value)
    assert parsed is not None, value
    return parsed


@pytest.fixture
def demo() -> DemoCrm:
    return DemoCrm(small_config())


@pytest.fixture
def client(demo: DemoCrm) -> Iterator[httpx.Client]:
    with client_for(demo) as c:
        yield c


def read_view(client: httpx.Client, entity: str, view_id: int, **params: Any) -> list[dict[str, Any]]:
    """Every record of a view, paging until an empty page."""
    records: list[dict[str, Any]] = []
    page = 1
    while True:
        query = {"per_page": 100, "sort": "updated_at", "sort_type": "asc", **params, "page": page}
        response = client.get(f"/api/{entity}/view/{view_id}", params=query)
        response.raise_for_status()
        batch = response.json()[entity]
        if not batch:
            return records
        records.extend(batch)
        page += 1
