"""UTC partitions of the reports: days, ISO weeks starting Monday, calendar months."""

from __future__ import annotations

from functools import cache

import dagster as dg

from crm_assets import settings
from crm_assets.reports.windows import Cadence


def build_partitions(start_date: str) -> dict[Cadence, dg.TimeWindowPartitionsDefinition]:
    return {
        Cadence.DAILY: dg.DailyPartitionsDefinition(start_date=start_date, timezone="UTC"),
        Cadence.WEEKLY: dg.WeeklyPartitionsDefinition(start_date=start_date, day_offset=1, timezone="UTC"),
        Cadence.MONTHLY: dg.MonthlyPartitionsDefinition(start_date=start_date, timezone="UTC"),
    }


@cache
def report_partitions() -> dict[Cadence, dg.TimeWindowPartitionsDefinition]:
    """The partitions from CRM_REPORTS_START_DATE, read once per process (tests changing it clear the cache)."""
    return build_partitions(settings.reports_start_date())
