"""The open pipeline per UTC day, stage and region, point in time from deal_history: set-based, any range at once.

A version is open at the end of day D when it is live, in an open stage, started before D ended and
ended (if at all) after: it counts on the days [day(valid_from), day(valid_to)). Each version therefore
adds itself on one day and removes itself on another; a running sum of those changes per stage and
region gives every day's figures in one pass over the history, however long the range.

Days that ended before the history began (the first sync) are never computed: the history does not
know them, and inventing them from later versions would be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains.deals import DEAL_STAGES
from crm_assets.reports.sql import (
    cents_parts,
    date_in,
    money_from_cents,
    pg_advisory_xact_lock,
    stored_money_sum,
    window_start_of,
)
from crm_assets.reports.windows import Cadence, utc_midnight
from crm_assets.warehouse.bulk import create_stage, fill_stage
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.history import first_history_day
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_history, pipeline_daily

OPEN_STAGES = tuple(s for s in DEAL_STAGES if not s.startswith("Closed"))
ACCOUNTS = CLEAN_TABLES["accounts"]
_LOCK_KEY = 73_051_185  # any int4; the same in every writer of pipeline_daily
_COLUMNS = ["day", "deal_stage", "region", "open_deal_count", "open_deal_value"]


@dataclass(frozen=True)
class DayFigures:
    open_deal_count: int
    open_deal_value: Decimal


@dataclass
class PipelineStats:
    """What one replacement of the days [start, end) did."""

    start: date
    end: date
    first_history_day: date | None  # None: no history yet
    rows_deleted: int = 0
    rows_written: int = 0
    days: dict[date, DayFigures] = field(default_factory=dict)  # every computed day, zeros included

    def before_history(self) -> list[date]:
        """Days of the range the history does not reach."""
        first = self.first_history_day or self.end
        return [self.start + timedelta(days=i) for i in range(max(0, (min(first, self.end) - self.start).days))]


def _day_of(dialect: sa.Dialect, column: Any) -> Any:
    return window_start_of(dialect, Cadence.DAILY, column, timestamptz=True)


def _before(dialect: sa.Dialect, column: Any, day: date) -> Any:
    """`column` (timestamptz) is before the UTC midnight that starts `day`."""
    if is_postgres(dialect):
        return column < utc_midnight(day)
    return sa.type_coerce(column, sa.String) < day.isoformat()  # 'YYYY-MM-DD HH:MM:SS' text sorts as time


def _cents(dialect: sa.Dialect, column: Any, sign: int = 1) -> list[Any]:
    """Money as whole cents, in parts summed exactly and without overflow on both databases (`cents_parts`)."""
    return [(part if sign > 0 else -part).label(f"cents_{i}") for i, part in enumerate(cents_parts(dialect, column))]


def _changes(dialect: sa.Dialect, end: date) -> sa.Subquery:
    """Per day before `end`, stage and region: how the open count and value (cents) change at that day's end."""
    h = deal_history.c
    counted = [
        h.is_deleted.is_(False),
        h.deal_stage.in_(OPEN_STAGES),
        sa.or_(h.valid_to.is_(None), h.valid_to > h.valid_from),
    ]
    opens = sa.select(
        _day_of(dialect, h.valid_from).label("day"),
        h.deal_stage,
        h.account_id,
        sa.literal(1).label("n"),
        *_cents(dialect, h.deal_size),
    ).where(*counted, _before(dialect, h.valid_from, end))
    closes = sa.select(
        _day_of(dialect, h.valid_to).label("day"),
        h.deal_stage,
        h.account_id,
        sa.literal(-1).label("n"),
        *_cents(dialect, h.deal_size, sign=-1),
    ).where(*counted, h.valid_to.is_not(None), _before(dialect, h.valid_to, end))
    events = sa.union_all(opens, closes).subquery("events")
    return (
        sa.select(
            events.c.day,
            events.c.deal_stage,
            ACCOUNTS.c.region,
            sa.func.sum(events.c.n).label("n"),
            *(sa.func.sum(c).label(c.name) for c in events.c if c.name.startswith("cents_")),
        )
        .select_from(events.outerjoin(ACCOUNTS, ACCOUNTS.c.account_id == events.c.account_id))
        .group_by(events.c.day, events.c.deal_stage, ACCOUNTS.c.region)
        .subquery("changes")
    )


def pipeline_select(dialect: sa.Dialect, days: sa.Table, end: date) -> sa.Select[Any]:
    """(day, stage, region, open count, open value) for each day listed in `days` (all before `end`)."""
    changes = _changes(dialect, end)
    group = [changes.c.deal_stage, changes.c.region]
    running = sa.select(
        changes.c.day,
        *group,
        sa.func.sum(changes.c.n).over(partition_by=group, order_by=changes.c.day).label("n"),
        *(
            sa.func.sum(c).over(partition_by=group, order_by=changes.c.day).label(c.name)
            for c in changes.c
            if c.name.startswith("cents_")
        ),
        sa.func.lead(changes.c.day).over(partition_by=group, order_by=changes.c.day).label("next_day"),
    ).subquery("running")
    # Each day takes the running totals of the last change on or before it.
    holds = sa.and_(running.c.day <= days.c.day, sa.or_(running.c.next_day.is_(None), running.c.next_day > days.c.day))
    value = money_from_cents(dialect, [c for c in running.c if c.name.startswith("cents_")])
    return (
        sa.select(days.c.day, running.c.deal_stage, running.c.region, running.c.n, value)
        .select_from(days.join(running, holds))
        .where(running.c.n > 0)
    )


def replace_pipeline(engine: Engine, start: date, end: date) -> PipelineStats:
    """Make pipeline_daily's rows for the days [start, end) match deal_history, in one transaction."""
    if start >= end:
        raise ValueError(f"empty range of days [{start}, {end})")
    with engine.begin() as conn:
        pg_advisory_xact_lock(conn, _LOCK_KEY, 0)  # overlapping runs would interleave delete and insert
        stats = PipelineStats(start, end, first_history_day(conn))
        in_range = date_in(pipeline_daily.c.day, start, end)
        stats.rows_deleted = max(conn.execute(sa.delete(pipeline_daily).where(in_range)).rowcount or 0, 0)
        if stats.first_history_day is None or stats.first_history_day >= end:
            return stats
        first = max(start, stats.first_history_day)
        days = create_stage(conn, pipeline_daily, ["day"], primary_key=["day"])
        fill_stage(conn, days, _day_frame(first, end))
        conn.execute(pipeline_daily.insert().from_select(_COLUMNS, pipeline_select(conn.dialect, days, end)))
        stats.days = {d: DayFigures(0, Decimal("0.00")) for d in _dates(first, end)}
        stats.days |= read_day_totals(conn, first, end)
        stats.rows_written = int(
            conn.execute(sa.select(sa.func.count()).select_from(pipeline_daily).where(in_range)).scalar_one()
        )
    return stats


def _dates(first: date, end: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((end - first).days)]


def _day_frame(first: date, end: date) -> Any:
    import polars as pl

    return pl.DataFrame({"day": _dates(first, end)}, schema={"day": pl.Date})


def read_day_totals(conn: sa.Connection, start: date, end: date) -> dict[date, DayFigures]:
    """Open count and value per day of [start, end) from the stored rows (days without rows are absent)."""
    p = pipeline_daily.c
    query = (
        sa.select(p.day, sa.func.sum(p.open_deal_count), stored_money_sum(conn.dialect, p.open_deal_value))
        .where(date_in(p.day, start, end))
        .group_by(p.day)
    )
    return {_date(d): DayFigures(int(n), _money(v)) for d, n, v in conn.execute(query)}


def read_pipeline(conn: sa.Connection, start: date, end: date) -> list[tuple[date, str, str | None, int, Decimal]]:
    """Stored rows of [start, end): (day, stage, region, open count, open value), ordered."""
    p = pipeline_daily.c
    query = (
        sa.select(p.day, p.deal_stage, p.region, p.open_deal_count, p.open_deal_value)
        .where(date_in(p.day, start, end))
        .order_by(p.day, p.deal_stage, p.region)
    )
    return [(_date(d), s, r, int(n), _money(v)) for d, s, r, n, v in conn.execute(query)]


def _date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))
