"""UTC partitions of the reports: days, ISO weeks starting Monday, calendar months."""

from __future__ import annotations

import os
from datetime import date

import dagster as dg

from crm_assets.reports.windows import Cadence

START_DATE_ENV = "CRM_REPORTS_START_DATE"
# Early enough for the demo data (about three years back from late 2026); set the variable for real data.
DEFAULT_START_DATE = "2023-01-01"


def reports_start_date() -> str:
    """CRM_REPORTS_START_DATE (YYYY-MM-DD), or 2023-01-01."""
    raw = (os.environ.get(START_DATE_ENV) or "").strip() or DEFAULT_START_DATE
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        raise ValueError(f"{START_DATE_ENV} must be a date like 2023-01-01, got {raw!r}") from None


def build_partitions(start_date: str) -> dict[Cadence, dg.TimeWindowPartitionsDefinition]:
    return {
        Cadence.DAILY: dg.DailyPartitionsDefinition(start_date=start_date, timezone="UTC"),
        Cadence.WEEKLY: dg.WeeklyPartitionsDefinition(start_date=start_date, day_offset=1, timezone="UTC"),
        Cadence.MONTHLY: dg.MonthlyPartitionsDefinition(start_date=start_date, timezone="UTC"),
    }


PARTITIONS = build_partitions(reports_start_date())
