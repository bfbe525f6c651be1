"""Dialect-specific SQL expressions for UTC windows and exact money sums (PostgreSQL and SQLite)."""

from __future__ import annotations

from collections.abc import Sequence
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


# SQLite adds cents in two parts, whole billions of cents and the rest: one 64-bit sum of cents fails the
# statement ("integer overflow") past 92 quadrillion, ten of the largest deals; each part holds billions.
_CENTS_SPLIT = 10**9


def cents_parts(dialect: sa.Dialect, column: Any) -> tuple[Any, ...]:
    """Money (NULL as 0) as whole cents, in parts that SUM() adds exactly and without overflow: one NUMERIC on
    PostgreSQL; on SQLite, which keeps NUMERIC as binary floats, two integers (see `_CENTS_SPLIT`)."""
    if is_postgres(dialect):
        return (sa.func.coalesce(column, 0) * 100,)
    cents = sa.cast(sa.func.round(sa.func.coalesce(column, 0) * 100), sa.Integer)
    # SQLite's integer / truncates and % keeps the dividend's sign: billions * 10^9 + rest = cents, also below 0.
    return cents.op("/")(_CENTS_SPLIT), cents.op("%")(_CENTS_SPLIT)


def money_from_cents(dialect: sa.Dialect, parts: Sequence[Any]) -> Any:
    """Money from (sums of) `cents_parts`."""
    if is_postgres(dialect):
        return parts[0] / 100
    billions, rest = parts
    return (billions * float(_CENTS_SPLIT) + rest) / 100.0


def money_sum(dialect: sa.Dialect, column: Any) -> Any:
    """COALESCE(SUM(column), 0), exact to the cent on both databases (on SQLite up to about 16 digits)."""
    if is_postgres(dialect):
        return sa.func.coalesce(sa.func.sum(column), 0)
    return money_from_cents(dialect, [sa.func.coalesce(sa.func.sum(p), 0) for p in cents_parts(dialect, column)])


def stored_money_sum(dialect: sa.Dialect, column: Any) -> Any:
    """SUM() of a stored money column. SQLite stores a whole amount as an integer, and its SUM() of integers
    fails the statement past 64 bits ("integer overflow"): there TOTAL(), a float sum (0.0, not NULL, without
    rows)."""
    if is_postgres(dialect):
        return sa.func.sum(column)
    return sa.func.total(column, type_=column.type)


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
