"""The clean step refuses a mass removal (a renamed dropdown value rejecting many accounts, their deals
deleted with them), writes nothing, says why and how to allow it; the override applies it and the counts
report the deals the cascade removed. On SQLite and PostgreSQL, against the demo CRM over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from crm_assets.contracts import TOUCHED_DATES
from crm_assets.defs.outcome import failure_reason
from crm_assets.defs.sync.assets import clean_assets, raw_assets
from crm_assets.demo_crm import DEMO_API_KEY, DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.reports.aggregate import replace_aggregations
from crm_assets.reports.windows import Cadence
from crm_assets.resources import CrmResource, WarehouseResource
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_aggregations

SYNC = [*raw_assets(), *clean_assets()]
ACCOUNTS, DEALS = CLEAN_TABLES["accounts"], CLEAN_TABLES["deals"]
DEMO_ACCOUNTS = "sales_accounts"


@pytest.fixture
def demo() -> DemoCrm:
    return DemoCrm(DemoConfig(accounts=40, contacts=20, deals=250, seed=11, dirty=False))


@pytest.fixture
def crm_url(demo: DemoCrm) -> Iterator[str]:
    with serve_demo_crm(demo) as url:
        yield url


def sync(crm_url: str, warehouse_url: str, instance: dg.DagsterInstance, **kw: Any) -> dg.ExecuteInProcessResult:
    resources = {
        "crm": CrmResource(base_url=crm_url, api_key=DEMO_API_KEY, rate_limit_per_minute=0, rate_limit_per_hour=0),
        "warehouse": WarehouseResource(url=warehouse_url),
    }
    return dg.materialize(SYNC, resources=resources, instance=instance, **kw)


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(key)
    return {k: v.value for k, v in event.metadata.items()}


def snapshot(url: str) -> dict[str, Any]:
    """Every row of the tables a refused run must leave alone."""
    with sa.create_engine(url).connect() as conn:
        tables = (ACCOUNTS, DEALS, deal_aggregations)
        return {t.name: sorted(map(tuple, conn.execute(sa.select(t)).all())) for t in tables}


def accounts_in(demo: DemoCrm, region: str) -> list[int]:
    """CRM ids of the live accounts whose region is `region`."""
    records = [demo.get_record(DEMO_ACCOUNTS, crm_id) for crm_id in demo.crm_ids(DEMO_ACCOUNTS)]
    return [r["id"] for r in records if r and not r["is_deleted"] and r["custom_field"]["cf_region"] == region]


def rename_region(demo: DemoCrm, old: str, new: str, limit: int | None = None) -> list[int]:
    """PUT region `new` on the (first `limit`) live accounts whose region is `old`; their CRM ids."""
    renamed = accounts_in(demo, old)[:limit]
    for crm_id in renamed:
        demo.update_record(DEMO_ACCOUNTS, crm_id, {"custom_field": {"cf_region": new}})
    return renamed


def deals_of(url: str, account_crm_ids: list[int]) -> list[date]:
    """The UTC creation dates of the loaded deals of these accounts."""
    with sa.create_engine(url).connect() as conn:
        query = sa.select(DEALS.c.created_at).join(ACCOUNTS, ACCOUNTS.c.account_id == DEALS.c.account_id)
        rows = conn.execute(query.where(ACCOUNTS.c.crm_id.in_(account_crm_ids))).scalars()
        return [(r.astimezone(UTC) if r.tzinfo else r).date() for r in rows]


def aggregate(url: str) -> None:
    replace_aggregations(sa.create_engine(url), Cadence.MONTHLY, date(2000, 1, 1), date(2100, 1, 1))


def test_a_renamed_region_is_refused_then_allowed_and_the_cascade_is_counted(
    demo: DemoCrm, crm_url: str, warehouse_url: str
) -> None:
    with dg.instance_for_test() as instance:
        assert sync(crm_url, warehouse_url, instance).success
        aggregate(warehouse_url)
        before = snapshot(warehouse_url)
        assert before["deal_aggregations"]
        renamed = rename_region(demo, "Europe", "EMEA")
        doomed = deals_of(warehouse_url, renamed)
        assert len(doomed) >= 25 and len(doomed) > 0.1 * len(before["deals"])  # the guard's default limits

        refused = sync(crm_url, warehouse_url, instance, raise_on_error=False)
        assert not refused.success
        reason = failure_reason(instance, refused.run_id)
        assert reason.startswith("step accounts: accounts: refusing to clean")
        assert f"remove {len(renamed)} of {len(before['accounts'])} accounts rows" in reason
        assert "region: uncastable" in reason and f"by cascade {len(doomed)} of {len(before['deals'])} deals" in reason
        assert "allow_mass_delete: true" in reason
        assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in refused.all_events)
        assert snapshot(warehouse_url) == before

        allow = {"ops": {"accounts": {"config": {"allow_mass_delete": True}}}}
        forced = sync(crm_url, warehouse_url, instance, run_config=allow)
        assert forced.success
        accounts, deals = metadata(forced, "accounts"), metadata(forced, "deals")
        assert accounts["deleted"] == len(renamed) and accounts["cascaded"] == {"deals": len(doomed)}
        assert deals["deleted"] == deals["deleted_with_parent"] == len(doomed)
        assert {d.isoformat() for d in doomed} <= set(deals[TOUCHED_DATES])
        assert deals["dagster/row_count"] == len(before["deals"]) - len(doomed)

        # The CRM fixed: the next run restores everything, with no override.
        rename_region(demo, "EMEA", "Europe")
        restored = sync(crm_url, warehouse_url, instance)
        assert restored.success
        assert metadata(restored, "deals")["inserted"] == len(doomed)
        aggregate(warehouse_url)
    # Restored row for row, but for the surrogate ids of the rows that were reloaded.
    after = snapshot(warehouse_url)
    assert {name: len(rows) for name, rows in after.items()} == {name: len(rows) for name, rows in before.items()}
    assert {r[1:] for r in after["deal_aggregations"]} == {r[1:] for r in before["deal_aggregations"]}


def test_a_small_removal_goes_through_and_counts_its_cascade(demo: DemoCrm, crm_url: str, warehouse_url: str) -> None:
    """One account renamed out of the enum, one deleted in the CRM: below the limits, applied as before."""
    with dg.instance_for_test() as instance:
        assert sync(crm_url, warehouse_url, instance).success
        renamed = rename_region(demo, "Europe", "EMEA", limit=1)
        deleted = [i for i in accounts_in(demo, "Asia") if deals_of(warehouse_url, [i])][:1]
        demo.delete_record(DEMO_ACCOUNTS, deleted[0])
        doomed = deals_of(warehouse_url, renamed + deleted)
        assert len(deals_of(warehouse_url, renamed)) > 0 and len(doomed) < 25
        result = sync(crm_url, warehouse_url, instance)
    assert result.success
    accounts, deals = metadata(result, "accounts"), metadata(result, "deals")
    assert accounts["deleted"] == 2 and accounts["cascaded"] == {"deals": len(doomed)}
    assert deals["deleted"] == deals["deleted_with_parent"] == len(doomed)
    assert {d.isoformat() for d in doomed} <= set(deals[TOUCHED_DATES])


def test_a_mass_deletion_allowed_at_the_scan_is_not_refused_again_by_the_clean_step(
    demo: DemoCrm, crm_url: str, warehouse_url: str
) -> None:
    """The scan's guard judges deletions in the CRM; once a person allowed them there, the clean step applies
    them (one override, as the scan's refusal says), and still counts them."""
    with dg.instance_for_test() as instance:
        assert sync(crm_url, warehouse_url, instance).success
        with sa.create_engine(warehouse_url).connect() as conn:
            before = conn.execute(sa.select(sa.func.count()).select_from(DEALS)).scalar_one()
            doomed = conn.execute(sa.select(DEALS.c.crm_id).limit(before // 5)).scalars().all()
        for crm_id in doomed:
            demo.delete_record("deals", crm_id)
        refused = sync(crm_url, warehouse_url, instance, raise_on_error=False)
        assert not refused.success and "raw_deals" in failure_reason(instance, refused.run_id)
        allowed = {"ops": {"raw_deals": {"config": {"allow_mass_delete": True, "full_refresh": True}}}}
        result = sync(crm_url, warehouse_url, instance, run_config=allowed)
    assert result.success
    assert metadata(result, "deals")["deleted"] == len(doomed)
