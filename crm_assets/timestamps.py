"""Freshsales timestamps: ISO-8601 with a numeric offset or Z, compared and stored as UTC instants."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values (SQLite hands them back) are taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_instant(value: object) -> datetime | None:
    """A timestamp (or date) string as an aware UTC datetime; None when it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return as_utc(datetime.fromisoformat(value.strip()))
    except (ValueError, OverflowError):  # year 1 or 9999 with an offset leaves datetime's range
        return None
