"""Keeping deal_history: a type-2 version per change of a deal, written with the clean change that causes it.

The history is reconciled against `deals` for the keys a clean run (or a write-back) just decided, in
SQL and in the caller's transaction: a deal whose row differs from its open version gets a new version
(valid from the CRM's updated_at of the row, see below), a deal that left `deals` (deleted, rejected, orphaned)
gets a version marked `is_deleted`. Re-running on unchanged input finds nothing to add; a failed run
rolls back with the clean change.

A version closes at the CRM's timestamp of the change when the record itself changed (its updated_at
is later than the open version's start), else at the time the sync observed it (a deal orphaned by its
account's deletion or back from it keeps its own updated_at; a write-back that found the value already
set has no CRM timestamp for it). Versions never run backwards: a new version starts no earlier than the
one it closes, and later unless the clock that observes them went back.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from crm_assets.domains import Domain
from crm_assets.warehouse.bulk import analyze_stage, create_stage, is_empty, probing_joins
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.schema import CLEAN_TABLES, HISTORY_TRACKED_COLUMNS, RAW_TABLES, deal_history

HISTORY_DOMAIN = "deals"
DEALS = CLEAN_TABLES[HISTORY_DOMAIN]
RAW_DEALS = RAW_TABLES[HISTORY_DOMAIN]
VERSION_COLUMNS = ("deal_id", "crm_id", "valid_from", *HISTORY_TRACKED_COLUMNS, "is_deleted", "first_observed_at")


def record_versions(conn: sa.Connection, domain: Domain, affected: sa.Table, first: Any, last: Any) -> datetime | None:
    """After a clean run wrote the keys [first, last] of `affected`: version the deals that changed.

    For `deals` these are the decided deal_ids; for a domain `deals` refers to (accounts), the deals
    whose open version points at a decided key that is gone (the foreign key cascades the deletion).
    Returns the earliest valid_from written, or None when nothing changed. (A first load of an empty
    history calls `first_versions` once instead.)
    """
    column = affected.c[domain.business_key]
    in_range = column.between(first, last)
    if domain.name == HISTORY_DOMAIN:
        return reconcile(conn, sa.select(column).where(in_range))
    table = CLEAN_TABLES[domain.name]
    for fk in _foreign_keys_to(domain):
        gone = sa.select(column).where(in_range, ~sa.exists().where(table.c[fk.target_column] == column))
        referencing = sa.select(deal_history.c.deal_id).where(*_open_live(), deal_history.c[fk.column].in_(gone))
        return reconcile(conn, referencing)
    return None


def touches_history(domain: Domain) -> bool:
    """Whether a clean run of `domain` can change deal_history: the deals, or a domain they refer to."""
    return domain.name == HISTORY_DOMAIN or bool(_foreign_keys_to(domain))


def earliest(*moments: datetime | None) -> datetime | None:
    return min((m for m in moments if m is not None), default=None)


def record_write_back(conn: sa.Connection, domain: Domain, crm_id: int) -> datetime | None:
    """After a write-back changed a clean row: version the deal it belongs to."""
    if domain.name != HISTORY_DOMAIN:
        return None
    return reconcile(conn, sa.select(DEALS.c.deal_id).where(DEALS.c.crm_id == crm_id))


def _foreign_keys_to(domain: Domain) -> list[Any]:
    from crm_assets.domains import get_domain

    return [fk for fk in get_domain(HISTORY_DOMAIN).foreign_keys if fk.domain == domain.name]


def observation_time() -> datetime:
    """When this sync observes what it writes (the clock tests move)."""
    return datetime.now(UTC)


def reconcile(conn: sa.Connection, deal_ids: sa.Select[Any]) -> datetime | None:
    """Make the open versions of `deal_ids` match `deals`; returns the earliest valid_from written."""
    # Every join here has an index on its large side; left alone, the planner would rather read the whole
    # index of open versions than probe it once per changed deal, which costs more the longer the history.
    with probing_joins(conn):
        return _reconcile(conn, deal_ids)


def _reconcile(conn: sa.Connection, deal_ids: sa.Select[Any]) -> datetime | None:
    observed = sa.literal(observation_time(), deal_history.c.valid_from.type)
    keys = create_stage(conn, deal_history, ["deal_id"], primary_key=["deal_id"])
    conn.execute(keys.insert().from_select(["deal_id"], deal_ids.distinct()))
    if is_empty(conn, keys):
        return None
    analyze_stage(conn, keys)
    # Each new version, with the id of the open version it closes (NULL for a deal seen the first time).
    versions = create_stage(conn, deal_history, [*VERSION_COLUMNS, "id"])
    columns = [*VERSION_COLUMNS, "id"]
    conn.execute(versions.insert().from_select(columns, _changed_rows(conn, keys, observed)))
    conn.execute(versions.insert().from_select(columns, _departures(conn, keys, observed)))
    earliest = _as_utc(conn.execute(sa.select(sa.func.min(versions.c.valid_from))).scalar_one())
    if earliest is None:
        return None
    h, v = deal_history.c, versions.c
    conn.execute(sa.update(deal_history).where(h.id == v.id).values(valid_to=v.valid_from))
    conn.execute(deal_history.insert().from_select(VERSION_COLUMNS, sa.select(*(v[c] for c in VERSION_COLUMNS))))
    return earliest


def first_versions(conn: sa.Connection) -> datetime | None:
    """`reconcile` for an empty history (a first load): every row of `deals` starts a version, valid from
    its updated_at, as the migration that added the history seeded it. Straight in, in one statement: no
    version to close, none to compare with. Returns the earliest valid_from written."""
    d = DEALS.c
    observed = sa.literal(observation_time(), deal_history.c.first_observed_at.type)
    tracked = (d[c] for c in HISTORY_TRACKED_COLUMNS)
    rows = sa.select(d.deal_id, d.crm_id, d.updated_at, *tracked, sa.false(), observed)
    conn.execute(deal_history.insert().from_select(VERSION_COLUMNS, rows))
    return _as_utc(conn.execute(sa.select(sa.func.min(d.updated_at))).scalar_one())


def _open_live() -> list[sa.ColumnElement[bool]]:
    return [deal_history.c.valid_to.is_(None), deal_history.c.is_deleted.is_(False)]


def _not_before(moment: Any, start: Any) -> Any:
    """`moment`, or `start` when it is earlier: a new version never starts before the one it closes."""
    return sa.case((start > moment, start), else_=moment)


def _starts_at(updated_at: Any, open_from: Any, observed: Any) -> Any:
    """When a version replacing the one open since `open_from` starts: the CRM's updated_at if later, else
    the observation. An updated_at not after `open_from` dates no change since (a write-back that found the
    value already set, a deal back from a rejection, a CRM clock gone back): it would empty the closed version.
    """
    return sa.case((updated_at > open_from, updated_at), else_=_not_before(observed, open_from))


def _among(
    conn: sa.Connection, table: sa.Table, column: sa.ColumnElement[Any], keys: sa.Table
) -> tuple[sa.FromClause, sa.ColumnElement[bool]]:
    """`table`'s rows whose `column` is a staged key, as (source, condition), written for each planner.

    PostgreSQL: joined with the keys, which `probing_joins` has it drive from. SQLite: the keys as IN, so
    that it looks each key up rather than reading all of `table` (no statistics tell it which side is small).
    """
    if is_postgres(conn):
        return table.join(keys, keys.c.deal_id == column), sa.true()
    return table, column.in_(sa.select(keys.c.deal_id))


def _changed_rows(conn: sa.Connection, keys: sa.Table, observed: Any) -> sa.Select[Any]:
    """Rows of `deals` among the keys whose open version is missing, deleted or different."""
    open_version = deal_history.alias("open_version")
    d, h = DEALS.c, open_version.c
    same = sa.and_(
        h.is_deleted.is_(False),
        h.crm_id == d.crm_id,
        *(h[c].is_not_distinct_from(d[c]) for c in HISTORY_TRACKED_COLUMNS),
    )
    deals, chosen = _among(conn, DEALS, d.deal_id, keys)
    source = deals.outerjoin(open_version, sa.and_(h.deal_id == d.deal_id, h.valid_to.is_(None)))
    return (
        sa.select(
            d.deal_id,
            d.crm_id,
            sa.case((h.id.is_(None), d.updated_at), else_=_starts_at(d.updated_at, h.valid_from, observed)),
            *(d[c] for c in HISTORY_TRACKED_COLUMNS),
            sa.false(),
            sa.func.coalesce(h.first_observed_at, observed),
            h.id,
        )
        .select_from(source)
        .where(chosen, sa.or_(h.id.is_(None), sa.not_(same)))
    )


def _departures(conn: sa.Connection, keys: sa.Table, observed: Any) -> sa.Select[Any]:
    """A deletion version for each key whose open live version has no row in `deals` any more.

    On PostgreSQL the keys' range is stated on deal_history too: it then reads just those open versions
    (with their statistics stale in a big first load it would otherwise scan all of them once per chunk).
    """
    h, raw = deal_history.c, RAW_DEALS.c
    versions, chosen = _among(conn, deal_history, h.deal_id, keys)
    if is_postgres(conn):
        first, last = conn.execute(sa.select(sa.func.min(keys.c.deal_id), sa.func.max(keys.c.deal_id))).one()
        chosen = sa.and_(chosen, h.deal_id.between(first, last))
    return (
        sa.select(
            h.deal_id,
            h.crm_id,
            _starts_at(raw.updated_at, h.valid_from, observed),
            *(h[c] for c in HISTORY_TRACKED_COLUMNS),
            sa.true(),
            h.first_observed_at,
            h.id,
        )
        .select_from(versions.outerjoin(RAW_DEALS, raw.crm_id == h.crm_id))
        .where(*_open_live(), chosen, ~sa.exists().where(DEALS.c.deal_id == h.deal_id))
    )


def _as_utc(value: Any) -> datetime | None:
    """SQLite hands timestamps back naive (they are stored in UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def history_start(conn: sa.Connection) -> datetime | None:
    """When the history begins: the first time a sync observed any deal (None before the first sync)."""
    return _as_utc(conn.execute(sa.select(sa.func.min(deal_history.c.first_observed_at))).scalar_one())


def first_history_day(conn: sa.Connection) -> date | None:
    """The first UTC day whose end the history knows: the day of the first sync."""
    start = history_start(conn)
    return start.date() if start else None


def pipeline_changed_from(conn: sa.Connection, earliest_version: datetime | None) -> date | None:
    """The first day whose open pipeline new versions change: the day of the earliest one's valid_from,
    but not before the history began (no pipeline is computed for the days before)."""
    if earliest_version is None:
        return None
    began = first_history_day(conn)
    return max(earliest_version.date(), began) if began else earliest_version.date()


def current_version_mismatches(conn: sa.Connection, limit: int = 20) -> tuple[int, list[int]]:
    """(how many deals differ between `deals` and their current versions, some of their deal_ids)."""
    h, d = deal_history.c, DEALS.c
    current = sa.select(h.deal_id, h.crm_id, *(h[c] for c in HISTORY_TRACKED_COLUMNS)).where(*_open_live())
    rows = sa.select(d.deal_id, d.crm_id, *(d[c] for c in HISTORY_TRACKED_COLUMNS))
    # Each side's rows missing from the other (SQLite takes no parenthesised compound inside a compound).
    only_current, only_deals = sa.except_(current, rows).subquery(), sa.except_(rows, current).subquery()
    # UNION keeps each deal_id once; the window count is taken before LIMIT: one pass over both tables.
    differing = sa.union(sa.select(only_current.c.deal_id), sa.select(only_deals.c.deal_id)).subquery()
    first = conn.execute(
        sa.select(differing.c.deal_id, sa.func.count().over()).order_by(differing.c.deal_id).limit(max(limit, 1))
    ).all()
    count = int(first[0][1]) if first else 0
    return count, [int(deal_id) for deal_id, _ in first[:limit]]
