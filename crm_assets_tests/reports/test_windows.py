"""Window arithmetic: ISO weeks from Monday, calendar months, leap days, batching into ranges."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from crm_assets.reports.windows import (
    Cadence,
    contiguous_runs,
    months_between,
    next_window,
    shift_months,
    utc_day,
    window_start,
    windows_touched,
)


@pytest.mark.parametrize(
    ("day", "cadence", "start"),
    [
        (date(2024, 3, 10), Cadence.WEEKLY, date(2024, 3, 4)),  # Sunday ends the ISO week
        (date(2024, 3, 11), Cadence.WEEKLY, date(2024, 3, 11)),  # Monday starts the next
        (date(2025, 1, 1), Cadence.WEEKLY, date(2024, 12, 30)),  # a week across New Year
        (date(2024, 2, 29), Cadence.MONTHLY, date(2024, 2, 1)),
        (date(2024, 2, 29), Cadence.DAILY, date(2024, 2, 29)),
        (date(2023, 12, 31), Cadence.MONTHLY, date(2023, 12, 1)),
    ],
)
def test_window_start(day: date, cadence: Cadence, start: date) -> None:
    assert window_start(day, cadence) == start


@pytest.mark.parametrize(
    ("start", "cadence", "following"),
    [
        (date(2024, 2, 28), Cadence.DAILY, date(2024, 2, 29)),
        (date(2024, 12, 30), Cadence.WEEKLY, date(2025, 1, 6)),
        (date(2024, 12, 1), Cadence.MONTHLY, date(2025, 1, 1)),
        (date(2024, 1, 1), Cadence.MONTHLY, date(2024, 2, 1)),
    ],
)
def test_next_window(start: date, cadence: Cadence, following: date) -> None:
    assert next_window(start, cadence) == following


def test_windows_touched_and_contiguous_runs() -> None:
    days = [date(2024, 3, 12), date(2024, 3, 10), date(2024, 3, 11), date(2024, 5, 31), date(2024, 6, 1)]
    assert contiguous_runs(windows_touched(days, Cadence.DAILY), Cadence.DAILY) == [
        (date(2024, 3, 10), date(2024, 3, 12)),
        (date(2024, 5, 31), date(2024, 6, 1)),
    ]
    assert contiguous_runs(windows_touched(days, Cadence.WEEKLY), Cadence.WEEKLY) == [
        (date(2024, 3, 4), date(2024, 3, 11)),
        (date(2024, 5, 27), date(2024, 5, 27)),
    ]
    assert contiguous_runs(windows_touched(days, Cadence.MONTHLY), Cadence.MONTHLY) == [
        (date(2024, 3, 1), date(2024, 3, 1)),
        (date(2024, 5, 1), date(2024, 6, 1)),
    ]
    assert contiguous_runs([], Cadence.DAILY) == []


def test_months() -> None:
    assert shift_months(date(2024, 1, 15), -1) == date(2023, 12, 1)
    assert shift_months(date(2024, 11, 1), 2) == date(2025, 1, 1)
    assert months_between(date(2023, 11, 5), date(2024, 2, 29)) == [
        date(2023, 11, 1),
        date(2023, 12, 1),
        date(2024, 1, 1),
        date(2024, 2, 1),
    ]


def test_utc_day_accepts_only_midnights() -> None:
    assert utc_day(datetime(2024, 3, 11, tzinfo=UTC)) == date(2024, 3, 11)
    assert utc_day(datetime(2024, 3, 10, 18, tzinfo=timezone(timedelta(hours=-6)))) == date(2024, 3, 11)
    with pytest.raises(ValueError, match="not a UTC midnight"):
        utc_day(datetime(2024, 3, 11, 1, tzinfo=UTC))
