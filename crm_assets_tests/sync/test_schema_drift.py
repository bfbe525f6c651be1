"""The issue's scenario: `cf_region` renamed in the CRM, 20% of the accounts touched, then a sync."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import sqlalchemy as sa

from crm_assets.defs.exports.assets import ExportDirectory, crm_exports
from crm_assets.defs.sync.assets import clean_assets, raw_assets
from crm_assets.defs.sync.checks import clean_checks, crm_field_checks
from crm_assets.demo_crm import DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.resources import CrmResource, WarehouseResource
from crm_assets.warehouse.schema import CLEAN_TABLES, RAW_TABLES

API_KEY = "drift-test-key"


class RenamingCrm(DemoCrm):
    """The demo CRM after an admin renamed custom fields: records and field settings use the new names."""

    renamed: dict[str, str]

    def handle(self, request: httpx.Request, *, over_http: bool = False) -> httpx.Response:
        response = super().handle(request, over_http=over_http)
        renamed = getattr(self, "renamed", {})
        if not renamed or not response.headers.get("content-type", "").startswith("application/json"):
            return response
        text = response.content.decode()
        for old, new in renamed.items():
            text = text.replace(f'"{old}"', f'"{new}"')  # keys and field-settings names, quoted
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(response.status_code, headers=headers, content=text.encode())


def run(
    crm_url: str, warehouse_url: str, tmp_path: Path, instance: dg.DagsterInstance, *, full_refresh: bool = False
) -> dg.ExecuteInProcessResult:
    resources: dict[str, Any] = {
        "crm": CrmResource(base_url=crm_url, api_key=API_KEY, rate_limit_per_minute=0, rate_limit_per_hour=0),
        "warehouse": WarehouseResource(url=warehouse_url),
        "exports": ExportDirectory(path=str(tmp_path / "exports")),
    }
    return dg.materialize(
        [*raw_assets(), *clean_assets(), crm_exports, *clean_checks(), *crm_field_checks()],
        resources=resources,
        instance=instance,
        run_config={"ops": {a.key.path[0]: {"config": {"full_refresh": full_refresh}} for a in raw_assets()}},
        raise_on_error=False,
    )


def clean_rows(url: str) -> dict[str, set[int]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {name: set(conn.execute(sa.select(t.c.crm_id)).scalars()) for name, t in CLEAN_TABLES.items()}
    engine.dispose()
    return rows


def field_checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.asset_key.path[0]: e for e in result.get_asset_check_evaluations() if e.check_name == "mapped_fields_in_crm"
    }


def test_a_renamed_custom_field_keeps_every_row_and_names_the_fix(warehouse_url: str, tmp_path: Path) -> None:
    demo = RenamingCrm(DemoConfig(accounts=100, contacts=200, deals=600, seed=8, api_key=API_KEY))
    with serve_demo_crm(demo) as crm_url, dg.instance_for_test() as instance:
        assert run(crm_url, warehouse_url, tmp_path, instance).success
        before = clean_rows(warehouse_url)

        demo.renamed = {"cf_region": "cf_territory"}
        touched = demo.touch_fraction("sales_accounts", 0.2, seed=4)
        drifted = run(crm_url, warehouse_url, tmp_path, instance)

        assert not drifted.success
        assert clean_rows(warehouse_url) == before  # accounts and deals keep every row
        (failure,) = [e for e in drifted.all_events if e.is_step_failure]
        assert failure.step_key == "accounts"
        message = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
        assert message is not None
        for named in ("accounts", "region", "cf_region", "CRM_FIELD_MAP", "rebuild: true"):
            assert named in message
        assert not [e for e in drifted.all_events if e.is_step_up_for_retry]
        checks = field_checks(drifted)
        assert not checks["raw_accounts"].passed
        assert "CRM_FIELD_MAP" in (checks["raw_accounts"].description or "")
        assert checks["raw_deals"].passed and checks["raw_contacts"].passed
        engine = sa.create_engine(warehouse_url)
        raw = RAW_TABLES["accounts"]
        with engine.connect() as conn:  # the raw step still stored what the CRM returned
            stored = conn.execute(sa.select(raw.c.payload).where(raw.c.crm_id.in_(touched))).scalars().all()
        engine.dispose()
        assert len(stored) == len(touched) >= 10
        assert all("cf_territory" in str(p) and "cf_region" not in str(p) for p in stored)

        # The field is restored; the records that were saved without it are saved again with it.
        demo.renamed = {}
        # CRM timestamps have whole seconds: a re-save within the touch's second would keep its updated_at,
        # and an incremental run keeps the stored copy of a record whose updated_at did not move.
        time.sleep(max(0.0, math.ceil(time.time()) - time.time()) + 0.05)
        for crm_id in touched:
            demo.update_record("sales_accounts", crm_id, {})
        recovered = run(crm_url, warehouse_url, tmp_path, instance)
    assert recovered.success
    assert all(c.passed for c in field_checks(recovered).values())
    after = clean_rows(warehouse_url)
    assert after == before


def test_a_field_restored_without_record_edits_recovers_on_a_full_refresh(sqlite_url: str, tmp_path: Path) -> None:
    """Restoring a field leaves updated_at as it was: a full refresh re-reads the records and the merge takes
    the copies whose payload changed, so the clean step sees the field again."""
    demo = RenamingCrm(DemoConfig(accounts=100, contacts=200, deals=600, seed=8, api_key=API_KEY))
    with serve_demo_crm(demo) as crm_url, dg.instance_for_test() as instance:
        assert run(crm_url, sqlite_url, tmp_path, instance).success
        before = clean_rows(sqlite_url)
        demo.renamed = {"cf_region": "cf_territory"}
        demo.touch_fraction("sales_accounts", 0.2, seed=4)
        assert not run(crm_url, sqlite_url, tmp_path, instance).success

        demo.renamed = {}
        recovered = run(crm_url, sqlite_url, tmp_path, instance, full_refresh=True)
    assert recovered.success
    assert clean_rows(sqlite_url) == before
