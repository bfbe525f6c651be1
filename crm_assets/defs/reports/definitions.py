"""The reporting capability: partitioned deal aggregations, their checks, jobs, schedules and refresh sensor.

Resources are bound by crm_assets.definitions (the key "warehouse").
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from crm_assets.defs.reports.assets import report_assets
from crm_assets.defs.reports.checks import REPORT_CHECKS
from crm_assets.defs.reports.jobs import REPORT_JOBS, REPORT_SCHEDULES
from crm_assets.defs.reports.sensors import deal_aggregations_refresh


def full_range(asset: dg.AssetsDefinition, now: datetime | None = None) -> tuple[str, str]:
    """First and last partition key of a report asset as of `now` (default: the current time)."""
    partitions = asset.partitions_def
    if partitions is None:
        raise ValueError(f"{asset.key.to_user_string()} is not partitioned")
    with dg.partition_loading_context(effective_dt=now or datetime.now(UTC)):
        first, last = partitions.get_first_partition_key(), partitions.get_last_partition_key()
    if first is None or last is None:
        raise ValueError(
            f"{asset.key.to_user_string()} has no complete partition yet: CRM_REPORTS_START_DATE is in the future"
        )
    return first, last


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=list(report_assets().values()),
        asset_checks=REPORT_CHECKS,
        jobs=list(REPORT_JOBS.values()),
        schedules=REPORT_SCHEDULES,
        sensors=[deal_aggregations_refresh],
    )
