"""Raw and clean assets, built from the domain declarations: one pair per domain."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from crm_assets.defs.metadata import markdown_table, table_schema
from crm_assets.domains import DOMAINS, Domain, get_domain
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.resources import CrmResource, WarehouseResource
from crm_assets.transform.clean import clean
from crm_assets.warehouse.clean_load import TableChanges, apply_clean, read_keys
from crm_assets.warehouse.raw import RawWriter, read_cursor, read_live_fields, save_cursor

RAW_GROUP = "crm_raw"
CLEAN_GROUP = "crm_clean"
CRM_POOL = "crm_api"


class RawSyncConfig(dg.Config):
    """How much of the CRM to read."""

    full_refresh: bool = Field(
        default=False,
        description="Read every record in every view and mark records that vanished from the CRM as deleted. "
        "Off: read only records updated since the last sync (plus an overlap).",
    )
    reconcile_every_days: int = Field(
        default=7, description="Run a full reconciliation when the last one is older than this many days."
    )
    overlap_minutes: int = Field(
        default=10, description="Re-read this much before the stored cursor, for clock skew and late writes."
    )


def _is_full_sync(
    config: RawSyncConfig, last_full: datetime | None, cursor: datetime | None
) -> tuple[bool, str]:
    if config.full_refresh:
        return True, "full refresh requested"
    if cursor is None or last_full is None:
        return True, "first sync"
    if datetime.now(UTC) - last_full >= timedelta(days=config.reconcile_every_days):
        return True, f"last full reconciliation is over {config.reconcile_every_days} days old"
    return False, "incremental"


def _extract(
    context: dg.AssetExecutionContext,
    domain: Domain,
    config: RawSyncConfig,
    client: FreshsalesClient,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    started = time.monotonic()
    engine = warehouse.get_engine()
    with engine.begin() as conn:
        state = read_cursor(conn, domain)
        full, why = _is_full_sync(config, state.last_full_sync_at, state.cursor)
        since = None if full else state.cursor - timedelta(minutes=config.overlap_minutes)  # type: ignore[operator]
        context.log.info(
            f"{domain.name}: {'full' if full else 'incremental'} sync ({why})"
            + (f", records updated since {since.isoformat()}" if since else "")
        )
        writer = RawWriter(conn, domain, context.run_id)
        for batch in client.iter_records(domain.entity, domain.views, updated_after=since):
            writer.add(batch)
        # The Recycle Bin is small and deletions need not bump updated_at: read it whole every time.
        for batch in client.iter_view(domain.entity, domain.deleted_view):
            writer.add(batch, deleted=True)
        stats = writer.merge(reconcile=full)
        save_cursor(conn, domain, stats.max_updated_at or state.cursor, full=full)
    if writer.invalid:
        context.log.warning(
            f"{domain.name}: {len(writer.invalid)} records without a numeric CRM id were skipped"
        )
    context.log.info(
        f"{domain.raw_table}: {stats.fetched:,} records fetched, {stats.inserted:,} new, {stats.updated:,} changed, "
        f"{stats.marked_deleted:,} marked deleted"
    )
    return dg.MaterializeResult(
        metadata={
            "mode": "full" if full else "incremental",
            "reason": why,
            "fetched": stats.fetched,
            "inserted": stats.inserted,
            "updated": stats.updated,
            "marked_deleted": stats.marked_deleted,
            "skipped_without_id": stats.without_id,
            "cursor": (stats.max_updated_at or state.cursor or datetime.now(UTC)).isoformat(),
            "crm_requests": client.stats.requests,
            "crm_retries": client.stats.retries,
            "crm_rate_limit_waits": client.stats.rate_limit_waits,
            "duration_seconds": round(time.monotonic() - started, 2),
        }
    )


def build_raw_asset(domain: Domain) -> dg.AssetsDefinition:
    @dg.asset(
        name=domain.raw_asset,
        group_name=RAW_GROUP,
        pool=CRM_POOL,
        kinds={"freshsales", "sql"},
        description=f"Freshsales {domain.entity} as the CRM returned them (JSON per CRM id), read from the "
        f"{', '.join(domain.views)} and {domain.deleted_view} views; incremental by updated_at.",
        retry_policy=dg.RetryPolicy(max_retries=1, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    )
    def raw_asset(
        context: dg.AssetExecutionContext,
        config: RawSyncConfig,
        crm: CrmResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        with crm.get_client(context.log) as client:
            return _extract(context, domain, config, client, warehouse)

    return raw_asset


def _touched_dates(changes: TableChanges) -> list[str]:
    """UTC created_at dates of every inserted, updated or deleted deal, old and new versions alike."""
    dates = pl.concat(
        [changes.before.select("created_at"), changes.after.select("created_at")], how="vertical"
    ).select(pl.col("created_at").dt.date().unique().sort())
    return [d.isoformat() for d in dates["created_at"].drop_nulls()]


def _clean_metadata(
    domain: Domain, changes: TableChanges, reasons: dict[str, int], rows: pl.DataFrame
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "dagster/row_count": rows.height,
        "dagster/column_schema": table_schema(domain),
        "inserted": changes.inserted,
        "updated": changes.updated,
        "deleted": changes.deleted,
        "unchanged": changes.unchanged,
        "rejected": changes.rejected,
        "rejected_by_reason": dg.MetadataValue.json(reasons),
        "preview": dg.MetadataValue.md(markdown_table(rows)),
    }
    if "created_at" in rows.columns:
        metadata["touched_dates"] = dg.MetadataValue.json(_touched_dates(changes))
    return metadata


def build_clean_asset(domain: Domain) -> dg.AssetsDefinition:
    upstream = [dg.AssetKey(domain.raw_asset), *(dg.AssetKey(fk.domain) for fk in domain.foreign_keys)]

    @dg.asset(
        name=domain.name,
        group_name=CLEAN_GROUP,
        deps=upstream,
        kinds={"polars", "sql"},
        description=domain.description + " Typed and validated; rejected records go to rejected_records.",
    )
    def clean_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        started = time.monotonic()
        with warehouse.get_engine().begin() as conn:
            raw = read_live_fields(conn, domain)
            context.log.info(f"{domain.name}: cleaning {raw.height:,} live records")
            loaded_keys = {fk.domain: read_keys(conn, get_domain(fk.domain)) for fk in domain.foreign_keys}
            result = clean(domain, raw, loaded_keys)
            changes = apply_clean(conn, domain, result, context.run_id)
        reasons = result.rejected_by_reason()
        context.log.info(
            f"{domain.name}: {result.rows.height:,} rows; {changes.inserted:,} inserted, {changes.updated:,} "
            f"updated, {changes.deleted:,} deleted, {changes.rejected:,} rejected"
            + (f" ({', '.join(f'{k}: {n}' for k, n in reasons.items())})" if reasons else "")
        )
        metadata = _clean_metadata(domain, changes, reasons, result.rows)
        metadata["duration_seconds"] = round(time.monotonic() - started, 2)
        return dg.MaterializeResult(metadata=metadata)

    return clean_asset


RAW_ASSETS = [build_raw_asset(d) for d in DOMAINS]
CLEAN_ASSETS = [build_clean_asset(d) for d in DOMAINS]
