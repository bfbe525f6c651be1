"""Per-window figures of the stored aggregations: what each partition holds, for its own metadata."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from crm_assets.reports.sql import stored_money_sum
from crm_assets.reports.windows import Cadence
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_aggregations

ACCOUNTS = CLEAN_TABLES["accounts"]


@dataclass(frozen=True)
class PreviewRow:
    account_id: int | None
    account_name: str | None
    region: str | None
    total_deal_size: Decimal
    deal_count: int


@dataclass(frozen=True)
class WindowFigures:
    """One stored window: its rows (one per account), deals and total, and its largest accounts."""

    window: date
    rows: int = 0
    deal_count: int = 0
    total_deal_size: Decimal = Decimal("0.00")
    largest: tuple[PreviewRow, ...] = ()


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _cents(value: object) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def window_figures(
    conn: sa.Connection, cadence: Cadence, start: date, end: date, preview_rows: int = 5
) -> dict[date, WindowFigures]:
    """Figures of every stored window in [start, end); windows without rows are absent."""
    a = deal_aggregations.c
    in_range = sa.and_(a.aggregation_type == cadence.value, a.aggregation_date >= start, a.aggregation_date < end)
    totals = conn.execute(
        sa.select(
            a.aggregation_date,
            sa.func.count(),
            sa.func.sum(a.deal_count),
            stored_money_sum(conn.dialect, a.total_deal_size),
        )
        .where(in_range)
        .group_by(a.aggregation_date)
    ).all()
    rank = (
        sa.func.row_number()
        .over(partition_by=a.aggregation_date, order_by=(a.total_deal_size.desc(), a.account_id))
        .label("rank")
    )
    ranked = (
        sa.select(a.aggregation_date, a.account_id, a.total_deal_size, a.deal_count, rank).where(in_range).subquery()
    )
    top = conn.execute(
        sa.select(
            ranked.c.aggregation_date,
            ranked.c.account_id,
            ACCOUNTS.c.account_name,
            ACCOUNTS.c.region,
            ranked.c.total_deal_size,
            ranked.c.deal_count,
        )
        .outerjoin(ACCOUNTS, ACCOUNTS.c.account_id == ranked.c.account_id)
        .where(ranked.c.rank <= preview_rows)
        .order_by(ranked.c.aggregation_date, ranked.c.rank)
    ).all()
    largest: dict[date, list[PreviewRow]] = {}
    for window, account, name, region, total, count in top:
        largest.setdefault(_as_date(window), []).append(PreviewRow(account, name, region, _cents(total), int(count)))
    return {
        _as_date(w): WindowFigures(_as_date(w), int(n), int(d or 0), _cents(t), tuple(largest.get(_as_date(w), [])))
        for w, n, d, t in totals
    }
