"""Consistency of stored aggregations: with `deals`, and of weeks and months with their days.

Each comparison is one statement over both grouped sides, so only the mismatches leave the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from crm_assets.reports.sql import money_sum, stored_money_sum, window_start_of
from crm_assets.reports.windows import Cadence
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_aggregations

DEALS = CLEAN_TABLES["deals"]
_HALF_CENT = 0.005


@dataclass(frozen=True)
class Mismatch:
    """One (window, account) whose stored figures differ from the expected ones."""

    window: date
    account_id: int | None
    expected_total: Decimal
    expected_count: int
    stored_total: Decimal
    stored_count: int


def _stored(cadence: Cadence) -> sa.Select[Any]:
    a = deal_aggregations.c
    return sa.select(
        a.aggregation_date.label("window"),
        a.account_id.label("account_id"),
        a.total_deal_size.label("total"),
        a.deal_count.label("count"),
    ).where(a.aggregation_type == cadence.value)


def _compare(conn: sa.Connection, expected: sa.Select[Any], stored: sa.Select[Any]) -> list[Mismatch]:
    """The (window, account) pairs whose figures differ, a side without the pair counting as zero."""
    pairs = _full_join if is_postgres(conn) else _union_grouped
    query = pairs(expected.subquery("expected"), stored.subquery("stored"))
    return [
        Mismatch(
            window=w if isinstance(w, date) else date.fromisoformat(str(w)),
            account_id=None if acc is None else int(acc),
            expected_total=_money(et),
            expected_count=int(ec),
            stored_total=_money(st),
            stored_count=int(sc),
        )
        for w, acc, et, ec, st, sc in conn.execute(query)
    ]


def _full_join(want: sa.Subquery, have: sa.Subquery) -> sa.Select[Any]:
    """PostgreSQL: one hash join of the two grouped sides (half the time of grouping their union)."""
    same_pair = sa.and_(want.c.window == have.c.window, want.c.account_id == have.c.account_id)
    want_total, want_count, have_total, have_count = (
        sa.func.coalesce(c, 0) for c in (want.c.total, want.c.count, have.c.total, have.c.count)
    )
    window = sa.func.coalesce(want.c.window, have.c.window)
    account = sa.func.coalesce(want.c.account_id, have.c.account_id)
    return (
        sa.select(window, account, want_total, want_count, have_total, have_count)
        .select_from(want.join(have, same_pair, full=True))
        .where(sa.or_(sa.func.abs(want_total - have_total) >= _HALF_CENT, want_count != have_count))
        .order_by(window, account)
    )


def _union_grouped(want: sa.Subquery, have: sa.Subquery) -> sa.Select[Any]:
    """SQLite: group the union of both sides. It has no hash join, so a FULL JOIN of two subqueries
    would scan one side once per row of the other."""
    zero = sa.literal(0)
    both = sa.union_all(
        sa.select(
            want.c.window,
            want.c.account_id,
            want.c.total.label("want_total"),
            want.c.count.label("want_count"),
            zero.label("have_total"),
            zero.label("have_count"),
        ),
        sa.select(have.c.window, have.c.account_id, zero, zero, have.c.total, have.c.count),
    ).subquery("both_sides")
    window, account = both.c.window, both.c.account_id
    # TOTAL() for money: a whole amount is stored as an integer, whose SUM() fails past 64 bits.
    want_total, want_count, have_total, have_count = (
        (sa.func.total if n.endswith("_total") else sa.func.sum)(both.c[n])
        for n in ("want_total", "want_count", "have_total", "have_count")
    )
    return (
        sa.select(window, account, want_total, want_count, have_total, have_count)
        .group_by(window, account)
        .having(sa.or_(sa.func.abs(want_total - have_total) >= _HALF_CENT, want_count != have_count))
        .order_by(window, account)
    )


def _money(value: object) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def mismatches_with_deals(conn: sa.Connection, cadence: Cadence) -> list[Mismatch]:
    """Every (window, account) where stored rows differ from `deals` as it is now (all windows)."""
    window = window_start_of(conn.dialect, cadence, DEALS.c.created_at, timestamptz=True)
    expected = sa.select(
        window.label("window"),
        DEALS.c.account_id.label("account_id"),
        money_sum(conn.dialect, DEALS.c.deal_size).label("total"),
        sa.func.count().label("count"),
    ).group_by(window, DEALS.c.account_id)
    return _compare(conn, expected, _stored(cadence))


def mismatches_with_days(conn: sa.Connection, cadence: Cadence) -> list[Mismatch]:
    """Every (window, account) of a weekly or monthly row that differs from the sum of its daily rows."""
    if cadence is Cadence.DAILY:
        raise ValueError("daily rows are the base: compare weekly or monthly rows with them")
    a = deal_aggregations.c
    window = window_start_of(conn.dialect, cadence, a.aggregation_date, timestamptz=False)
    expected = (
        sa.select(
            window.label("window"),
            a.account_id.label("account_id"),
            stored_money_sum(conn.dialect, a.total_deal_size).label("total"),
            sa.func.sum(a.deal_count).label("count"),
        )
        .where(a.aggregation_type == Cadence.DAILY.value)
        .group_by(window, a.account_id)
    )
    return _compare(conn, expected, _stored(cadence))
