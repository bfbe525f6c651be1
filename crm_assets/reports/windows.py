"""Reporting windows in UTC: days, ISO weeks (Monday start) and calendar months, keyed by their first day."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum


class Cadence(StrEnum):
    """The `aggregation_type` stored in deal_aggregations."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


def window_start(day: date, cadence: Cadence) -> date:
    """First day of the window holding `day`."""
    if cadence is Cadence.DAILY:
        return day
    if cadence is Cadence.WEEKLY:
        return day - timedelta(days=day.weekday())  # weekday(): Monday is 0
    return day.replace(day=1)


def next_window(start: date, cadence: Cadence) -> date:
    """First day of the window after the one starting on `start`."""
    if cadence is Cadence.DAILY:
        return start + timedelta(days=1)
    if cadence is Cadence.WEEKLY:
        return start + timedelta(days=7)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def windows_touched(days: Iterable[date], cadence: Cadence) -> list[date]:
    """Sorted first days of the windows holding any of `days`."""
    return sorted({window_start(d, cadence) for d in days})


def contiguous_runs(starts: Sequence[date], cadence: Cadence) -> list[tuple[date, date]]:
    """Sorted window starts batched into (first, last) runs of adjacent windows."""
    runs: list[tuple[date, date]] = []
    for start in sorted(set(starts)):
        if runs and next_window(runs[-1][1], cadence) == start:
            runs[-1] = (runs[-1][0], start)
        else:
            runs.append((start, start))
    return runs


def utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def utc_day(moment: datetime) -> date:
    """The UTC date of a window boundary; boundaries are always UTC midnights."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive values are UTC throughout the warehouse
    moment = moment.astimezone(UTC)
    if moment.time() != time.min:
        raise ValueError(f"window boundary {moment.isoformat()} is not a UTC midnight")
    return moment.date()


def shift_months(month: date, count: int) -> date:
    """The first day of the month `count` months after (or before, when negative) `month`'s."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def months_between(first: date, last: date) -> list[date]:
    """First days of the months from `first`'s to `last`'s, inclusive."""
    months = [first.replace(day=1)]
    while months[-1] < last.replace(day=1):
        months.append(shift_months(months[-1], 1))
    return months
