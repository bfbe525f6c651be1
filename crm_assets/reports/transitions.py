"""Stage changes derived from deal_history, set-based: one row per change of a deal's stage.

Consecutive live versions of a deal whose stages differ make a transition at the later version's
valid_from. The time spent in `from_stage` runs from the previous transition (which entered it) to this
one; for a deal's first transition it is unknown, because the stage was entered before the history began.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.reports.sql import is_postgres
from crm_assets.warehouse.schema import deal_history, deal_stage_transitions

_COLUMNS = ["deal_id", "from_stage", "to_stage", "changed_at", "days_in_from_stage"]
_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class TransitionStats:
    transitions: int
    deals: int
    median_days_in_stage: dict[str, float]  # from_stage -> median days, where known
    conversions: dict[str, int]  # "from -> to" -> how many


def _days_between(dialect: sa.Dialect, later: Any, earlier: Any) -> Any:
    if is_postgres(dialect):
        return sa.func.extract("epoch", later - earlier) / _SECONDS_PER_DAY
    return sa.func.julianday(later) - sa.func.julianday(earlier)


def transitions_select(dialect: sa.Dialect) -> sa.Select[Any]:
    h = deal_history.c
    ordered = (h.valid_from, h.id)
    live = (
        sa.select(
            h.deal_id,
            h.deal_stage,
            h.valid_from,
            sa.func.lag(h.deal_stage).over(partition_by=h.deal_id, order_by=ordered).label("previous_stage"),
        )
        .where(h.is_deleted.is_(False), h.deal_stage.is_not(None))
        .subquery("live_versions")
    )
    changes = (
        sa.select(
            live.c.deal_id,
            live.c.previous_stage.label("from_stage"),
            live.c.deal_stage.label("to_stage"),
            live.c.valid_from.label("changed_at"),
        )
        .where(live.c.previous_stage.is_not(None), live.c.previous_stage != live.c.deal_stage)
        .subquery("changes")
    )
    entered = sa.func.lag(changes.c.changed_at).over(partition_by=changes.c.deal_id, order_by=changes.c.changed_at)
    return sa.select(
        changes.c.deal_id,
        changes.c.from_stage,
        changes.c.to_stage,
        changes.c.changed_at,
        _days_between(dialect, changes.c.changed_at, entered),
    )


def replace_transitions(engine: Engine) -> TransitionStats:
    """Rebuild deal_stage_transitions from deal_history in one transaction."""
    with engine.begin() as conn:
        conn.execute(sa.delete(deal_stage_transitions))
        insert = deal_stage_transitions.insert().from_select(_COLUMNS, transitions_select(conn.dialect))
        conn.execute(insert)
        return transition_stats(conn)


def transition_stats(conn: sa.Connection) -> TransitionStats:
    t = deal_stage_transitions.c
    count, deals = conn.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(t.deal_id)))).one()
    conversions = {
        f"{a} -> {b}": int(n)
        for a, b, n in conn.execute(
            sa.select(t.from_stage, t.to_stage, sa.func.count())
            .group_by(t.from_stage, t.to_stage)
            .order_by(t.from_stage, t.to_stage)
        )
    }
    return TransitionStats(int(count), int(deals), _median_days(conn), conversions)


def _median_days(conn: sa.Connection) -> dict[str, float]:
    t = deal_stage_transitions.c
    known = t.days_in_from_stage.is_not(None)
    if is_postgres(conn.dialect):
        middle = sa.func.percentile_cont(0.5).within_group(t.days_in_from_stage)
        rows = conn.execute(sa.select(t.from_stage, middle).where(known).group_by(t.from_stage)).all()
        return {stage: round(float(days), 2) for stage, days in rows}
    # SQLite has no percentile: the per-stage values stream out ordered, one stage in memory at a time.
    medians: dict[str, float] = {}
    values: list[float] = []
    current: str | None = None
    query = sa.select(t.from_stage, t.days_in_from_stage).where(known).order_by(t.from_stage)
    for stage, days in conn.execute(query):
        if stage != current and current is not None:
            medians[current] = round(median(values), 2)
            values = []
        current = stage
        values.append(float(days))
    if current is not None:
        medians[current] = round(median(values), 2)
    return medians
