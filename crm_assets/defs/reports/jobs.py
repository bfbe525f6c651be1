"""One partitioned job per cadence, and schedules built from them (after the 06:00 UTC crm_sync_daily)."""

from __future__ import annotations

import dagster as dg

from crm_assets.defs.reports.assets import asset_key, asset_name
from crm_assets.reports.windows import Cadence

SCHEDULE_HOUR_UTC = 7  # an hour after crm_sync_daily (06:00 UTC) so the day's deals are loaded


def build_job(cadence: Cadence) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{asset_name(cadence)}_job",
        selection=dg.AssetSelection.assets(asset_key(cadence)),
        description=f"The {cadence.value} deal aggregations and their checks; a partition range is one run.",
        tags={"dagster/max_retries": 1},
    )


REPORT_JOBS: dict[Cadence, dg.UnresolvedAssetJobDefinition] = {c: build_job(c) for c in Cadence}

_WHEN = {Cadence.DAILY: "every day", Cadence.WEEKLY: "every Monday", Cadence.MONTHLY: "on the 1st of each month"}

REPORT_SCHEDULES = [  # unresolved until Definitions binds the jobs
    dg.build_schedule_from_partitioned_job(
        job,
        name=f"{asset_name(cadence)}_schedule",
        hour_of_day=SCHEDULE_HOUR_UTC,
        minute_of_hour=0,
        description=f"The {cadence.value} partition that just ended, {_WHEN[cadence]} at "
        f"{SCHEDULE_HOUR_UTC:02d}:00 UTC (after crm_sync_daily).",
    )
    for cadence, job in REPORT_JOBS.items()
]
