"""A write-back adds its version to deal_history, in the transaction that corrects the warehouse row."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.demo_crm import DemoCrm
from crm_assets.reports.transitions import refresh_transitions
from crm_assets.timestamps import parse_instant
from crm_assets.warehouse.history import current_version_mismatches, history_start
from crm_assets.warehouse.schema import CLEAN_TABLES, crm_update_audit, deal_stage_transitions
from crm_assets_tests.history.helpers import backdated_versions, versions
from crm_assets_tests.history.test_demo_advance import sync
from crm_assets_tests.write_back.conftest import crm_url, demo, no_retry_backoff, rows, run_update

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


def test_a_value_already_set_in_the_crm_is_versioned_from_now_not_from_the_old_updated_at(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    """Someone set the field in the CRM before the write-back (or a killed update had PUT it): the update
    skips the record but brings the warehouse row in line, with no CRM timestamp for the change. The new
    version must not start at the row's old updated_at, which would empty the version it closes."""
    sync(warehouse_engine, demo)
    with warehouse_engine.connect() as conn:
        deal_id, crm_id, stage = conn.execute(  # type: ignore[misc]
            sa.select(DEALS.c.deal_id, DEALS.c.crm_id, DEALS.c.deal_stage).order_by(DEALS.c.deal_id)
        ).first()
    new_stage = "Closed-Lost" if stage == "Closed-Won" else "Closed-Won"
    started = datetime.now(UTC)
    demo.update_record("deals", crm_id, {"custom_field": {"cf_deal_stage": new_stage}})

    result = run_update(
        crm_url,
        warehouse_url,
        domain="deals",
        key="deal_id",
        value=str(deal_id),
        key_to_update="deal_stage",
        update_value=new_stage,
    )

    assert result.success
    assert [a["status"] for a in rows(warehouse_engine, crm_update_audit)] == ["skipped"]
    sync(warehouse_engine, demo)  # the sync that follows reads the record with its new updated_at
    everything = versions(warehouse_engine)
    assert backdated_versions(everything) == []
    old, new = [v for v in everything if v["deal_id"] == deal_id]
    assert (old["deal_stage"], new["deal_stage"], new["valid_to"]) == (stage, new_stage, None)
    assert old["valid_to"] == new["valid_from"] >= started
    with warehouse_engine.connect() as conn:
        assert current_version_mismatches(conn) == (0, [])
        began = history_start(conn)
    refresh_transitions(warehouse_engine)
    t = deal_stage_transitions.c
    with warehouse_engine.connect() as conn:
        changed = conn.execute(sa.select(t.changed_at).where(t.deal_id == deal_id)).scalars().all()
    assert began is not None and len(changed) == 1
    assert changed[0].replace(tzinfo=UTC) >= began  # no stage change before the history began
