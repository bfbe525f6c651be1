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
from crm_assets.warehouse.bulk import (
    analyze_after_bulk_change,
    analyze_stage,
    create_stage,
    drop_stages,
    fill_stage_rows,
    read_frame,
    upsert_insert,
)
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


def _storable(record: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The record and its JSON text, with any NUL character (U+0000) replaced by U+FFFD.

    PostgreSQL's JSONB refuses NUL and SQLite's JSON functions cut text at it: replace it the same way on both.
    """
    text = orjson.dumps(record).decode()
    if "\\u0000" in text:
        record = _replace_nul(record)
        text = orjson.dumps(record).decode()
    return record, text


def _replace_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_replace_nul(k): _replace_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_nul(v) for v in value]
    return value


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
            stored, text = _storable(record)
            payload = text if is_postgres else stored
            is_deleted = deleted or record.get("is_deleted") is True
            yield (crm_id, payload, updated_at, is_deleted, self.synced_at, self.run_id)

    def merge(self, *, reconcile: bool) -> RawLoadStats:
        """Upsert the newest staged copy of each id; with `reconcile`, ids not fetched are marked deleted."""
        stage, table = self.stage, self.table
        analyze_stage(self.conn, stage)
        seq = next_change_seq(self.conn, self.domain)
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

        insert = upsert_insert(self.conn, table).from_select(
            [*RAW_STAGE_COLUMNS, "change_seq"], sa.select(*newest.c, sa.literal(seq)).where(sa.true())
        )
        excluded = insert.excluded
        insert = insert.on_conflict_do_update(
            index_elements=["crm_id"],
            set_={c: excluded[c] for c in (*RAW_STAGE_COLUMNS, "change_seq") if c != "crm_id"},
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
                .values(is_deleted=True, synced_at=self.synced_at, run_id=self.run_id, change_seq=seq)
            )
            self.stats.marked_deleted = self.conn.execute(gone).rowcount or 0
        analyze_after_bulk_change(self.conn, table, self.stats.inserted + self.stats.updated)
        drop_stages(self.conn)
        return self.stats


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
    insert = upsert_insert(conn, sync_state).values(**values)
    update = {k: v for k, v in values.items() if k != "domain"}
    if cursor is None:
        update.pop("cursor")
    conn.execute(insert.on_conflict_do_update(index_elements=["domain"], set_=update))


def json_field_as_text(conn: sa.Connection, payload: sa.Column[Any], path: tuple[str, ...]) -> sa.ColumnElement[Any]:
    """A JSON field of the payload as text, the same on both dialects (paths are validated identifiers)."""
    if conn.dialect.name == "postgresql":
        return sa.literal_column(f"{payload.name} #>> '{{{','.join(path)}}}'")
    # json_extract gives JSON true/false as 1/0: spell them as PostgreSQL does.
    where = f"{payload.name}, '$.{'.'.join(path)}'"
    return sa.literal_column(
        f"CASE json_type({where}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"ELSE CAST(json_extract({where}) AS TEXT) END"
    )


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


def lock_domain(conn: sa.Connection, domain: Domain) -> None:
    """Serialize writers of a domain's raw and clean tables until the transaction ends (SQLite serializes writers).

    Whoever needs several domains locks them in DOMAINS order (referenced domains first), so no two wait
    on each other.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"crm_assets.{domain.name}"))))


def next_change_seq(conn: sa.Connection, domain: Domain) -> int:
    """The change_seq for the rows a write changes now; takes the domain's lock."""
    lock_domain(conn, domain)
    table = RAW_TABLES[domain.name]
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.change_seq), 0) + 1)).scalar_one())


def latest_change_seq(conn: sa.Connection, domain: Domain) -> int:
    table = RAW_TABLES[domain.name]
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.change_seq), 0))).scalar_one())


def read_cleaned_through(conn: sa.Connection, domain: Domain) -> int:
    seq = conn.execute(sa.select(sync_state.c.cleaned_through).where(sync_state.c.domain == domain.name)).scalar()
    return int(seq or 0)


def save_cleaned_through(conn: sa.Connection, domain: Domain, seq: int) -> None:
    values = {"domain": domain.name, "cleaned_through": seq, "updated_at": datetime.now(UTC)}
    insert = upsert_insert(conn, sync_state).values(**values)
    conn.execute(insert.on_conflict_do_update(index_elements=["domain"], set_={"cleaned_through": seq}))


def read_changed_batches(
    conn: sa.Connection, domain: Domain, after_seq: int, through_seq: int, batch_size: int
) -> Iterator[pl.DataFrame]:
    """Raw rows with after_seq < change_seq <= through_seq, `batch_size` at a time, values as text.

    Pages by crm_id, so memory stays bounded whatever the table's size.
    """
    table = RAW_TABLES[domain.name]
    changed = table.c.change_seq.between(after_seq + 1, through_seq)
    query = _fields_query(conn, domain).where(changed).order_by(table.c.crm_id).limit(batch_size)
    last: int | None = None
    while True:
        page = query if last is None else query.where(table.c.crm_id > last)
        batch = read_frame(conn, page, _field_schema(domain))
        if batch.is_empty():
            return
        yield batch
        last = int(batch["crm_id"][-1])


def mark_changed(conn: sa.Connection, domain: Domain, crm_ids: sa.Select[Any]) -> None:
    """Have the next clean run of `domain` re-decide these records."""
    table = RAW_TABLES[domain.name]
    seq = next_change_seq(conn, domain)
    conn.execute(sa.update(table).where(table.c.crm_id.in_(crm_ids)).values(change_seq=seq))


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
