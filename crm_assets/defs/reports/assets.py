"""The three partitioned report assets: one set-based replacement per run, whatever its range."""

import base64
import os
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy.engine import Engine

from crm_assets.defs.reports.partitions import PARTITIONS
from crm_assets.reports.aggregate import ReplaceStats, replace_aggregations, top_accounts
from crm_assets.reports.chart import monthly_totals_by_region, render_region_chart
from crm_assets.reports.windows import Cadence, months_between, shift_months, utc_day, window_start
from crm_assets.resources import WarehouseResource, export_dir_from_env

REPORTS_GROUP = "crm_reports"
CHART_MONTHS = 36  # the chart shows up to this many months, ending with the run's last month
_WINDOW_NAMES = {Cadence.DAILY: "day", Cadence.WEEKLY: "ISO week (Monday start)", Cadence.MONTHLY: "calendar month"}


def asset_name(cadence: Cadence) -> str:
    return f"deal_aggregations_{cadence.value}"


def _summary(stats: ReplaceStats, partitions: int, top: list[tuple]) -> str:
    lines = [
        f"**{stats.cadence.value}** aggregations for `{stats.start}` to `{stats.end}` (end exclusive, UTC): "
        f"{partitions:,} partition(s), {stats.windows_with_deals:,} with deals.",
        "",
        f"- rows written: **{stats.rows_written:,}** (replacing {stats.rows_deleted:,})",
        f"- deals: **{stats.deal_count:,}**, total deal size **{stats.total_deal_size:,}**",
    ]
    if top:
        lines += ["", "Largest accounts in this range:", "", "| account_id | name | region | total | deals |"]
        lines.append("|---|---|---|---|---|")
        lines += [f"| {a} | {n} | {r} | {t:,} | {c:,} |" for a, n, r, t, c in top]
    return "\n".join(lines)


def _chart_metadata(engine: Engine, start: date, end: date, first_month: date) -> dict[str, Any]:
    """Monthly totals per region for the months up to this run's last one, as a PNG file and inline."""
    last = window_start(end - timedelta(days=1), Cadence.MONTHLY)
    months = months_between(max(first_month, shift_months(last, 1 - CHART_MONTHS)), last)
    with engine.connect() as conn:
        totals = monthly_totals_by_region(conn, months[0], months[-1])
    title = f"Deal totals per month and region, {months[0]:%Y-%m} to {months[-1]:%Y-%m} (UTC)"
    png = render_region_chart(totals, months, title)
    path = Path(export_dir_from_env()).resolve() / "charts" / f"deal_totals_by_region_{months[-1]:%Y-%m}.png"
    _write_atomically(path, png)
    inline = base64.b64encode(png).decode("ascii")
    return {
        "chart_file": dg.MetadataValue.path(str(path)),
        "chart": dg.MetadataValue.md(f"![{title}](data:image/png;base64,{inline})"),
    }


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers of the chart folder never see half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _materialize(context: dg.AssetExecutionContext, cadence: Cadence, engine: Engine) -> dg.MaterializeResult:
    started = time.monotonic()
    window = context.partition_time_window  # the whole range in a single-run backfill
    start, end = utc_day(window.start), utc_day(window.end)
    partitions = len(context.partition_keys)
    context.log.info(f"{asset_name(cadence)}: computing {partitions:,} partition(s), [{start}, {end}) UTC")
    stats = replace_aggregations(engine, cadence, start, end)
    context.log.info(
        f"{asset_name(cadence)}: {stats.rows_written:,} rows written ({stats.rows_deleted:,} replaced) for "
        f"{stats.deal_count:,} deals in {time.monotonic() - started:.2f} s"
    )
    with engine.connect() as conn:
        top = top_accounts(conn, cadence, start, end)
    metadata: dict[str, Any] = {
        "rows_written": stats.rows_written,
        "rows_replaced": stats.rows_deleted,
        "window_start": start.isoformat(),
        "window_end_exclusive": end.isoformat(),
        "partitions": partitions,
        "windows_with_deals": stats.windows_with_deals,
        "deals": stats.deal_count,
        "total_deal_size": dg.MetadataValue.text(str(stats.total_deal_size)),
        "summary": dg.MetadataValue.md(_summary(stats, partitions, top)),
    }
    if cadence is Cadence.MONTHLY:
        first_month = utc_day(PARTITIONS[cadence].start)
        metadata.update(_chart_metadata(engine, start, end, first_month))
    metadata["duration_seconds"] = round(time.monotonic() - started, 2)
    return dg.MaterializeResult(metadata=metadata)


def build_report_asset(cadence: Cadence) -> dg.AssetsDefinition:
    @dg.asset(
        name=asset_name(cadence),
        group_name=REPORTS_GROUP,
        partitions_def=PARTITIONS[cadence],
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[dg.AssetKey("deals"), dg.AssetKey("accounts")],
        kinds={"sql"},
        description=f"Per account and {_WINDOW_NAMES[cadence]} (UTC): COALESCE(SUM(deal_size), 0) and COUNT(*) "
        "of the deals created in the window, in deal_aggregations. A backfill of any range is one run and one "
        "set-based statement.",
    )
    def report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        return _materialize(context, cadence, warehouse.get_engine())

    return report


REPORT_ASSETS_BY_CADENCE: dict[Cadence, dg.AssetsDefinition] = {c: build_report_asset(c) for c in Cadence}
