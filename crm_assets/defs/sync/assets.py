"""Raw and clean assets, built from the domain declarations: one pair per domain."""

import time
from datetime import date, timedelta
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from crm_assets.contracts import CRM_POOL, HISTORY_CHANGED_FROM, PERIOD_COLUMN, TOUCHED_DATES
from crm_assets.defs.metadata import ASSET_OWNERS, capability_tags, markdown_table, table_schema
from crm_assets.domains import Domain, configured_domains
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmError, CrmRateLimitError, CrmUnavailableError
from crm_assets.pipeline import ScanSettings, clean_domain, extract_domain
from crm_assets.resources import CrmResource, WarehouseResource
from crm_assets.warehouse.clean_guard import CleanGuard
from crm_assets.warehouse.clean_load import TableChanges, read_clean_rows
from crm_assets.warehouse.drift import SchemaDriftError
from crm_assets.warehouse.history import pipeline_changed_from
from crm_assets.warehouse.raw import raw_summary
from crm_assets.warehouse.scan import (
    DEFAULT_MAX_DELETE_SHARE,
    DEFAULT_MIN_MASS_DELETE,
    DeleteGuard,
    ExtractionBusyError,
    MassDeleteRefusedError,
)

RAW_GROUP = "crm_raw"
CLEAN_GROUP = "crm_clean"


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
    allow_mass_delete: bool = Field(
        default=False,
        description="Merge a scan even if it deletes more than max_delete_percent of the live records or a view "
        "listed nothing where the last full listing had records. Only for the day such a loss is real.",
    )
    max_delete_percent: float = Field(
        default=DEFAULT_MAX_DELETE_SHARE * 100,
        gt=0,
        le=100,
        description="Refuse a scan that would delete more than this percentage of the domain's live records "
        f"(from {DEFAULT_MIN_MASS_DELETE} records up).",
    )
    delete_checks_per_run: int = Field(
        default=ScanSettings.delete_checks,
        ge=0,
        description="GET requests per run confirming records a full listing did not show; beyond it they are "
        "left as they are until a later full reconciliation.",
    )
    checkpoint_pages: int = Field(
        default=ScanSettings.checkpoint_pages,
        ge=1,
        description="Commit the pages read so far every this many pages (a resumed scan re-reads at most these).",
    )
    checkpoint_minutes: float = Field(
        default=ScanSettings.checkpoint_seconds / 60, gt=0, description="... or every this many minutes."
    )
    max_scan_age_hours: float = Field(
        default=ScanSettings.max_scan_age.total_seconds() / 3600,
        gt=0,
        description="Resume an unfinished scan only if it started less than this long ago; else start over.",
    )

    def scan_settings(self) -> ScanSettings:
        return ScanSettings(
            checkpoint_pages=self.checkpoint_pages,
            checkpoint_seconds=self.checkpoint_minutes * 60,
            max_scan_age=timedelta(hours=self.max_scan_age_hours),
            delete_checks=self.delete_checks_per_run,
            guard=DeleteGuard(max_share=self.max_delete_percent / 100, allow=self.allow_mass_delete),
        )


def _extract(
    context: dg.AssetExecutionContext,
    domain: Domain,
    config: RawSyncConfig,
    client: FreshsalesClient,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult[None]:
    started = time.monotonic()
    result = extract_domain(
        warehouse.get_engine(),
        domain,
        client,
        context.run.run_id,
        full_refresh=config.full_refresh,
        reconcile_every=timedelta(days=config.reconcile_every_days),
        overlap=timedelta(minutes=config.overlap_minutes),
        settings=config.scan_settings(),
        log=context.log,
    )
    stats = result.stats
    with warehouse.get_engine().connect() as conn:
        live, deleted, latest = raw_summary(conn, domain)
    context.log.info(
        f"{domain.raw_table}: {stats.fetched:,} records fetched, {stats.inserted:,} new, {stats.updated:,} "
        f"changed, {stats.marked_deleted:,} marked deleted, {stats.rejected:,} quarantined"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": live + deleted,
            "live_records": live,
            "deleted_records": deleted,
            "mode": "full" if result.plan.full else "incremental",
            "reason": result.plan.reason,
            "fetched": stats.fetched,
            "inserted": stats.inserted,
            "updated": stats.updated,
            "marked_deleted": stats.marked_deleted,
            "unlisted_checked": stats.unlisted_checked,
            "confirmed_deleted": stats.confirmed_deleted,
            "still_live": stats.still_live,
            "unconfirmed": stats.unconfirmed,
            "rejected": stats.rejected,
            "rejected_by_reason": dg.MetadataValue.json(stats.rejected_by_reason),
            "resumed": result.resumed,
            "scan": result.scan_note,
            "cursor": result.cursor.isoformat() if result.cursor else "",
            "crm_requests": client.stats.requests,
            "crm_retries": client.stats.retries,
            "crm_rate_limit_waits": client.stats.rate_limit_waits,
            "duration_seconds": round(time.monotonic() - started, 2),
            "latest_records": dg.MetadataValue.md(markdown_table(latest)),
        }
    )


def build_raw_asset(domain: Domain) -> dg.AssetsDefinition:
    @dg.asset(
        name=domain.raw_asset,
        group_name=RAW_GROUP,
        pool=CRM_POOL,
        kinds={"freshsales", "sql"},
        owners=ASSET_OWNERS,
        tags=capability_tags("sync"),
        description=f"Freshsales {domain.entity} as the CRM returned them (JSON per CRM id), read from the "
        f"{', '.join(domain.views)} and {domain.deleted_view} views; incremental by updated_at.",
        retry_policy=dg.RetryPolicy(max_retries=1, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    )
    def raw_asset(
        context: dg.AssetExecutionContext,
        config: RawSyncConfig,
        crm: CrmResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult[None]:
        try:
            with crm.get_client(context.log) as client:
                return _extract(context, domain, config, client, warehouse)
        except CrmError as exc:
            # The message names the cause and the fix; only an outage or a rate limit is worth a retry.
            retryable = isinstance(exc, CrmUnavailableError | CrmRateLimitError)
            raise dg.Failure(description=f"{domain.raw_asset}: {exc}", allow_retries=retryable) from None
        except MassDeleteRefusedError as exc:
            # The same scan would be refused again: a retry only waits; a person decides.
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        except ExtractionBusyError as exc:  # the step's retry (after its delay) may find the other one done
            raise dg.Failure(description=str(exc), allow_retries=True) from None

    return raw_asset


def _touched_dates(changes: TableChanges) -> list[str]:
    """UTC dates of the period column of every inserted, updated or deleted row, old and new versions alike."""
    frames = [*changes.before, *changes.after]
    if not frames:
        return []
    dates = pl.concat(frames).select(pl.col(PERIOD_COLUMN).dt.date().drop_nulls().unique().sort())
    return [d.isoformat() for d in dates[PERIOD_COLUMN]]


class CleanConfig(dg.Config):
    rebuild: bool = Field(
        default=False,
        description="Re-decide every record, not only the changed ones (after changing the field mapping).",
    )
    allow_mass_delete: bool = Field(
        default=False,
        description="Apply a clean run even if it removes more than max_delete_percent of this table's rows, or "
        "of a table that references it (deleted with them). Only for the day such a loss is real.",
    )
    max_delete_percent: float = Field(
        default=DEFAULT_MAX_DELETE_SHARE * 100,
        gt=0,
        le=100,
        description="Refuse a clean run that would remove more than this percentage of a table's rows (records "
        f"deleted, rejected or orphaned, or removed by the cascade), from {DEFAULT_MIN_MASS_DELETE} rows up.",
    )

    def guard(self) -> CleanGuard:
        return CleanGuard(max_share=self.max_delete_percent / 100, allow=self.allow_mass_delete)


def _clean_metadata(
    domain: Domain, changes: TableChanges, preview: pl.DataFrame, pipeline_from: date | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "dagster/row_count": changes.rows,
        "dagster/column_schema": table_schema(domain),
        "inserted": changes.inserted,
        "updated": changes.updated,
        # Rows that left, by this run or with the referenced rows an earlier step deleted.
        "deleted": changes.deleted + changes.left_with_parent,
        "deleted_with_parent": changes.left_with_parent,
        "cascaded": dg.MetadataValue.json(changes.cascaded),
        "unchanged": changes.unchanged,
        "rejected": changes.rejected,
        "rejected_by_reason": dg.MetadataValue.json(changes.rejected_by_reason),
        "changed_records_read": changes.records_read,
        "preview": dg.MetadataValue.md(markdown_table(preview)),
    }
    if PERIOD_COLUMN in domain.column_names:
        metadata[TOUCHED_DATES] = dg.MetadataValue.json(_touched_dates(changes))
    if pipeline_from is not None:
        metadata[HISTORY_CHANGED_FROM] = pipeline_from.isoformat()
    return metadata


def _clean_summary(domain: Domain, changes: TableChanges) -> str:
    reasons = changes.rejected_by_reason
    cascaded = [f"{n:,} {name} rows deleted with them" for name, n in changes.cascaded.items() if n]
    if changes.left_with_parent:
        cascaded.append(f"{changes.left_with_parent:,} deleted with the rows they referenced")
    return (
        f"{domain.name}: {changes.rows:,} rows; {changes.inserted:,} inserted, {changes.updated:,} "
        f"updated, {changes.deleted:,} deleted"
        + "".join(f", {c}" for c in cascaded)
        + f"; {changes.rejected:,} records quarantined"
        + (f" ({', '.join(f'{k}: {n}' for k, n in reasons.items())})" if reasons else "")
    )


def build_clean_asset(domain: Domain) -> dg.AssetsDefinition:
    upstream = [dg.AssetKey(domain.raw_asset), *(dg.AssetKey(fk.domain) for fk in domain.foreign_keys)]
    track = [PERIOD_COLUMN] if PERIOD_COLUMN in domain.column_names else []

    @dg.asset(
        name=domain.name,
        group_name=CLEAN_GROUP,
        deps=upstream,
        kinds={"polars", "sql"},
        owners=ASSET_OWNERS,
        tags=capability_tags("sync"),
        description=domain.description + " Typed and validated; rejected records go to rejected_records.",
    )
    def clean_asset(
        context: dg.AssetExecutionContext, config: CleanConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult[None]:
        started = time.monotonic()
        engine = warehouse.get_engine()
        try:
            changes = clean_domain(
                engine,
                domain,
                context.run.run_id,
                rebuild=config.rebuild,
                track=track,
                log=context.log,
                guard=config.guard(),
            )
        except (SchemaDriftError, MassDeleteRefusedError) as exc:  # a retry would find the same records
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        context.log.info(_clean_summary(domain, changes))
        with engine.connect() as conn:
            preview = read_clean_rows(conn, domain, limit=10)
            pipeline_from = pipeline_changed_from(conn, changes.history_from)
        metadata = _clean_metadata(domain, changes, preview, pipeline_from)
        metadata["duration_seconds"] = round(time.monotonic() - started, 2)
        return dg.MaterializeResult(metadata=metadata)

    return clean_asset


def raw_assets() -> list[dg.AssetsDefinition]:
    """One raw asset per configured domain (built when the definitions are, after CRM_FIELD_MAP is read)."""
    return [build_raw_asset(d) for d in configured_domains()]


def clean_assets() -> list[dg.AssetsDefinition]:
    return [build_clean_asset(d) for d in configured_domains()]
