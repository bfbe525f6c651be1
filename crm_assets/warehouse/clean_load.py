"""Loading cleaned rows: write only what changed, delete what is gone, quarantine what was rejected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import sqlalchemy as sa

from crm_assets.domains import Domain
from crm_assets.transform.clean import CleanResult, output_schema
from crm_assets.warehouse.bulk import (
    create_stage,
    delete_staged_keys,
    fill_stage,
    read_frame,
    upsert_from_stage,
)
from crm_assets.warehouse.schema import CLEAN_TABLES, RAW_TABLES, rejected_records


@dataclass(frozen=True)
class TableChanges:
    inserted: int
    updated: int
    deleted: int
    unchanged: int
    rejected: int
    before: pl.DataFrame  # previous version of updated and deleted rows
    after: pl.DataFrame  # new version of inserted and updated rows


def read_clean_rows(conn: sa.Connection, domain: Domain) -> pl.DataFrame:
    table = CLEAN_TABLES[domain.name]
    schema = output_schema(domain)
    return read_frame(conn, sa.select(*(table.c[c] for c in schema)), schema)


def read_keys(conn: sa.Connection, domain: Domain) -> pl.Series:
    table = CLEAN_TABLES[domain.name]
    key = domain.business_key
    frame = read_frame(conn, sa.select(table.c[key]), {key: output_schema(domain)[key]})
    return frame[key]


def _diff(
    domain: Domain, current: pl.DataFrame, new: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(rows to insert, rows to update, previous versions of the updated rows, rows to delete)."""
    key = domain.business_key
    compared = [c for c in new.columns if c != key]
    joined = new.join(current, on=key, how="left", suffix="__old", coalesce=True)
    exists = pl.col("crm_id__old").is_not_null()
    differs = pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}__old")) for c in compared)
    inserts = joined.filter(~exists).select(new.columns)
    updates = joined.filter(exists & differs)
    previous = updates.select(key, *(pl.col(f"{c}__old").alias(c) for c in compared))
    deleted = current.join(new.select(key), on=key, how="anti")
    return inserts, updates.select(new.columns), previous, deleted


def apply_clean(conn: sa.Connection, domain: Domain, result: CleanResult, run_id: str | None) -> TableChanges:
    """Bring the clean table to exactly `result.rows` and replace the domain's rejects, in the caller's transaction."""
    table = CLEAN_TABLES[domain.name]
    key = domain.business_key
    current = read_clean_rows(conn, domain)
    inserts, updates, previous, deleted = _diff(domain, current, result.rows)

    if not deleted.is_empty():
        stage = create_stage(conn, table, [key])
        fill_stage(conn, stage, deleted.select(key))
        delete_staged_keys(conn, table, stage, key)
    if not updates.is_empty():
        stage = create_stage(conn, table, updates.columns)
        fill_stage(conn, stage, updates)
        upsert_from_stage(conn, table, stage, [key])
    # The diff says these keys are new: they go straight in (COPY on PostgreSQL), no merge needed.
    fill_stage(conn, table, inserts)
    replace_rejected(conn, domain, result.rejected, run_id)

    return TableChanges(
        inserted=inserts.height,
        updated=updates.height,
        deleted=deleted.height,
        unchanged=result.rows.height - inserts.height - updates.height,
        rejected=result.rejected.height,
        before=pl.concat([previous, deleted.select(previous.columns)], how="vertical"),
        after=pl.concat([inserts, updates], how="vertical"),
    )


def replace_rejected(conn: sa.Connection, domain: Domain, rejected: pl.DataFrame, run_id: str | None) -> None:
    """The domain's quarantine always reflects the latest clean run, with each record's raw payload."""
    conn.execute(sa.delete(rejected_records).where(rejected_records.c.domain == domain.name))
    if rejected.is_empty():
        return
    stage = create_stage(conn, rejected_records, ["crm_id", "reason"])
    fill_stage(conn, stage, rejected.select("crm_id", "reason"))
    raw = RAW_TABLES[domain.name]
    source = sa.select(
        sa.literal(domain.name),
        stage.c.crm_id,
        stage.c.reason,
        raw.c.payload,
        sa.literal(run_id, sa.String),
        sa.literal(datetime.now(UTC), rejected_records.c.rejected_at.type),
    ).select_from(stage.outerjoin(raw, raw.c.crm_id == stage.c.crm_id))
    columns = ["domain", "crm_id", "reason", "payload", "run_id", "rejected_at"]
    conn.execute(rejected_records.insert().from_select(columns, source))
