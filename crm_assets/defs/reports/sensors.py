"""Change-driven refresh: recompute exactly the partitions whose deals a sync or write-back changed.

The planning is `refresh.plan_refresh`, shared with `crm-assets run`.
"""

import dagster as dg

from crm_assets.defs.reports.jobs import REPORT_JOBS
from crm_assets.defs.reports.refresh import deal_changes_after, plan_refresh, start_after_newest_deals
from crm_assets.resources import WarehouseResource

EVENTS_PER_TICK = 500  # a long backlog drains over a few ticks, each well inside the evaluation timeout


@dg.sensor(
    name="deal_aggregations_refresh",
    jobs=list(REPORT_JOBS.values()),
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each materialization of `deals` (sync or write-back), requests the daily, weekly and "
    "monthly partitions holding the touched created_at dates whose stored rows no longer match `deals`, "
    "batched into contiguous ranges. It starts from the newest `deals` materialization it finds.",
)
def deal_aggregations_refresh(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    if not context.cursor:
        return start_after_newest_deals(context)
    changes = deal_changes_after(context.instance, int(context.cursor), EVENTS_PER_TICK, context.log)
    if changes.cursor_id is None or changes.materializations == 0:
        return dg.SkipReason("no new materialization of deals")
    with warehouse.get_engine().connect() as conn:
        runs = plan_refresh(conn, changes.dates)
    context.log.info(
        f"{changes.materializations} deals materialization(s), {len(changes.dates)} touched date(s): "
        f"{len(runs)} run(s) requested" + (f" ({', '.join(r.describe() for r in runs[:10])})" if runs else "")
    )
    return dg.SensorResult(run_requests=[r.run_request(changes.cursor_id) for r in runs], cursor=str(changes.cursor_id))
