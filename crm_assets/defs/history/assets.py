"""The history assets: deal_history (kept by the deals clean step), stage transitions, the open pipeline per day."""

import base64
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Engine

from crm_assets.defs.reports.partitions import report_partitions
from crm_assets.files import write_bytes_atomically
from crm_assets.reports.pipeline import PipelineStats, replace_pipeline
from crm_assets.reports.pipeline_chart import open_value_by_stage, render_pipeline_chart
from crm_assets.reports.transitions import TransitionStats, refresh_transitions
from crm_assets.reports.windows import Cadence, utc_day
from crm_assets.resources import ExportDirectory, WarehouseResource
from crm_assets.warehouse.history import history_start
from crm_assets.warehouse.schema import deal_history

HISTORY_GROUP = "crm_history"
CHART_DAYS = 365  # the chart shows up to this many days, ending with the run's last day
PIPELINE_DAILY = "pipeline_daily"
PIPELINE_DAILY_KEY = dg.AssetKey(PIPELINE_DAILY)


def daily_partitions() -> dg.TimeWindowPartitionsDefinition:
    """pipeline_daily's partitions: the reports' days."""
    return report_partitions()[Cadence.DAILY]


@dg.asset(
    name="deal_history",
    group_name=HISTORY_GROUP,
    deps=[dg.AssetKey("deals")],
    kinds={"sql"},
    description="One row per version of a deal (type 2): valid_from is the CRM's updated_at of the version, "
    "valid_to the next version's (NULL = current); a deal leaving `deals` (deleted, rejected, orphaned) gets a "
    "version with is_deleted. Written by the deals clean step and the write-back in their own transactions; "
    "this asset reports on it. Changes between two syncs collapse into one version.",
)
def deal_history_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult[None]:
    h = deal_history.c
    open_ = h.valid_to.is_(None)
    with warehouse.get_engine().connect() as conn:
        versions, deals, current, deleted = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(sa.distinct(h.deal_id)),
                sa.func.count().filter(open_ & h.is_deleted.is_(False)),
                sa.func.count().filter(open_ & h.is_deleted.is_(True)),
            )
        ).one()
        started = history_start(conn)
    context.log.info(f"deal_history: {versions:,} versions of {deals:,} deals since {started}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(versions),
            "deals": int(deals),
            "current_versions": int(current),
            "deleted_deals": int(deleted),
            "versions_per_deal": round(versions / deals, 3) if deals else 0.0,
            "history_started_at": started.isoformat() if started else "",
        }
    )


def _transition_metadata(stats: TransitionStats) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "dagster/row_count": stats.transitions,
        "deals_with_transitions": stats.deals,
        "median_days_in_stage": dg.MetadataValue.json(stats.median_days_in_stage),
        "conversions": dg.MetadataValue.json(stats.conversions),
    }
    # One numeric entry per figure, so the UI plots each over successive materializations.
    for stage, days in stats.median_days_in_stage.items():
        metadata[f"median_days_in_{_slug(stage)}"] = days
    for pair, count in stats.conversions.items():
        source, target = pair.split(" -> ")
        metadata[f"conversions_{_slug(source)}_to_{_slug(target)}"] = count
    lines = ["| from | to | deals |", "|---|---|---|"]
    lines += [f"| {pair.replace(' -> ', ' | ')} | {n:,} |" for pair, n in stats.conversions.items()]
    metadata["conversion_table"] = dg.MetadataValue.md("\n".join(lines))
    return metadata


def _slug(stage: str) -> str:
    return stage.lower().replace("-", "_").replace(" ", "_")


class TransitionsConfig(dg.Config):
    rebuild: bool = Field(
        default=False, description="Recompute every deal's transitions, not only those of deals with new versions."
    )


@dg.asset(
    name="deal_stage_transitions",
    group_name=HISTORY_GROUP,
    deps=[deal_history_asset],
    kinds={"sql"},
    description="One row per stage change of a deal (from_stage, to_stage, changed_at, days_in_from_stage), "
    "derived set-based from deal_history: each run recomputes the deals with versions added since the last. "
    "Metadata: median days per stage and stage-to-stage conversion counts.",
)
def deal_stage_transitions_asset(
    context: dg.AssetExecutionContext, config: TransitionsConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult[None]:
    started = time.monotonic()
    stats = refresh_transitions(warehouse.get_engine(), rebuild=config.rebuild)
    recomputed = "all" if stats.deals_recomputed is None else f"{stats.deals_recomputed:,}"
    context.log.info(
        f"deal_stage_transitions: {stats.transitions:,} transitions of {stats.deals:,} deals ({recomputed} recomputed)"
    )
    metadata = _transition_metadata(stats)
    if stats.deals_recomputed is not None:
        metadata["deals_recomputed"] = stats.deals_recomputed
    metadata["duration_seconds"] = round(time.monotonic() - started, 2)
    return dg.MaterializeResult(metadata=metadata)


def _partition_metadata(context: dg.AssetExecutionContext, stats: PipelineStats) -> None:
    """Per-partition figures, so the UI plots the open pipeline day by day; earlier days say why they are empty."""
    note = f"before the history began ({stats.first_history_day or 'no sync yet'}): no rows"
    for day in stats.before_history():
        context.add_asset_metadata({"before_history": True, "note": note}, partition_key=day.isoformat())
    for day, figures in stats.days.items():
        context.add_asset_metadata(
            {
                "before_history": False,
                "open_deal_count": figures.open_deal_count,
                "open_deal_value": float(figures.open_deal_value),
            },
            partition_key=day.isoformat(),
        )


def _chart_metadata(engine: Engine, charts: Path, end: date) -> dict[str, Any]:
    """Open value per stage over the days up to this run's last one, as a PNG file and inline."""
    first = max(utc_day(daily_partitions().start), end - timedelta(days=CHART_DAYS))
    days = [first + timedelta(days=i) for i in range((end - first).days)]
    with engine.connect() as conn:
        values = open_value_by_stage(conn, first, end)
    last = end - timedelta(days=1)
    title = f"Open pipeline by stage at the end of each day, {first} to {last} (UTC)"
    png = render_pipeline_chart(values, days, title)
    path = charts / f"open_pipeline_by_stage_{last}.png"
    write_bytes_atomically(path, png)
    inline = base64.b64encode(png).decode("ascii")
    return {
        "chart_file": dg.MetadataValue.path(str(path)),
        "chart": dg.MetadataValue.md(f"![{title}](data:image/png;base64,{inline})"),
    }


def _materialize_pipeline(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, exports: ExportDirectory
) -> dg.MaterializeResult[None]:
    started = time.monotonic()
    window = context.partition_time_window  # the whole range in a single-run backfill
    start, end = utc_day(window.start), utc_day(window.end)
    engine = warehouse.get_engine()
    stats = replace_pipeline(engine, start, end)
    before = stats.before_history()
    context.log.info(
        f"pipeline_daily: [{start}, {end}) UTC: {stats.rows_written:,} rows ({stats.rows_deleted:,} replaced); "
        f"{len(before):,} day(s) before the history began ({stats.first_history_day or 'no sync yet'})"
    )
    _partition_metadata(context, stats)
    metadata: dict[str, Any] = {
        "rows_written": stats.rows_written,
        "rows_replaced": stats.rows_deleted,
        "window_start": start.isoformat(),
        "window_end_exclusive": end.isoformat(),
        "days_before_history": len(before),
        "history_first_day": stats.first_history_day.isoformat() if stats.first_history_day else "",
    }
    metadata.update(_chart_metadata(engine, exports.charts_path, end))
    metadata["duration_seconds"] = round(time.monotonic() - started, 2)
    return dg.MaterializeResult(metadata=metadata)


def build_pipeline_daily_asset() -> dg.AssetsDefinition:
    """Partitioned from CRM_REPORTS_START_DATE: built when the definitions are."""

    @dg.asset(
        name=PIPELINE_DAILY,
        group_name=HISTORY_GROUP,
        partitions_def=daily_partitions(),
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[deal_history_asset, dg.AssetKey("accounts")],
        kinds={"sql"},
        description="Open deals (Prospecting, Negotiation) per UTC day, stage and region (the account's region "
        "now): open_deal_count and open_deal_value as of the end of the day, point in time from deal_history. A "
        "range is one run and one set-based replacement. Days that ended before the history began hold no rows.",
    )
    def pipeline_daily_asset(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, exports: ExportDirectory
    ) -> dg.MaterializeResult[None]:
        return _materialize_pipeline(context, warehouse, exports)

    return pipeline_daily_asset


def history_assets() -> list[dg.AssetsDefinition]:
    return [deal_history_asset, deal_stage_transitions_asset, build_pipeline_daily_asset()]
