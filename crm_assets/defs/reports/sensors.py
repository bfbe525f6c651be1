"""Change-driven refresh: recompute exactly the partitions whose deals a sync or write-back touched."""

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import dagster as dg

from crm_assets.contracts import RANGE_END_TAG, RANGE_START_TAG, TOUCHED_DATES
from crm_assets.defs.reports.jobs import REPORT_JOBS
from crm_assets.defs.reports.partitions import PARTITIONS
from crm_assets.reports.windows import Cadence, contiguous_runs, utc_day, windows_touched

DEALS_KEY = dg.AssetKey("deals")
EVENTS_PER_TICK = 500  # a long backlog drains over a few ticks, each well inside the evaluation timeout


def touched_dates(metadata: Mapping[str, Any], log: Any = None) -> set[date]:
    """The UTC dates listed by one `deals` materialization (bad entries are logged and skipped)."""
    entry = metadata.get(TOUCHED_DATES)
    values = entry.value if isinstance(entry, dg.MetadataValue) else entry
    dates: set[date] = set()
    for value in values if isinstance(values, list) else []:
        try:
            dates.add(date.fromisoformat(str(value)))
        except ValueError:
            if log is not None:
                log.warning(f"ignoring touched date {value!r}: not YYYY-MM-DD")
    return dates


def _existing_windows(cadence: Cadence, windows: Iterable[date]) -> list[date]:
    """Windows that are partitions now: not before the start date, not the still-open current window."""
    partitions = PARTITIONS[cadence]
    first = utc_day(partitions.start)
    last_key = partitions.get_last_partition_key()
    if last_key is None:
        return []
    last = date.fromisoformat(last_key)
    return [w for w in windows if first <= w <= last]


def refresh_requests(dates: Iterable[date], cursor_id: int) -> list[dg.RunRequest]:
    """One run per contiguous range of touched partitions, per cadence."""
    dates = set(dates)
    requests: list[dg.RunRequest] = []
    for cadence, job in REPORT_JOBS.items():
        windows = _existing_windows(cadence, windows_touched(dates, cadence))
        for first, last in contiguous_runs(windows, cadence):
            run_key = f"{cadence.value}:{first}:{last}:{cursor_id}"
            if first == last:
                requests.append(dg.RunRequest(run_key=run_key, job_name=job.name, partition_key=first.isoformat()))
            else:
                tags = {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
                requests.append(dg.RunRequest(run_key=run_key, job_name=job.name, tags=tags))
    return requests


@dg.sensor(
    name="deal_aggregations_refresh",
    jobs=list(REPORT_JOBS.values()),
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each materialization of `deals` (sync or write-back), requests the daily, weekly and "
    "monthly partitions holding the touched created_at dates, batched into contiguous ranges.",
)
def deal_aggregations_refresh(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DEALS_KEY, after_storage_id=after), limit=EVENTS_PER_TICK, ascending=True
    ).records
    if not records:
        return dg.SkipReason("no new materialization of deals")
    dates: set[date] = set()
    for record in records:
        materialization = record.asset_materialization
        if materialization is not None:
            dates |= touched_dates(materialization.metadata, context.log)
    cursor_id = records[-1].storage_id
    requests = refresh_requests(dates, cursor_id)
    context.log.info(
        f"{len(records)} deals materialization(s), {len(dates)} touched date(s): {len(requests)} run(s) requested"
    )
    return dg.SensorResult(run_requests=requests, cursor=str(cursor_id))
