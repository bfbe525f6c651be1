"""`crm-assets run`: the sync, then the aggregation partitions it changed, on the one Dagster instance; a summary.

Every run is created from the code location, so it lists on its job's page (crm_sync and the three
aggregation jobs) and can be re-executed from the UI. The aggregations are incremental: the same plan as
the refresh sensor (`defs/reports/refresh.py`), plus every partition never materialized (all of them on
the first run), or the whole range with `--rebuild-reports`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from crm_assets import settings
from crm_assets.contracts import CODE_LOCATION_NAME, LAUNCHED_BY_TAG
from crm_assets.defs.history.assets import PIPELINE_DAILY_KEY, daily_partitions
from crm_assets.defs.history.sensors import history_changes_after, plan_history_runs
from crm_assets.defs.instance import (
    IN_PROCESS,
    PLAIN_CONSOLE,
    LoadedCodeLocation,
    code_location,
    command_instance,
    dagster_home,
    execute_job_run,
)
from crm_assets.defs.outcome import failure_reason
from crm_assets.defs.reports.assets import asset_key
from crm_assets.defs.reports.checks import REPORT_CHECKS
from crm_assets.defs.reports.refresh import (
    all_windows,
    deal_changes_after,
    in_process_merge_gap,
    plan_refresh,
    unmaterialized_windows,
)
from crm_assets.domains import configured_domains
from crm_assets.reports.windows import Cadence, utc_day
from crm_assets.resources import ExportDirectory, WarehouseResource
from crm_assets.warehouse.clean_load import rejection_counts
from crm_assets.warehouse.engine import safe_url
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_aggregations

SYNC_JOB = "crm_sync"
CLI_TAGS = {LAUNCHED_BY_TAG: "cli"}
# The newest `deals` materialization whose touched dates `crm-assets run` has refreshed, kept in the
# instance: changes made between two runs (a write-back, a UI-launched sync) are refreshed by the next.
REPORTS_CURSOR_KEY = "crm_assets/run_reports_cursor"


class RunFailed(Exception):
    """A run this command launched failed; the message is its cause and where to look."""


def _run(
    instance: dg.DagsterInstance,
    location: LoadedCodeLocation,
    job: str,
    config: Mapping[str, Any],
    tags: dict[str, str],
    assets: list[dg.AssetKey] | None = None,
    checks: list[dg.AssetCheckKey] | None = None,
) -> None:
    run_config = {**IN_PROCESS, **PLAIN_CONSOLE, **config}
    result = execute_job_run(instance, location, job, run_config, {**CLI_TAGS, **tags}, assets, checks)
    if not result.success:
        raise RunFailed(f"{job} failed: {failure_reason(instance, result.run_id)} (run {result.run_id})")


def _sync(
    instance: dg.DagsterInstance, location: LoadedCodeLocation, full_refresh: bool, allow_mass_delete: bool
) -> None:
    ops: dict[str, Any] = {}
    for domain in configured_domains():
        if full_refresh or allow_mass_delete:
            ops[domain.raw_asset] = {"config": {"full_refresh": full_refresh, "allow_mass_delete": allow_mass_delete}}
        if allow_mass_delete:  # the clean step's guard too: one flag for the day a loss is real
            ops[domain.name] = {"config": {"allow_mass_delete": True}}
    config = {"ops": ops} if ops else {}
    mode = "full reconciliation" if full_refresh else "incremental sync"
    print(f"== {SYNC_JOB}: {mode} of the CRM into the warehouse ==", flush=True)
    _run(instance, location, SYNC_JOB, config, {})


def _refresh_reports(
    instance: dg.DagsterInstance, location: LoadedCodeLocation, engine: sa.Engine, since: int | None, rebuild: bool
) -> list[str]:
    """Run the aggregation jobs over what the sync changed (and what was never computed); what each run covered.

    Each refreshed cadence's checks run once, in its last run, on the result: not once per range.
    """
    changes = deal_changes_after(instance, since)
    forced = {c: all_windows(c) if rebuild else unmaterialized_windows(instance, c) for c in Cadence}
    with engine.connect() as conn:
        runs = plan_refresh(conn, changes.dates, forced, in_process_merge_gap(instance))
    if not runs:
        print("\n== aggregations: up to date (no partition's deals changed) ==", flush=True)
    last_of_cadence = {run.cadence: run for run in runs}
    for run in runs:
        key = asset_key(run.cadence)
        checked = last_of_cadence[run.cadence] is run
        checks = [c for d in REPORT_CHECKS for c in d.check_keys if c.asset_key == key] if checked else []
        print(f"\n== {run.job_name}: {run.describe()}{' and its checks' if checked else ''} ==", flush=True)
        _run(instance, location, run.job_name, {}, run.tags, assets=[key], checks=checks)
    if changes.cursor_id is not None:
        instance.run_storage.set_cursor_values({REPORTS_CURSOR_KEY: str(changes.cursor_id)})
    return [run.describe() for run in runs]


def _refresh_history(
    instance: dg.DagsterInstance, location: LoadedCodeLocation, since: int | None, rebuild: bool
) -> list[str]:
    """The history report and stage transitions after any new `deals` materialization, and pipeline_daily from
    the earliest day the new versions change (every day on the first run, or with `--rebuild-reports`)."""
    changes = history_changes_after(instance, since, limit=None)
    computed = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=PIPELINE_DAILY_KEY), limit=1).records
    runs = plan_history_runs(changes, from_day=utc_day(daily_partitions().start) if rebuild or not computed else None)
    for run in runs:
        print(f"\n== {run.describe()} ==", flush=True)
        _run(instance, location, run.job_name, {}, dict(run.tags))
    return [run.describe() for run in runs]


def _reports_cursor(instance: dg.DagsterInstance) -> int | None:
    value = instance.run_storage.get_cursor_values({REPORTS_CURSOR_KEY}).get(REPORTS_CURSOR_KEY)
    return int(value) if value else None


def _counts(engine: sa.Engine) -> tuple[dict[str, int], dict[str, dict[str, int]], dict[str, int]]:
    with engine.connect() as conn:
        rows = {
            name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for name, t in CLEAN_TABLES.items()
        }
        reasons = {d.name: rejection_counts(conn, d.name)[1] for d in configured_domains()}
        aggregations: dict[str, int] = dict(
            conn.execute(
                sa.select(deal_aggregations.c.aggregation_type, sa.func.count()).group_by(
                    deal_aggregations.c.aggregation_type
                )
            ).all()
        )
    return rows, reasons, aggregations


def ui_command(home: Path) -> str:
    """The README's command that opens the UI on this instance and warehouse."""
    return f"DAGSTER_HOME={home} {Path(sys.executable).with_name('dg')} dev"


def _print_summary(
    engine: sa.Engine, export_dir: Path, home: Path, report_runs: list[str], history_runs: list[str]
) -> None:
    rows, reasons, aggregations = _counts(engine)
    print("\n== crm-assets: summary ==", flush=True)
    for name, count in rows.items():
        rejected = reasons.get(name, {})
        total = sum(rejected.values())
        detail = f"; {total:,} rejected ({', '.join(f'{k}: {n}' for k, n in rejected.items())})" if total else ""
        print(f"  {name:<10} {count:>9,} rows{detail}")
    if aggregations:
        print("  deal_aggregations: " + ", ".join(f"{k} {n:,} rows" for k, n in sorted(aggregations.items())))
    shown = ", ".join(report_runs[:6]) + (f", ... ({len(report_runs) - 6} more)" if len(report_runs) > 6 else "")
    print(f"  aggregation runs: {len(report_runs)}" + (f" ({shown})" if report_runs else " (no partition changed)"))
    print(f"  history runs: {len(history_runs)}" + (f" ({', '.join(history_runs)})" if history_runs else ""))
    print(f"\n  warehouse:  {safe_url(engine.url)}")
    print("  rejected records, with reason and raw payload: table rejected_records")
    print(f"  exports:    {export_dir}")
    print(f"  runs:       Dagster instance at {home} (code location {CODE_LOCATION_NAME})")
    print(f"\n  Open the UI, from the project folder:  {ui_command(home)}")
    print("                (then http://127.0.0.1:3000)")


def run_all(full_refresh: bool = False, rebuild_reports: bool = False, allow_mass_delete: bool = False) -> int:
    home = dagster_home()
    # A first run's aggregation covers years of daily partitions: write their events in batches.
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "100")
    # ... and plan such a run with one event for the whole range, not one per partition.
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
    try:
        engine = WarehouseResource().get_engine()  # no url: DATABASE_URL, or the SQLite file, as in a run
    except dg.Failure as exc:  # an unreachable or malformed warehouse: nothing was run (the CLI checks first)
        print(f"error: {exc.description}", file=sys.stderr)
        return 2
    export_dir = ExportDirectory(path=settings.export_dir()).folder
    try:
        with command_instance() as instance, code_location(instance) as location:
            since = _reports_cursor(instance)
            _sync(instance, location, full_refresh, allow_mass_delete)
            history_runs = _refresh_history(instance, location, since, rebuild_reports)
            report_runs = _refresh_reports(instance, location, engine, since, rebuild_reports)
    except RunFailed as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    _print_summary(engine, export_dir, home, report_runs, history_runs)
    engine.dispose()  # closed here: the process exits without a last garbage collection (cli.py)
    return 0
