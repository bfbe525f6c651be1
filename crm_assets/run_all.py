"""`crm-assets run`: the whole pipeline once, against the configured Dagster instance, then a summary."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from crm_assets.contracts import RANGE_END_TAG, RANGE_START_TAG
from crm_assets.domains import DOMAINS
from crm_assets.warehouse.clean_load import rejection_counts
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_aggregations

_QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or a project-local one so runs persist and show in `dagster dev` later."""
    home = Path(os.environ.get("DAGSTER_HOME") or ".crm_assets/dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _run_sync(defs: dg.Definitions, instance: dg.DagsterInstance, full_refresh: bool) -> bool:
    job = defs.resolve_job_def("crm_sync")
    run_config: dict[str, Any] = dict(_QUIET_LOGS)
    if full_refresh:
        run_config["ops"] = {d.raw_asset: {"config": {"full_refresh": True}} for d in DOMAINS}
    result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
    return result.success


def _run_reports(defs: dg.Definitions, instance: dg.DagsterInstance) -> bool:
    """One single-run backfill per cadence over its whole partition range."""
    from crm_assets.defs.reports.definitions import REPORT_ASSETS, full_range

    for asset in REPORT_ASSETS:
        first, last = full_range(asset)
        print(f"\n== {asset.key.to_user_string()}: partitions {first} .. {last} in one run ==", flush=True)
        result = dg.materialize(
            [asset],
            instance=instance,
            resources=dict(defs.resources or {}),
            run_config=_QUIET_LOGS,
            tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
            raise_on_error=False,
        )
        if not result.success:
            return False
    return True


def _counts(engine: sa.Engine) -> tuple[dict[str, int], dict[str, dict[str, int]], dict[str, int]]:
    with engine.connect() as conn:
        rows = {
            name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for name, t in CLEAN_TABLES.items()
        }
        reasons = {d.name: rejection_counts(conn, d.name)[1] for d in DOMAINS}
        aggregations: dict[str, int] = dict(
            conn.execute(
                sa.select(deal_aggregations.c.aggregation_type, sa.func.count()).group_by(
                    deal_aggregations.c.aggregation_type
                )
            ).all()
        )
    return rows, reasons, aggregations


def _print_summary(
    rows: Mapping[str, int],
    reasons: Mapping[str, Mapping[str, int]],
    aggregations: Mapping[str, int],
    warehouse_url: str,
    export_dir: str,
    home: Path,
) -> None:
    print("\n== crm-assets: summary ==")
    for name, count in rows.items():
        rejected = reasons.get(name, {})
        total = sum(rejected.values())
        detail = f"; {total:,} rejected ({', '.join(f'{k}: {n}' for k, n in rejected.items())})" if total else ""
        print(f"  {name:<10} {count:>9,} rows{detail}")
    if aggregations:
        print("  deal_aggregations: " + ", ".join(f"{k} {n:,} rows" for k, n in sorted(aggregations.items())))
    print(f"\n  warehouse:  {warehouse_url}")
    print("  rejected records, with reason and raw payload: table rejected_records")
    print(f"  exports:    {Path(export_dir).resolve()}")
    print(f"  runs:       Dagster instance at {home}")
    dagster = Path(sys.executable).with_name("dagster")
    print(f"\n  Open the UI:  DAGSTER_HOME={home} {dagster} dev -m crm_assets.definitions")
    print("                (then http://127.0.0.1:3000)")


def run_all(full_refresh: bool = False) -> int:
    home = _ensure_dagster_home()
    # The aggregation backfills cover years of daily partitions: write their events in batches.
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "100")
    from crm_assets.definitions import defs  # after DAGSTER_HOME: the default warehouse lives under it
    from crm_assets.resources import WarehouseResource

    warehouse = (defs.resources or {})["warehouse"]
    export_dir = (defs.resources or {})["exports"].path
    assert isinstance(warehouse, WarehouseResource)
    with dg.DagsterInstance.get() as instance:
        print(f"== crm_sync (Dagster instance: {home}) ==", flush=True)
        if not _run_sync(defs, instance, full_refresh):
            print("\ncrm_sync failed: see the error above (also in the UI under Runs).", file=sys.stderr)
            return 1
        if not _run_reports(defs, instance):
            print("\nthe aggregation backfill failed: see the error above.", file=sys.stderr)
            return 1
    rows, reasons, aggregations = _counts(warehouse.get_engine())
    _print_summary(rows, reasons, aggregations, warehouse.display_url, export_dir, home)
    return 0
