"""The three partitioned report assets: one run per range, set-based SQL whatever the range's length.

Each partition's materialization carries that partition's own figures (rows, deals, total, its largest
accounts), also in a range run, so Dagster's Plots tab charts `deal_count` and `total_deal_size`.
"""

import base64
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy.engine import Engine

from crm_assets.defs.metadata import AGGREGATION_SCHEMA, ASSET_OWNERS, capability_tags
from crm_assets.defs.reports.partitions import report_partitions
from crm_assets.files import OutputWriteError, write_bytes_atomically
from crm_assets.reports.aggregate import replace_aggregations
from crm_assets.reports.chart import monthly_totals_by_region, render_region_chart
from crm_assets.reports.partition_stats import WindowFigures, window_figures
from crm_assets.reports.windows import Cadence, months_between, next_window, shift_months, utc_day, window_start
from crm_assets.resources import ExportDirectory, WarehouseResource

REPORTS_GROUP = "crm_reports"
CHART_MONTHS = 36  # the chart shows up to this many months, ending with the run's last month
_WINDOW_NAMES = {Cadence.DAILY: "day", Cadence.WEEKLY: "ISO week (Monday start)", Cadence.MONTHLY: "calendar month"}


def asset_name(cadence: Cadence) -> str:
    return f"deal_aggregations_{cadence.value}"


def asset_key(cadence: Cadence) -> dg.AssetKey:
    return dg.AssetKey(asset_name(cadence))


def _preview(figures: WindowFigures) -> str:
    if not figures.largest:
        return "_no deals were created in this window_"
    lines = ["| account_id | name | region | total_deal_size | deal_count |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.account_id} | {r.account_name or ''} | {r.region or ''} | {r.total_deal_size:,} | {r.deal_count:,} |"
        for r in figures.largest
    ]
    if figures.rows > len(figures.largest):
        lines.append(f"\n_largest {len(figures.largest)} of {figures.rows:,} accounts_")
    return "\n".join(lines)


def partition_metadata(cadence: Cadence, window: date, figures: WindowFigures | None) -> dict[str, Any]:
    """What one partition holds after the run: its own rows and totals, never the run's."""
    figures = figures or WindowFigures(window)
    return {
        "dagster/row_count": figures.rows,
        "dagster/column_schema": AGGREGATION_SCHEMA,
        "deal_count": figures.deal_count,
        "total_deal_size": dg.MetadataValue.float(float(figures.total_deal_size)),
        "window": f"[{window}, {next_window(window, cadence)}) UTC",
        "preview": dg.MetadataValue.md(_preview(figures)),
    }


def _chart_metadata(engine: Engine, charts: Path, end: date, first_month: date) -> dict[str, Any]:
    """Monthly totals per region for the months up to this run's last one, as a PNG file and inline."""
    last = window_start(end - timedelta(days=1), Cadence.MONTHLY)
    months = months_between(max(first_month, shift_months(last, 1 - CHART_MONTHS)), last)
    with engine.connect() as conn:
        totals = monthly_totals_by_region(conn, months[0], months[-1])
    title = f"Deal totals per month and region, {months[0]:%Y-%m} to {months[-1]:%Y-%m} (UTC)"
    png = render_region_chart(totals, months, title)
    path = charts / f"deal_totals_by_region_{months[-1]:%Y-%m}.png"
    try:
        write_bytes_atomically(path, png)
    except OutputWriteError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    inline = base64.b64encode(png).decode("ascii")
    return {
        "chart_file": dg.MetadataValue.path(str(path)),
        "chart": dg.MetadataValue.md(f"![{title}](data:image/png;base64,{inline})"),
    }


def _materialize(
    context: dg.AssetExecutionContext, cadence: Cadence, engine: Engine, exports: ExportDirectory
) -> dg.MaterializeResult[None]:
    started = time.monotonic()
    window = context.partition_time_window  # the whole range in a single-run backfill
    start, end = utc_day(window.start), utc_day(window.end)
    keys = context.partition_keys
    stats = replace_aggregations(engine, cadence, start, end)
    with engine.connect() as conn:
        figures = window_figures(conn, cadence, start, end)
    for key in keys:
        day = date.fromisoformat(key)
        context.add_asset_metadata(partition_metadata(cadence, day, figures.get(day)), partition_key=key)
    if cadence is Cadence.MONTHLY:
        first_month = utc_day(report_partitions()[cadence].start)
        chart = _chart_metadata(engine, exports.charts_path, end, first_month)
        context.add_asset_metadata(chart, partition_key=keys[-1])
    context.log.info(
        f"{asset_name(cadence)}: {len(keys):,} partition(s) [{start}, {end}) UTC, {stats.rows_written:,} rows "
        f"({stats.rows_deleted:,} deleted, {stats.rows_inserted:,} inserted), {stats.deal_count:,} deals, "
        f"in {time.monotonic() - started:.2f} s"
    )
    return dg.MaterializeResult()


def build_report_asset(cadence: Cadence) -> dg.AssetsDefinition:
    @dg.asset(
        name=asset_name(cadence),
        group_name=REPORTS_GROUP,
        partitions_def=report_partitions()[cadence],
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[dg.AssetKey("deals"), dg.AssetKey("accounts")],
        kinds={"sql"},
        owners=ASSET_OWNERS,
        tags=capability_tags("reports"),
        metadata={"dagster/column_schema": AGGREGATION_SCHEMA, "dagster/table_name": "deal_aggregations"},
        description=f"Per account and {_WINDOW_NAMES[cadence]} (UTC): COALESCE(SUM(deal_size), 0) and COUNT(*) "
        "of the deals created in the window, in deal_aggregations. A backfill of any range is one run of set-based "
        "SQL that rewrites only the rows that differ; each partition's materialization lists its own rows and totals.",
    )
    def report(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, exports: ExportDirectory
    ) -> dg.MaterializeResult[None]:
        return _materialize(context, cadence, warehouse.get_engine(), exports)

    return report


def report_assets() -> dict[Cadence, dg.AssetsDefinition]:
    """One asset per cadence, partitioned from CRM_REPORTS_START_DATE (built when the definitions are)."""
    return {c: build_report_asset(c) for c in Cadence}
