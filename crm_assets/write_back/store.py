"""The write-back's warehouse side: candidate rows, the foreign-key check, row updates and the audit."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains import Domain, get_domain
from crm_assets.warehouse.history import record_write_back
from crm_assets.warehouse.locks import named_lock
from crm_assets.warehouse.raw import RawWriter, lock_domain
from crm_assets.warehouse.schema import CLEAN_TABLES, crm_update_audit
from crm_assets.write_back.model import (
    Action,
    ChangeOutcome,
    Status,
    UpdatePlan,
    UpdateRequestError,
    ValidatedUpdate,
)

_ID_CHUNK = 500  # bound parameters per IN list; far below SQLite's and PostgreSQL's limits


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _ID_CHUNK):
        yield ids[start : start + _ID_CHUNK]


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def write_back_lock(engine: Engine, domain: Domain, log: logging.Logger) -> Iterator[None]:
    """One write-back of a domain at a time, across processes, for as long as the block runs.

    Without it two write-backs of one record record their outcomes in the order they finish, not the
    order the CRM took their PUTs. Not the sync's domain lock: a sync need not wait for a write-back.
    """

    def waiting() -> None:
        log.info(f"waiting for another write-back of {domain.name} to finish")

    with named_lock(engine, f"write_back.{domain.name}", waiting):
        yield


def warehouse_candidates(engine: Engine, update: ValidatedUpdate) -> set[int]:
    """CRM ids of clean rows whose key equals the (typed) value."""
    table = CLEAN_TABLES[update.domain.name]
    query = sa.select(table.c.crm_id).where(table.c[update.key_column.name] == update.key_value)
    with engine.connect() as conn:
        return {int(crm_id) for crm_id in conn.execute(query).scalars()}


def rows_behind(engine: Engine, update: ValidatedUpdate, crm_ids: Sequence[int]) -> set[int]:
    """CRM ids of clean rows among `crm_ids` that do not hold the new value."""
    table = CLEAN_TABLES[update.domain.name]
    column = table.c[update.target.name]
    behind: set[int] = set()
    with engine.connect() as conn:
        for chunk in _chunks(crm_ids):
            query = sa.select(table.c.crm_id).where(
                table.c.crm_id.in_(chunk), column.is_distinct_from(update.new_value)
            )
            behind |= {int(crm_id) for crm_id in conn.execute(query).scalars()}
    return behind


def _has_rows(conn: sa.Connection, table: sa.Table, crm_ids: Sequence[int]) -> bool:
    for chunk in _chunks(crm_ids):
        if conn.execute(sa.select(sa.literal(1)).where(table.c.crm_id.in_(chunk)).limit(1)).first():
            return True
    return False


def check_foreign_keys(engine: Engine, update: ValidatedUpdate, crm_ids: Sequence[int]) -> None:
    """A new value pointing at a row the warehouse lacks would fail its update after the CRM write: refuse now."""
    table = CLEAN_TABLES[update.domain.name]
    for fk in update.domain.foreign_keys:
        if fk.column != update.target.name or update.new_value is None:
            continue
        target = CLEAN_TABLES[fk.domain]
        with engine.connect() as conn:
            if not _has_rows(conn, table, crm_ids):
                continue
            query = sa.select(sa.literal(1)).where(target.c[fk.target_column] == update.new_value).limit(1)
            if conn.execute(query).first() is None:
                raise UpdateRequestError(
                    f"update_value {update.request.update_value!r}: no {get_domain(fk.domain).name} row has "
                    f"{fk.target_column} = {update.new_value} in the warehouse, so the {update.domain.name} rows "
                    f"could not point to it; sync {fk.domain} first or check the value"
                )


def write_planned_audit(engine: Engine, plan: UpdatePlan, run_id: str) -> None:
    """One audit row per record before the first PUT: 'planned' (or 'skipped'), so a crash leaves a trace."""
    update, now = plan.update, _now()
    rows = [
        {
            "run_id": run_id,
            "domain": update.domain.name,
            "crm_id": change.crm_id,
            "field": update.target.name,
            "old_value": change.old_text,
            "new_value": change.new_text,
            "status": (Status.SKIPPED if change.action == Action.SKIP else Status.PLANNED).value,
            "error": None,
            "changed_at": now,
        }
        for change in plan.changes
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(sa.insert(crm_update_audit), rows)


def _update_row(conn: sa.Connection, update: ValidatedUpdate, outcome: ChangeOutcome) -> bool:
    """Bring the clean row in line with the CRM; True if a row changed."""
    table = CLEAN_TABLES[update.domain.name]
    column = table.c[update.target.name]
    values: dict[str, Any] = {update.target.name: update.new_value}
    where = [table.c.crm_id == outcome.crm_id]
    if outcome.updated_at is not None:
        values["updated_at"] = outcome.updated_at
    else:  # nothing was written to the CRM now: touch the row only if it is behind
        where.append(column.is_distinct_from(update.new_value))
    return bool(conn.execute(sa.update(table).where(*where).values(**values)).rowcount)


def record_outcome(engine: Engine, update: ValidatedUpdate, run_id: str, outcome: ChangeOutcome) -> bool:
    """The warehouse row and the audit row of one record, in one transaction; True if the row changed."""
    with engine.begin() as conn:
        lock_domain(conn, update.domain)  # before the row: the raw merge below takes it too
        changed = _update_row(conn, update, outcome) if outcome.in_sync else False
        if changed:
            record_write_back(conn, update.domain, outcome.crm_id)  # the deal's new version, same transaction
        if outcome.crm_record is not None and outcome.in_sync:
            # The raw copy follows too, so the next clean run re-decides this record from the new value.
            writer = RawWriter(conn, update.domain, run_id)
            writer.add([outcome.crm_record])
            writer.apply(reconcile=False, just_written=True)
        _write_audit(conn, update, run_id, outcome)
    return changed


def record_audit_only(engine: Engine, update: ValidatedUpdate, run_id: str, outcome: ChangeOutcome) -> None:
    """The audit row of one record, when its warehouse row could not follow."""
    with engine.begin() as conn:
        _write_audit(conn, update, run_id, outcome)


def _write_audit(conn: sa.Connection, update: ValidatedUpdate, run_id: str, outcome: ChangeOutcome) -> None:
    conn.execute(
        sa.update(crm_update_audit)
        .where(
            crm_update_audit.c.run_id == run_id,
            crm_update_audit.c.domain == update.domain.name,
            crm_update_audit.c.crm_id == outcome.crm_id,
        )
        .values(status=Status(outcome.status).value, old_value=outcome.old_text, error=outcome.error, changed_at=_now())
    )


def audit_rows(engine: Engine, run_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Audit rows (of some runs, or all), oldest first; for reports and tests."""
    query = sa.select(crm_update_audit).order_by(crm_update_audit.c.id)
    if run_ids is not None:
        query = query.where(crm_update_audit.c.run_id.in_(list(run_ids)))
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]
