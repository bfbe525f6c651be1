"""Jobs, the daily schedule and the change-driven refresh of the history assets.

A `deals` materialization names the earliest day its new versions change (HISTORY_CHANGED_FROM): the open
pipeline at the end of that day and every later one is recomputed, in one single-run range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg

from crm_assets.contracts import HISTORY_CHANGED_FROM, PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from crm_assets.defs.history.assets import (
    PIPELINE_DAILY_KEY,
    daily_partitions,
    deal_history_asset,
    deal_stage_transitions_asset,
)
from crm_assets.defs.reports.refresh import start_after_newest_deals
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
    selection=dg.AssetSelection.assets(PIPELINE_DAILY_KEY),
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


@dataclass(frozen=True)
class HistoryChanges:
    """What the `deals` materializations after a storage id changed in the history."""

    materializations: int
    earliest_day: date | None  # the earliest day whose open pipeline may have changed; None: no day
    cursor_id: int | None  # storage id of the newest one read


def history_changes_after(
    instance: dg.DagsterInstance, after: int | None, limit: int | None = EVENTS_PER_TICK, log: Any = None
) -> HistoryChanges:
    """The `deals` materializations after storage id `after` (at most `limit`; None: all), oldest first."""
    count, days, cursor = 0, list[date](), after
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=DEALS_KEY, after_storage_id=cursor),
            limit=min(limit - count, EVENTS_PER_TICK) if limit else EVENTS_PER_TICK,
            ascending=True,
        )
        for record in page.records:
            if record.asset_materialization is not None:
                day = changed_from(record.asset_materialization.metadata, log)
                days += [day] if day is not None else []
            cursor = record.storage_id
        count += len(page.records)
        if not page.has_more or not page.records or (limit and count >= limit):
            return HistoryChanges(count, min(days, default=None), cursor)


@dataclass(frozen=True)
class HistoryRun:
    """One run that brings the history assets up to date; `tags` pick its partition or range."""

    job_name: str
    tags: Mapping[str, str]

    def describe(self) -> str:
        if RANGE_START_TAG in self.tags:
            return f"{self.job_name} {self.tags[RANGE_START_TAG]} .. {self.tags[RANGE_END_TAG]}"
        return f"{self.job_name} {self.tags.get(PARTITION_TAG, '')}".strip()


def plan_history_runs(changes: HistoryChanges, *, from_day: date | None = None) -> list[HistoryRun]:
    """The history report and transitions once, then pipeline_daily from the earliest changed day (or
    `from_day`, whichever is earlier) to the last complete day. Nothing when nothing changed."""
    first = min((d for d in (changes.earliest_day, from_day) if d is not None), default=None)
    if not changes.materializations and first is None:
        return []
    runs = [HistoryRun(deal_history_job.name, {})]
    days = daily_partitions()
    last_key = days.get_last_partition_key()
    if first is None or last_key is None:
        return runs
    start, last = max(first, utc_day(days.start)), date.fromisoformat(last_key)
    if start > last:
        return runs
    if start == last:
        return [*runs, HistoryRun(pipeline_daily_job.name, {PARTITION_TAG: start.isoformat()})]
    return [*runs, HistoryRun(pipeline_daily_job.name, {RANGE_START_TAG: start.isoformat(), RANGE_END_TAG: last_key})]


@dg.sensor(
    name="deal_history_refresh",
    jobs=[deal_history_job, pipeline_daily_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each materialization of `deals`, reports on deal_history and rebuilds the stage "
    "transitions; when the deals clean step wrote versions, recomputes pipeline_daily from the earliest day "
    "they change to the last complete day. It starts from the newest `deals` materialization it finds.",
)
def deal_history_refresh(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    if not context.cursor:
        return start_after_newest_deals(context)
    changes = history_changes_after(context.instance, int(context.cursor), log=context.log)
    if not changes.materializations or changes.cursor_id is None:
        return dg.SkipReason("no new materialization of deals")
    runs = plan_history_runs(changes)
    context.log.info(
        f"{changes.materializations} deals materialization(s); history changed from "
        f"{changes.earliest_day or 'no day'}: {len(runs)} run(s) requested"
    )
    requests = [
        dg.RunRequest(run_key=f"{run.describe()}:{changes.cursor_id}", job_name=run.job_name, tags=dict(run.tags))
        for run in runs
    ]
    return dg.SensorResult(run_requests=requests, cursor=str(changes.cursor_id))
