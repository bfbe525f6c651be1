"""Dialect-specific SQL expressions for UTC windows and exact money sums (PostgreSQL and SQLite)."""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa

from crm_assets.reports.windows import Cadence, utc_midnight
from crm_assets.warehouse.dialect import is_postgres

_PG_UNITS = {Cadence.DAILY: "day", Cadence.WEEKLY: "week", Cadence.MONTHLY: "month"}  # date_trunc('week') = Monday
# SQLite date modifiers: back 6 days then forward to the next Monday ('weekday 1') lands on the ISO week's Monday.
_SQLITE_MODIFIERS: dict[Cadence, tuple[str, ...]] = {
    Cadence.DAILY: (),
    Cadence.WEEKLY: ("-6 days", "weekday 1"),
    Cadence.MONTHLY: ("start of month",),
}


def window_start_of(dialect: sa.Dialect, cadence: Cadence, column: Any, *, timestamptz: bool) -> Any:
    """First day (UTC) of the `cadence` window holding `column`, a timestamptz or a DATE column."""
    if is_postgres(dialect):
        # timezone('UTC', ts) gives the UTC wall time, whatever the session's TimeZone is.
        local = sa.func.timezone("UTC", column) if timestamptz else sa.cast(column, sa.TIMESTAMP())
        return sa.cast(sa.func.date_trunc(_PG_UNITS[cadence], local), sa.Date)
    # SQLite: UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'. Window by its date part: date() on the whole value
    # rounds to milliseconds, which would move 23:59:59.9995 into the next day.
    day = sa.func.substr(column, 1, 10)
    modifiers = _SQLITE_MODIFIERS[cadence]
    return sa.func.date(day, *(sa.literal(m) for m in modifiers)) if modifiers else day


def money_sum(dialect: sa.Dialect, column: Any) -> Any:
    """COALESCE(SUM(column), 0), exact to the cent on both databases."""
    if is_postgres(dialect):
        return sa.func.coalesce(sa.func.sum(column), 0)
    # SQLite keeps NUMERIC as binary floats: add whole cents as integers, then scale back once.
    cents = sa.cast(sa.func.round(column * 100), sa.Integer)
    return sa.func.coalesce(sa.func.sum(cents), 0) / 100.0


def created_in(dialect: sa.Dialect, column: Any, start: date, end: date) -> Any:
    """`column` (timestamptz) falls in the UTC days [start, end)."""
    if is_postgres(dialect):
        return sa.and_(column >= utc_midnight(start), column < utc_midnight(end))
    # Text starting 'YYYY-MM-DD' compares with a bare date exactly as its day does, and uses the index.
    text = sa.type_coerce(column, sa.String)
    return sa.and_(text >= start.isoformat(), text < end.isoformat())


def date_in(column: Any, start: date, end: date) -> Any:
    return sa.and_(column >= start, column < end)


def pg_advisory_xact_lock(conn: sa.Connection, key: int, sub: int) -> None:
    """Serialise writers of the same rows until the transaction ends (PostgreSQL only)."""
    if is_postgres(conn):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, :s)"), {"k": key, "s": sub})
