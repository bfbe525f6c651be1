"""Jobs, the daily schedule and the change-driven refresh of the history assets.

A `deals` materialization names the earliest day its new versions change (HISTORY_CHANGED_FROM): the open
pipeline at the end of that day and every later one is recomputed, in one single-run range.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

import dagster as dg

from crm_assets.contracts import HISTORY_CHANGED_FROM, RANGE_END_TAG, RANGE_START_TAG
from crm_assets.defs.history.assets import DAILY, deal_history_asset, deal_stage_transitions_asset, pipeline_daily_asset
from crm_assets.reports.windows import utc_day

DEALS_KEY = dg.AssetKey("deals")
EVENTS_PER_TICK = 500
SCHEDULE_HOUR_UTC = 7  # an hour after crm_sync_daily (06:00 UTC), with the reports

deal_history_job = dg.define_asset_job(
    "deal_history_job",
    selection=dg.AssetSelection.assets(deal_history_asset, deal_stage_transitions_asset),
    description="Report on deal_history (and check it against deals), rebuild deal_stage_transitions.",
    tags={"dagster/max_retries": 1},
)

pipeline_daily_job = dg.define_asset_job(
    "pipeline_daily_job",
    selection=dg.AssetSelection.assets(pipeline_daily_asset),
    description="The open pipeline per day, stage and region; a partition range is one run.",
    tags={"dagster/max_retries": 1},
)

pipeline_daily_schedule = dg.build_schedule_from_partitioned_job(
    pipeline_daily_job,
    name="pipeline_daily_schedule",
    hour_of_day=SCHEDULE_HOUR_UTC,
    minute_of_hour=0,
    description=f"The day that just ended, every day at {SCHEDULE_HOUR_UTC:02d}:00 UTC (after crm_sync_daily).",
)


def changed_from(metadata: Mapping[str, Any], log: Any = None) -> date | None:
    """The earliest day one `deals` materialization changed in the history (None: it changed none)."""
    entry = metadata.get(HISTORY_CHANGED_FROM)
    value = entry.value if isinstance(entry, dg.MetadataValue) else entry
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        if log is not None:
            log.warning(f"ignoring {HISTORY_CHANGED_FROM} {value!r}: not YYYY-MM-DD")
        return None


def pipeline_request(first_changed: date, cursor_id: int, last_key: str | None) -> dg.RunRequest | None:
    """One run over the complete days from `first_changed` to the last partition (None if there are none)."""
    if last_key is None:
        return None
    first, last = max(first_changed, utc_day(DAILY.start)), date.fromisoformat(last_key)
    if first > last:
        return None
    run_key = f"pipeline_daily:{first}:{last}:{cursor_id}"
    if first == last:
        return dg.RunRequest(run_key=run_key, job_name=pipeline_daily_job.name, partition_key=first.isoformat())
    tags = {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
    return dg.RunRequest(run_key=run_key, job_name=pipeline_daily_job.name, tags=tags)


@dg.sensor(
    name="deal_history_refresh",
    jobs=[deal_history_job, pipeline_daily_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each materialization of `deals`, reports on deal_history and rebuilds the stage "
    "transitions; when the deals clean step wrote versions, recomputes pipeline_daily from the earliest day "
    "they change to the last complete day.",
)
def deal_history_refresh(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DEALS_KEY, after_storage_id=after), limit=EVENTS_PER_TICK, ascending=True
    ).records
    if not records:
        return dg.SkipReason("no new materialization of deals")
    days = [
        day
        for record in records
        if record.asset_materialization is not None
        and (day := changed_from(record.asset_materialization.metadata, context.log)) is not None
    ]
    cursor_id = records[-1].storage_id
    requests = [dg.RunRequest(run_key=f"deal_history:{cursor_id}", job_name=deal_history_job.name)]
    if days and (pipeline := pipeline_request(min(days), cursor_id, DAILY.get_last_partition_key())):
        requests.append(pipeline)
    context.log.info(
        f"{len(records)} deals materialization(s); history changed from {min(days) if days else 'no day'}: "
        f"{len(requests)} run(s) requested"
    )
    return dg.SensorResult(run_requests=requests, cursor=str(cursor_id))
