"""Computing and replacing deal aggregations: set-based statements for a whole range of windows at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.reports.sql import (
    created_in,
    date_in,
    money_sum,
    pg_advisory_xact_lock,
    stored_money_sum,
    window_start_of,
)
from crm_assets.reports.windows import Cadence
from crm_assets.warehouse.bulk import (
    analyze_stage,
    create_stage,
    restore_after_bulk_load,
    stages_dropped,
    suspend_for_bulk_load,
)
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_aggregations

DEALS = CLEAN_TABLES["deals"]
ACCOUNTS = CLEAN_TABLES["accounts"]
_LOCK_KEY = 73_051_184  # any int4; only has to be the same in every writer
_CADENCE_ORDER = list(Cadence)
# From a range this many days long on, the replacement inserts without per-row foreign-key checks and
# rebuilds the plain index after (PostgreSQL; see suspend_for_bulk_load).
BULK_INSERT_MIN_DAYS = 180
_COLUMNS = ["account_id", "aggregation_type", "aggregation_date", "total_deal_size", "deal_count"]


@dataclass(frozen=True)
class ReplaceStats:
    """What one replacement of the windows [start, end) did."""

    cadence: Cadence
    start: date
    end: date
    rows_deleted: int  # stored rows that differed from deals (or had no deals left)
    rows_inserted: int  # rows written: new, or replacing a deleted one
    rows_written: int  # rows the range holds now
    windows_with_deals: int
    deal_count: int
    total_deal_size: Decimal


def aggregation_select(dialect: sa.Dialect, cadence: Cadence, start: date, end: date) -> sa.Select[Any]:
    """Per account and window: (account_id, type, window start, total size, count) of deals in [start, end)."""
    window = window_start_of(dialect, cadence, DEALS.c.created_at, timestamptz=True).label("aggregation_date")
    return (
        sa.select(
            DEALS.c.account_id,
            sa.literal(cadence.value, sa.String).label("aggregation_type"),
            window,
            money_sum(dialect, DEALS.c.deal_size).label("total_deal_size"),
            sa.func.count().label("deal_count"),
        )
        .where(created_in(dialect, DEALS.c.created_at, start, end))
        .group_by(DEALS.c.account_id, window)
    )


def _in_range(cadence: Cadence, start: date, end: date) -> sa.ColumnElement[bool]:
    return sa.and_(
        deal_aggregations.c.aggregation_type == cadence.value,
        date_in(deal_aggregations.c.aggregation_date, start, end),
    )


def replace_aggregations(engine: Engine, cadence: Cadence, start: date, end: date) -> ReplaceStats:
    """Make the `cadence` rows of the windows in [start, end) match `deals`, in one transaction.

    `start` and `end` are window boundaries (UTC days); rows outside them are never touched. A range that
    already holds rows has only its differing rows rewritten: a refresh after a few deals changed touches
    a few rows, whatever the range.
    """
    if start >= end:
        raise ValueError(f"empty window [{start}, {end})")
    # Read before the transaction: the bulk path must take its locks before it reads. A stale answer
    # only costs speed; either path leaves the range matching `deals`.
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.exists().where(_in_range(cadence, start, end)))).scalar_one()
    with engine.begin() as conn:
        # Overlapping runs (a sensor range and a schedule tick) would otherwise race on the unique key.
        pg_advisory_xact_lock(conn, _LOCK_KEY, _CADENCE_ORDER.index(cadence))
        rewrite = _rewrite_differences if stored else _fill
        deleted, kept = rewrite(conn, cadence, start, end)
        written, windows, deals, total = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(sa.distinct(deal_aggregations.c.aggregation_date)),
                sa.func.coalesce(sa.func.sum(deal_aggregations.c.deal_count), 0),
                sa.func.coalesce(stored_money_sum(conn.dialect, deal_aggregations.c.total_deal_size), 0),
            ).where(_in_range(cadence, start, end))
        ).one()
    return ReplaceStats(
        cadence=cadence,
        start=start,
        end=end,
        rows_deleted=deleted,
        rows_inserted=int(written) - kept,
        rows_written=int(written),
        windows_with_deals=int(windows),
        deal_count=int(deals),
        total_deal_size=_cents(total),
    )


def _fill(conn: sa.Connection, cadence: Cadence, start: date, end: date) -> tuple[int, int]:
    """Delete the range and insert it whole (a first materialization); rows deleted, rows kept (none)."""
    # Before the delete: a big range locks accounts, then deal_aggregations, as a cascading delete does.
    restore = suspend_for_bulk_load(conn, deal_aggregations) if _is_large(conn, start, end) else []
    deleted = conn.execute(sa.delete(deal_aggregations).where(_in_range(cadence, start, end))).rowcount
    source = aggregation_select(conn.dialect, cadence, start, end)
    # In key order: the unique index then grows at its end instead of at random places.
    conn.execute(
        deal_aggregations.insert().from_select(
            _COLUMNS, source.order_by(source.selected_columns[0], source.selected_columns[2])
        )
    )
    restore_after_bulk_load(conn, restore)
    return max(deleted or 0, 0), 0


def _rewrite_differences(conn: sa.Connection, cadence: Cadence, start: date, end: date) -> tuple[int, int]:
    """Delete the stored rows of the range that differ from `deals` or are gone, insert the missing and
    changed ones; rows deleted, rows kept as they were."""
    # Accounts first, as a cascading delete from them takes its locks: an account deleted between
    # reading deals and inserting would otherwise fail the insert's foreign key (or deadlock).
    if is_postgres(conn):
        conn.execute(sa.text(f"LOCK TABLE {ACCOUNTS.name} IN SHARE MODE"))
    with stages_dropped(conn):
        fresh = create_stage(conn, deal_aggregations, _COLUMNS, primary_key=("account_id", "aggregation_date"))
        conn.execute(fresh.insert().from_select(_COLUMNS, aggregation_select(conn.dialect, cadence, start, end)))
        analyze_stage(conn, fresh)
        stored, new = deal_aggregations.c, fresh.c
        same_key = sa.and_(new.account_id == stored.account_id, new.aggregation_date == stored.aggregation_date)
        unchanged = sa.exists().where(
            same_key, new.total_deal_size == stored.total_deal_size, new.deal_count == stored.deal_count
        )
        in_range = _in_range(cadence, start, end)
        deleted = conn.execute(sa.delete(deal_aggregations).where(in_range, ~unchanged)).rowcount
        untouched = conn.execute(sa.select(sa.func.count()).select_from(deal_aggregations).where(in_range)).scalar_one()
        kept = sa.exists().where(stored.aggregation_type == cadence.value, same_key)
        missing = sa.select(*(new[c] for c in _COLUMNS)).where(~kept).order_by(new.account_id, new.aggregation_date)
        conn.execute(deal_aggregations.insert().from_select(_COLUMNS, missing))
    return max(deleted or 0, 0), int(untouched)


def _is_large(conn: sa.Connection, start: date, end: date) -> bool:
    """Whether the range is long enough that checking foreign keys row by row costs more than one join.

    Judged by the span, not by reading `deals`: the bulk path must lock accounts before any other table.
    """
    return is_postgres(conn) and (end - start).days >= BULK_INSERT_MIN_DAYS


def _cents(value: object) -> Decimal:
    """SQLite hands sums of NUMERIC back as floats; money leaves this module as cents-exact Decimal."""
    return Decimal(str(value)).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class AggregationRow:
    account_id: int
    aggregation_date: date
    total_deal_size: Decimal
    deal_count: int


def read_aggregations(
    conn: sa.Connection, cadence: Cadence, start: date | None = None, end: date | None = None
) -> list[AggregationRow]:
    """Stored rows of one cadence (optionally only windows in [start, end)), ordered by date then account."""
    query = sa.select(
        deal_aggregations.c.account_id,
        deal_aggregations.c.aggregation_date,
        deal_aggregations.c.total_deal_size,
        deal_aggregations.c.deal_count,
    ).where(deal_aggregations.c.aggregation_type == cadence.value)
    if start is not None:
        query = query.where(deal_aggregations.c.aggregation_date >= start)
    if end is not None:
        query = query.where(deal_aggregations.c.aggregation_date < end)
    query = query.order_by(deal_aggregations.c.aggregation_date, deal_aggregations.c.account_id)
    return [AggregationRow(int(a), d, _cents(t), int(c)) for a, d, t, c in conn.execute(query)]


def top_accounts(
    conn: sa.Connection, cadence: Cadence, start: date, end: date, limit: int = 5
) -> list[tuple[Any, ...]]:
    """(account_id, account_name, region, total, deals) of the largest totals in the range."""
    total = stored_money_sum(conn.dialect, deal_aggregations.c.total_deal_size)
    query = (
        sa.select(
            deal_aggregations.c.account_id,
            ACCOUNTS.c.account_name,
            ACCOUNTS.c.region,
            total,
            sa.func.sum(deal_aggregations.c.deal_count),
        )
        .join(ACCOUNTS, ACCOUNTS.c.account_id == deal_aggregations.c.account_id)
        .where(_in_range(cadence, start, end))
        .group_by(deal_aggregations.c.account_id, ACCOUNTS.c.account_name, ACCOUNTS.c.region)
        .order_by(total.desc(), deal_aggregations.c.account_id)
        .limit(limit)
    )
    return [(int(a), n, r, _cents(t), int(c)) for a, n, r, t, c in conn.execute(query)]
