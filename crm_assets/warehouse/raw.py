"""Raw extract tables: CRM records as returned, one row per CRM id."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl
import sqlalchemy as sa

from crm_assets.domains import Domain
from crm_assets.timestamps import as_utc, parse_instant
from crm_assets.warehouse.bulk import analyze_stage, create_stage, fill_stage_rows, read_frame
from crm_assets.warehouse.schema import RAW_TABLES, sync_state

RAW_STAGE_COLUMNS = ("crm_id", "payload", "updated_at", "is_deleted", "synced_at", "run_id")


@dataclass
class RawLoadStats:
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    marked_deleted: int = 0
    without_id: int = 0
    max_updated_at: datetime | None = None


@dataclass(frozen=True)
class SyncCursor:
    cursor: datetime | None
    last_full_sync_at: datetime | None


class RawWriter:
    """Streams record batches into a staging table, then merges them into raw_<domain> in one statement.

    Use inside the caller's transaction: nothing is visible until it commits.
    """

    def __init__(self, conn: sa.Connection, domain: Domain, run_id: str | None) -> None:
        self.conn = conn
        self.domain = domain
        self.table = RAW_TABLES[domain.name]
        self.run_id = run_id
        self.synced_at = datetime.now(UTC)
        self.stats = RawLoadStats()
        self.invalid: list[dict[str, Any]] = []
        self.stage = create_stage(conn, self.table, RAW_STAGE_COLUMNS)

    def add(self, records: Iterable[dict[str, Any]], *, deleted: bool = False) -> None:
        fill_stage_rows(self.conn, self.stage, self._rows(records, deleted))

    def _rows(self, records: Iterable[dict[str, Any]], deleted: bool) -> Iterator[tuple[Any, ...]]:
        is_postgres = self.conn.dialect.name == "postgresql"
        for record in records:
            self.stats.fetched += 1
            crm_id = record.get("id")
            if not isinstance(crm_id, int) or isinstance(crm_id, bool):
                self.stats.without_id += 1
                self.invalid.append(record)
                continue
            updated_at = parse_instant(record.get("updated_at")) or parse_instant(record.get("created_at"))
            updated_at = updated_at or self.synced_at
            if self.stats.max_updated_at is None or updated_at > self.stats.max_updated_at:
                self.stats.max_updated_at = updated_at
            payload = orjson.dumps(record).decode() if is_postgres else record
            is_deleted = deleted or record.get("is_deleted") is True
            yield (crm_id, payload, updated_at, is_deleted, self.synced_at, self.run_id)

    def merge(self, *, reconcile: bool) -> RawLoadStats:
        """Upsert the newest staged copy of each id; with `reconcile`, ids not fetched are marked deleted."""
        stage, table = self.stage, self.table
        analyze_stage(self.conn, stage)
        ranked = sa.select(
            *stage.c,
            sa.func.row_number()
            .over(partition_by=stage.c.crm_id, order_by=(stage.c.updated_at.desc(), stage.c.is_deleted.desc()))
            .label("rank"),
        ).subquery()
        newest = sa.select(*(ranked.c[c] for c in RAW_STAGE_COLUMNS)).where(ranked.c.rank == 1).subquery()
        matched = newest.outerjoin(table, table.c.crm_id == newest.c.crm_id)
        changed = sa.or_(
            table.c.updated_at.is_distinct_from(newest.c.updated_at),
            table.c.is_deleted.is_distinct_from(newest.c.is_deleted),
        )
        counts = sa.select(
            sa.func.count().filter(table.c.crm_id.is_(None)),
            sa.func.count().filter(table.c.crm_id.is_not(None) & changed),
        ).select_from(matched)
        self.stats.inserted, self.stats.updated = self.conn.execute(counts).one()

        insert = _dialect_insert(self.conn)(table).from_select(
            [*RAW_STAGE_COLUMNS, "needs_clean"], sa.select(*newest.c, sa.true()).where(sa.true())
        )
        excluded = insert.excluded
        insert = insert.on_conflict_do_update(
            index_elements=["crm_id"],
            set_={c: excluded[c] for c in (*RAW_STAGE_COLUMNS, "needs_clean") if c != "crm_id"},
            where=sa.or_(
                table.c.updated_at.is_distinct_from(excluded.updated_at),
                table.c.is_deleted.is_distinct_from(excluded.is_deleted),
            ),
        )
        self.conn.execute(insert)
        if reconcile:
            gone = (
                sa.update(table)
                # NOT EXISTS, not NOT IN: PostgreSQL plans it as a hash anti-join at any size.
                .where(~table.c.is_deleted, ~sa.exists().where(stage.c.crm_id == table.c.crm_id))
                .values(is_deleted=True, synced_at=self.synced_at, run_id=self.run_id, needs_clean=True)
            )
            self.stats.marked_deleted = self.conn.execute(gone).rowcount or 0
        return self.stats


def _dialect_insert(conn: sa.Connection) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def read_cursor(conn: sa.Connection, domain: Domain) -> SyncCursor:
    row = conn.execute(
        sa.select(sync_state.c.cursor, sync_state.c.last_full_sync_at).where(sync_state.c.domain == domain.name)
    ).first()
    if row is None:
        return SyncCursor(None, None)
    return SyncCursor(_utc_or_none(row.cursor), _utc_or_none(row.last_full_sync_at))


def _utc_or_none(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def save_cursor(conn: sa.Connection, domain: Domain, cursor: datetime | None, *, full: bool) -> None:
    now = datetime.now(UTC)
    values: dict[str, Any] = {"domain": domain.name, "cursor": cursor, "updated_at": now}
    if full:
        values["last_full_sync_at"] = now
    insert = _dialect_insert(conn)(sync_state).values(**values)
    update = {k: v for k, v in values.items() if k != "domain"}
    if cursor is None:
        update.pop("cursor")
    conn.execute(insert.on_conflict_do_update(index_elements=["domain"], set_=update))


def json_field_as_text(conn: sa.Connection, payload: sa.Column[Any], path: tuple[str, ...]) -> sa.ColumnElement[Any]:
    """A JSON field of the payload as text, the same on both dialects (paths are validated identifiers)."""
    if conn.dialect.name == "postgresql":
        return sa.literal_column(f"{payload.name} #>> '{{{','.join(path)}}}'")
    return sa.literal_column(f"CAST(json_extract({payload.name}, '$.{'.'.join(path)}') AS TEXT)")


def _field_schema(domain: Domain) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {
        "crm_id": pl.Int64(),
        "updated_at": pl.Datetime("us", "UTC"),
        "is_deleted": pl.Boolean(),
        "synced_at": pl.Datetime("us", "UTC"),
    }
    return schema | {c.name: pl.String() for c in domain.columns}


def _fields_query(conn: sa.Connection, domain: Domain) -> sa.Select[Any]:
    table = RAW_TABLES[domain.name]
    fields = [json_field_as_text(conn, table.c.payload, c.source_path).label(c.name) for c in domain.columns]
    return sa.select(table.c.crm_id, table.c.updated_at, table.c.is_deleted, table.c.synced_at, *fields)


def read_changed_batches(conn: sa.Connection, domain: Domain, batch_size: int) -> Iterator[pl.DataFrame]:
    """Raw rows changed since the last clean run, `batch_size` at a time, with each column's value as text.

    Pages by crm_id, so memory stays bounded whatever the table's size.
    """
    table = RAW_TABLES[domain.name]
    query = _fields_query(conn, domain).where(table.c.needs_clean).order_by(table.c.crm_id).limit(batch_size)
    last: int | None = None
    while True:
        page = query if last is None else query.where(table.c.crm_id > last)
        batch = read_frame(conn, page, _field_schema(domain))
        if batch.is_empty():
            return
        yield batch
        last = int(batch["crm_id"][-1])


def mark_cleaned(conn: sa.Connection, domain: Domain, stage: sa.Table) -> None:
    """Clear needs_clean for the staged (crm_id, synced_at) pairs; a row re-synced meanwhile stays marked."""
    table = RAW_TABLES[domain.name]
    conn.execute(
        sa.update(table)
        .where(
            sa.exists().where(stage.c.crm_id == table.c.crm_id, stage.c.synced_at == table.c.synced_at),
        )
        .values(needs_clean=False)
    )


def mark_all_changed(conn: sa.Connection, domain: Domain) -> None:
    """Have the next clean run re-decide every record (a full rebuild)."""
    table = RAW_TABLES[domain.name]
    conn.execute(sa.update(table).where(~table.c.needs_clean).values(needs_clean=True))


def read_live_fields(conn: sa.Connection, domain: Domain) -> pl.DataFrame:
    """Every live record's crm_id, updated_at and each domain column's value as text."""
    table = RAW_TABLES[domain.name]
    return read_frame(conn, _fields_query(conn, domain).where(~table.c.is_deleted), _field_schema(domain))


def raw_summary(conn: sa.Connection, domain: Domain, preview_rows: int = 5) -> tuple[int, int, pl.DataFrame]:
    """(live records, deleted records, the most recently synced rows) of a raw table."""
    table = RAW_TABLES[domain.name]
    live, deleted = conn.execute(
        sa.select(sa.func.count().filter(~table.c.is_deleted), sa.func.count().filter(table.c.is_deleted))
    ).one()
    latest = sa.select(table.c.crm_id, table.c.updated_at, table.c.is_deleted).order_by(
        table.c.synced_at.desc(), table.c.updated_at.desc()
    )
    schema: dict[str, pl.DataType] = {
        "crm_id": pl.Int64(),
        "updated_at": pl.Datetime("us", "UTC"),
        "is_deleted": pl.Boolean(),
    }
    return int(live), int(deleted), read_frame(conn, latest.limit(preview_rows), schema)
