"""The raw asset refuses a mass delete with a plain, non-retried failure, and takes the run-config override."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from crm_assets.defs.sync.assets import raw_assets
from crm_assets.demo_crm import DEMO_API_KEY, DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.resources import CrmResource, WarehouseResource
from crm_assets.warehouse.schema import RAW_TABLES

RAW_DEALS = next(a for a in raw_assets() if a.key == dg.AssetKey("raw_deals"))


def deleted_raw_deals(url: str) -> int:
    table = RAW_TABLES["deals"]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(table.c.is_deleted)).scalar_one())


def test_a_mass_delete_fails_once_without_retry_then_the_override_applies_it(sqlite_url: str, tmp_path: Path) -> None:
    demo = DemoCrm(DemoConfig(accounts=20, contacts=20, deals=300, seed=4, dirty=False))
    with serve_demo_crm(demo) as crm_url, dg.instance_for_test() as instance:
        resources: dict[str, Any] = {
            "crm": CrmResource(base_url=crm_url, api_key=DEMO_API_KEY, rate_limit_per_minute=0, rate_limit_per_hour=0),
            "warehouse": WarehouseResource(url=sqlite_url),
        }
        assert dg.materialize([RAW_DEALS], resources=resources, instance=instance).success
        doomed = demo.crm_ids("deals")[:120]
        for crm_id in doomed:
            demo.delete_record("deals", crm_id)

        refused = dg.materialize([RAW_DEALS], resources=resources, instance=instance, raise_on_error=False)
        assert not refused.success
        (failure,) = [e for e in refused.all_events if e.is_step_failure]
        message = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
        assert message is not None
        assert "raw_deals: refusing to merge" in message and "would delete 120 of 300 live deals" in message
        assert "allow_mass_delete: true" in message
        assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in refused.all_events)
        assert deleted_raw_deals(sqlite_url) == 0

        override = {"ops": {"raw_deals": {"config": {"allow_mass_delete": True}}}}
        forced = dg.materialize([RAW_DEALS], resources=resources, instance=instance, run_config=override)
    (event,) = forced.asset_materializations_for_node("raw_deals")
    metadata = {k: v.value for k, v in event.metadata.items()}
    assert metadata["marked_deleted"] == 120 and metadata["rejected"] == 0 and metadata["mode"] == "incremental"
    assert {"unlisted_checked", "confirmed_deleted", "still_live", "unconfirmed", "resumed"} <= metadata.keys()
    assert deleted_raw_deals(sqlite_url) == 120
