"""Consistency of stored aggregations: with `deals`, and of weeks and months with their days.

Each comparison is one UNION ALL + GROUP BY over both sides, so only the mismatches leave the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from crm_assets.reports.sql import money_sum, window_start_of
from crm_assets.reports.windows import Cadence
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
        sa.literal(0).label("expected_total"),
        sa.literal(0).label("expected_count"),
        a.total_deal_size.label("stored_total"),
        a.deal_count.label("stored_count"),
    ).where(a.aggregation_type == cadence.value)


def _compare(conn: sa.Connection, expected: sa.Select[Any], stored: sa.Select[Any]) -> list[Mismatch]:
    both = sa.union_all(expected, stored).subquery("both_sides")
    sums = [sa.func.sum(both.c[n]) for n in ("expected_total", "expected_count", "stored_total", "stored_count")]
    query = (
        sa.select(both.c.window, both.c.account_id, *sums)
        .group_by(both.c.window, both.c.account_id)
        .having(sa.or_(sa.func.abs(sums[0] - sums[2]) >= _HALF_CENT, sums[1] != sums[3]))
        .order_by(both.c.window, both.c.account_id)
    )
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


def _money(value: object) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def mismatches_with_deals(conn: sa.Connection, cadence: Cadence) -> list[Mismatch]:
    """Every (window, account) where stored rows differ from `deals` as it is now (all windows)."""
    window = window_start_of(conn.dialect, cadence, DEALS.c.created_at, timestamptz=True)
    expected = sa.select(
        window.label("window"),
        DEALS.c.account_id.label("account_id"),
        money_sum(conn.dialect, DEALS.c.deal_size).label("expected_total"),
        sa.func.count().label("expected_count"),
        sa.literal(0).label("stored_total"),
        sa.literal(0).label("stored_count"),
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
            sa.func.sum(a.total_deal_size).label("expected_total"),
            sa.func.sum(a.deal_count).label("expected_count"),
            sa.literal(0).label("stored_total"),
            sa.literal(0).label("stored_count"),
        )
        .where(a.aggregation_type == Cadence.DAILY.value)
        .group_by(window, a.account_id)
    )
    return _compare(conn, expected, _stored(cadence))
