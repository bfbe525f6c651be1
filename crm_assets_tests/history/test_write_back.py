"""A write-back adds its version to deal_history, in the transaction that corrects the warehouse row."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.demo_crm import DemoCrm
from crm_assets.timestamps import parse_instant
from crm_assets.warehouse.history import current_version_mismatches
from crm_assets.warehouse.schema import CLEAN_TABLES
from crm_assets_tests.history.helpers import versions
from crm_assets_tests.history.test_demo_advance import sync
from crm_assets_tests.write_back.conftest import crm_url, demo, no_retry_backoff, run_update

__all__ = ["crm_url", "demo", "no_retry_backoff"]  # fixtures shared with the write-back tests

DEALS = CLEAN_TABLES["deals"]


def test_a_write_back_adds_its_version(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    sync(warehouse_engine, demo)
    with warehouse_engine.connect() as conn:
        deal_id, crm_id = conn.execute(sa.select(DEALS.c.deal_id, DEALS.c.crm_id).order_by(DEALS.c.deal_id)).first()  # type: ignore[misc]
    before = [v for v in versions(warehouse_engine) if v["deal_id"] == deal_id]

    result = run_update(
        crm_url,
        warehouse_url,
        domain="deals",
        key="deal_id",
        value=str(deal_id),
        key_to_update="deal_size",
        update_value="24456",
    )

    assert result.success
    after = [v for v in versions(warehouse_engine) if v["deal_id"] == deal_id]
    record = demo.get_record("deals", crm_id)
    assert record is not None
    assert len(before) == 1 and len(after) == 2
    assert after[0]["valid_to"] == after[1]["valid_from"] == parse_instant(record["updated_at"])
    assert (after[1]["deal_size"], after[1]["valid_to"]) == (Decimal("24456.00"), None)
    with warehouse_engine.connect() as conn:
        assert current_version_mismatches(conn) == (0, [])
    everything = versions(warehouse_engine)
    sync(warehouse_engine, demo)  # the next sync reads the corrected record: nothing new to version
    assert versions(warehouse_engine) == everything
