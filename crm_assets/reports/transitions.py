"""Stage changes derived from deal_history, set-based: one row per change of a deal's stage.

A deal's stage moves are those of the CRM record behind it: consecutive live versions of one deal_id and
one crm_id whose stages differ make a transition at the later version's valid_from. Another record taking
the key (a duplicate winning it, records swapping keys, a new record after a deletion) moves no stage, and
the versions of other records or deletions in between do not break a record's chain: a record restored
under its key goes on from the stage it left with. The time spent in `from_stage` runs from the record's
previous transition under that key (which entered it) to this one; for its first transition it is unknown,
because the stage was entered before the history began or before the record held the key.

Versions are only ever added (a closed version changes no more than its valid_to, which transitions do not
read), so the table is kept up to date incrementally: the deals with versions newer than the last build
get their transitions recomputed; the rest stay. A record's chain never leaves its deal_id, so a deal's
transitions depend on its own versions only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import median
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.warehouse.bulk import analyze_stage, create_stage, stages_dropped, upsert_insert
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.schema import deal_history, deal_stage_transitions, derived_state

_COLUMNS = ["deal_id", "from_stage", "to_stage", "changed_at", "days_in_from_stage"]
_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class TransitionStats:
    transitions: int
    deals: int
    median_days_in_stage: dict[str, float]  # from_stage -> median days, where known
    conversions: dict[str, int]  # "from -> to" -> how many
    deals_recomputed: int | None = None  # None: the whole table was rebuilt


def _days_between(dialect: sa.Dialect, later: Any, earlier: Any) -> Any:
    if is_postgres(dialect):
        return sa.func.extract("epoch", later - earlier) / _SECONDS_PER_DAY
    return sa.func.julianday(later) - sa.func.julianday(earlier)


def transitions_select(dialect: sa.Dialect, deal_ids: sa.Select[Any] | None = None) -> sa.Select[Any]:
    """The transitions of every deal, or of the deals `deal_ids` selects."""
    h = deal_history.c
    ordered = (h.valid_from, h.id)
    chain = (h.deal_id, h.crm_id)  # one record under one key: another record holding the key moves no stage
    versions = sa.select(
        h.deal_id,
        h.crm_id,
        h.deal_stage,
        h.valid_from,
        sa.func.lag(h.deal_stage).over(partition_by=chain, order_by=ordered).label("previous_stage"),
    ).where(h.is_deleted.is_(False), h.deal_stage.is_not(None))
    if deal_ids is not None:
        versions = versions.where(h.deal_id.in_(deal_ids))
    live = versions.subquery("live_versions")
    changes = (
        sa.select(
            live.c.deal_id,
            live.c.crm_id,
            live.c.previous_stage.label("from_stage"),
            live.c.deal_stage.label("to_stage"),
            live.c.valid_from.label("changed_at"),
        )
        .where(live.c.previous_stage.is_not(None), live.c.previous_stage != live.c.deal_stage)
        .subquery("changes")
    )
    same_chain = (changes.c.deal_id, changes.c.crm_id)
    entered = sa.func.lag(changes.c.changed_at).over(partition_by=same_chain, order_by=changes.c.changed_at)
    return sa.select(
        changes.c.deal_id,
        changes.c.from_stage,
        changes.c.to_stage,
        changes.c.changed_at,
        _days_between(dialect, changes.c.changed_at, entered),
    )


def refresh_transitions(engine: Engine, rebuild: bool = False) -> TransitionStats:
    """Bring deal_stage_transitions up to date with deal_history in one transaction: recompute the deals
    with versions added since the last build; everything on the first build, when asked, or when the
    history is no longer the one the last build read (emptied or rewritten)."""
    with engine.begin() as conn:
        if is_postgres(conn):
            # One refresh at a time (two would both insert a deal's transitions); and versions committed
            # while this one reads would otherwise fall below the newest id it records.
            conn.execute(sa.text(f"LOCK TABLE {deal_stage_transitions.name} IN SHARE ROW EXCLUSIVE MODE"))
            conn.execute(sa.text(f"LOCK TABLE {deal_history.name} IN SHARE MODE"))
        built_through = None if rebuild else _built_through(conn)
        newest = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(deal_history.c.id), 0))).scalar_one())
        recomputed: int | None = None
        if built_through is None:
            conn.execute(sa.delete(deal_stage_transitions))
            conn.execute(deal_stage_transitions.insert().from_select(_COLUMNS, transitions_select(conn.dialect)))
        else:
            recomputed = _recompute_deals_since(conn, built_through) if newest > built_through else 0
        _record_built_through(conn, newest)
        stats = transition_stats(conn)
    return dataclasses.replace(stats, deals_recomputed=recomputed)


def _recompute_deals_since(conn: sa.Connection, built_through: int) -> int:
    """Replace the transitions of the deals with versions newer than `built_through`; how many deals."""
    h = deal_history.c
    with stages_dropped(conn):
        changed = create_stage(conn, deal_history, ["deal_id"], primary_key=["deal_id"])
        newer = sa.select(h.deal_id).where(h.id > built_through).distinct()
        conn.execute(changed.insert().from_select(["deal_id"], newer))
        count = conn.execute(sa.select(sa.func.count()).select_from(changed)).scalar_one()
        analyze_stage(conn, changed)
        deal_ids = sa.select(changed.c.deal_id)
        conn.execute(sa.delete(deal_stage_transitions).where(deal_stage_transitions.c.deal_id.in_(deal_ids)))
        insert = deal_stage_transitions.insert().from_select(_COLUMNS, transitions_select(conn.dialect, deal_ids))
        conn.execute(insert)
    return int(count)


def _version_mark(conn: sa.Connection, version_id: int) -> str:
    """What identifies the version with that id (its deal and valid_from); "" when there is none."""
    h = deal_history.c
    found = conn.execute(sa.select(h.deal_id, h.valid_from).where(h.id == version_id)).first()
    return "" if found is None else f"{found.deal_id}@{found.valid_from.isoformat()}"


def _built_through(conn: sa.Connection) -> int | None:
    """The newest version id the table reflects; None when it was never built or the history changed
    under it (versions are only added: the version it recorded last is still there, unchanged)."""
    state = derived_state.c
    query = sa.select(state.built_through, state.built_through_mark).where(
        state.table_name == deal_stage_transitions.name
    )
    recorded = conn.execute(query).first()
    if recorded is None or _version_mark(conn, recorded.built_through) != recorded.built_through_mark:
        return None
    return int(recorded.built_through)


def _record_built_through(conn: sa.Connection, newest: int) -> None:
    values = {
        "table_name": deal_stage_transitions.name,
        "built_through": newest,
        "built_through_mark": _version_mark(conn, newest),
        "updated_at": datetime.now(UTC),
    }
    insert = upsert_insert(conn, derived_state).values(**values)
    update = {k: v for k, v in values.items() if k != "table_name"}
    conn.execute(insert.on_conflict_do_update(index_elements=["table_name"], set_=update))


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
    if is_postgres(conn):
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
