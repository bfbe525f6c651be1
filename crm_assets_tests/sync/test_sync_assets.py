"""The sync assets end to end against the demo CRM over loopback HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from crm_assets.contracts import TOUCHED_DATES
from crm_assets.defs.exports.assets import crm_exports
from crm_assets.defs.sync.assets import clean_assets, raw_assets
from crm_assets.defs.sync.checks import clean_checks
from crm_assets.demo_crm import DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.resources import CrmResource, ExportDirectory, WarehouseResource
from crm_assets.warehouse.schema import CLEAN_TABLES, RAW_TABLES, rejected_records

SECRET_KEY = "sk-live-7f3a9c1e-never-print-me"
RAW_ASSETS = raw_assets()
SYNC_ASSETS = [*RAW_ASSETS, *clean_assets(), crm_exports]
CLEAN_CHECKS = clean_checks()


@pytest.fixture
def demo() -> DemoCrm:
    return DemoCrm(DemoConfig(accounts=40, contacts=150, deals=250, seed=11, api_key=SECRET_KEY))


@pytest.fixture
def crm_url(demo: DemoCrm) -> Iterator[str]:
    with serve_demo_crm(demo) as url:
        yield url


def resources(crm_url: str, warehouse_url: str, export_dir: Path, api_key: str = SECRET_KEY) -> dict[str, Any]:
    return {
        "crm": CrmResource(base_url=crm_url, api_key=api_key, rate_limit_per_minute=0, rate_limit_per_hour=0),
        "warehouse": WarehouseResource(url=warehouse_url),
        "exports": ExportDirectory(path=str(export_dir / "exports")),
    }


def sync(res: dict[str, Any], instance: dg.DagsterInstance, assets: list[Any] = SYNC_ASSETS, **kw: Any):  # type: ignore[no-untyped-def]
    return dg.materialize([*assets, *CLEAN_CHECKS], resources=res, instance=instance, **kw)


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(key)
    return {k: v.value for k, v in event.metadata.items()}


def count(url: str, table: sa.Table, *where: Any) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def test_materializing_everything_loads_clean_tables_quarantines_dirt_and_exports(
    crm_url: str, warehouse_url: str, tmp_path: Path
) -> None:
    with dg.instance_for_test() as instance:
        result = sync(resources(crm_url, warehouse_url, tmp_path), instance)
    assert result.success
    for name in ("accounts", "contacts", "deals"):
        meta = metadata(result, name)
        assert meta["dagster/row_count"] > 0
        assert meta["inserted"] == meta["dagster/row_count"]
        assert meta["rejected"] == count(warehouse_url, rejected_records, rejected_records.c.domain == name)
        assert meta["rejected"] > 0, f"the demo's dirt should reject some {name}"
        assert sum(meta["rejected_by_reason"].values()) >= meta["rejected"]
        assert "| " in meta["preview"]
        assert count(warehouse_url, CLEAN_TABLES[name]) == meta["dagster/row_count"]
    assert "duplicate deal_id" in metadata(result, "deals")["rejected_by_reason"]
    assert any(k.startswith("orphan") for k in metadata(result, "deals")["rejected_by_reason"])
    assert metadata(result, "deals")[TOUCHED_DATES]
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    exported = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "exports").iterdir())
    assert exported == [f"{d}.{ext}" for d in ("accounts", "contacts", "deals") for ext in ("csv", "json")]


def test_a_second_run_on_unchanged_data_changes_nothing(crm_url: str, warehouse_url: str, tmp_path: Path) -> None:
    res = resources(crm_url, warehouse_url, tmp_path)
    with dg.instance_for_test() as instance:
        assert sync(res, instance).success
        again = sync(res, instance)
    for domain in ("accounts", "contacts", "deals"):
        raw = metadata(again, f"raw_{domain}")
        assert (raw["mode"], raw["inserted"], raw["updated"]) == ("incremental", 0, 0)
        clean = metadata(again, domain)
        assert (clean["inserted"], clean["updated"], clean["deleted"]) == (0, 0, 0)
    assert metadata(again, "deals")[TOUCHED_DATES] == []


def view_requests(demo: DemoCrm) -> int:
    return sum(1 for r in demo.request_log if "/view/" in r.path)


def test_an_incremental_run_fetches_only_changed_records(sqlite_url: str, tmp_path: Path) -> None:
    demo = DemoCrm(DemoConfig(accounts=50, contacts=50, deals=2000, seed=5, api_key=SECRET_KEY))
    raw_deals = [a for a in RAW_ASSETS if a.key.path == ["raw_deals"]]
    with serve_demo_crm(demo) as crm_url, dg.instance_for_test() as instance:
        res = resources(crm_url, sqlite_url, tmp_path)
        demo.clear_log()
        assert sync(res, instance, raw_deals).success
        full_requests = view_requests(demo)
        changed = demo.touch_fraction("deals", 0.02, seed=1)
        demo.clear_log()
        result = sync(res, instance, raw_deals)
    meta = metadata(result, "raw_deals")
    assert meta["mode"] == "incremental"
    assert meta["updated"] == len(changed)
    # per view: one page of changes, plus the Recycle Bin read whole
    assert full_requests >= 20
    assert view_requests(demo) <= 3 + 2 + 2
    assert meta["fetched"] < 3 * len(changed) + 100


def test_deleted_in_the_crm_leaves_the_clean_table(
    demo: DemoCrm, crm_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    res = resources(crm_url, sqlite_url, tmp_path)
    with dg.instance_for_test() as instance:
        assert sync(res, instance).success
        deals = CLEAN_TABLES["deals"]
        engine = sa.create_engine(sqlite_url)
        with engine.connect() as conn:
            soft, hard = conn.execute(sa.select(deals.c.crm_id).limit(2)).scalars().all()
        demo.delete_record("deals", soft)
        demo.forget_record("deals", hard)
        result = sync(res, instance, run_config={"ops": {"raw_deals": {"config": {"full_refresh": True}}}})
    assert metadata(result, "deals")["deleted"] == 2
    with engine.connect() as conn:
        left = conn.execute(sa.select(deals.c.crm_id).where(deals.c.crm_id.in_([soft, hard]))).all()
        deleted = conn.execute(sa.select(sa.func.count()).where(RAW_TABLES["deals"].c.is_deleted)).scalar_one()
    assert left == []
    assert deleted >= 2


def test_the_api_key_never_appears_in_logs_metadata_or_errors(
    crm_url: str, sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # run without -p no:logging
    with dg.instance_for_test() as instance:
        assert sync(resources(crm_url, sqlite_url, tmp_path), instance).success
        wrong = "sk-wrong-key-3b1d"
        failed = sync(resources(crm_url, sqlite_url, tmp_path, api_key=wrong), instance, raise_on_error=False)
        records = instance.get_records_for_run(failed.run_id).records
        everything = [str(r.event_log_entry) for r in records]
        for run in instance.get_runs():
            everything += [str(r.event_log_entry) for r in instance.get_records_for_run(run.run_id).records]
            everything.append(str(run.run_config))
    everything.append(caplog.text)
    blob = "\n".join(everything)
    assert not failed.success
    assert "401" in blob and "CRM_API_KEY" in blob
    assert SECRET_KEY not in blob
    assert wrong not in blob


def test_an_unreachable_warehouse_fails_with_a_plain_message(crm_url: str, tmp_path: Path) -> None:
    res = resources(crm_url, "postgresql+psycopg://crm:pw-9f2@127.0.0.1:1/warehouse", tmp_path)
    with dg.instance_for_test() as instance:
        result = sync(res, instance, RAW_ASSETS[:1], raise_on_error=False)
        failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.user_failure_data or failure.step_failure_data.error)
    assert "cannot connect to the warehouse database" in message and "127.0.0.1:1/warehouse" in message
    assert "pw-9f2" not in message
