"""The sync steps without Dagster: CRM -> raw table (extract), raw table -> clean table (clean and load).

The assets in `defs/sync` wrap these with metadata and logging; the benchmark calls them directly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from crm_assets.domains import Domain
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.warehouse.clean_load import TableChanges, clean_changes
from crm_assets.warehouse.raw import RawLoadStats, RawWriter, read_cursor, save_cursor


@dataclass(frozen=True)
class SyncPlan:
    full: bool
    reason: str
    since: datetime | None  # read records updated at or after this; None = everything


@dataclass(frozen=True)
class ExtractResult:
    plan: SyncPlan
    stats: RawLoadStats
    cursor: datetime | None


def plan_sync(
    cursor: datetime | None,
    last_full_sync_at: datetime | None,
    *,
    full_refresh: bool = False,
    reconcile_every: timedelta = timedelta(days=7),
    overlap: timedelta = timedelta(minutes=10),
    now: datetime | None = None,
) -> SyncPlan:
    """Incremental from the cursor, unless a full reconciliation is asked for or due."""
    now = now or datetime.now(UTC)
    if full_refresh:
        return SyncPlan(True, "full refresh requested", None)
    if cursor is None or last_full_sync_at is None:
        return SyncPlan(True, "first sync", None)
    if now - last_full_sync_at >= reconcile_every:
        return SyncPlan(True, f"last full reconciliation is older than {reconcile_every.days} days", None)
    return SyncPlan(False, "incremental", cursor - overlap)


def extract_domain(
    engine: sa.Engine,
    domain: Domain,
    client: FreshsalesClient,
    run_id: str | None,
    *,
    full_refresh: bool = False,
    reconcile_every: timedelta = timedelta(days=7),
    overlap: timedelta = timedelta(minutes=10),
    log: logging.Logger | None = None,
) -> ExtractResult:
    """Read changed (or all) records of a domain into its raw table, in one transaction."""
    log = log or logging.getLogger(__name__)
    with engine.begin() as conn:
        state = read_cursor(conn, domain)
        plan = plan_sync(
            state.cursor,
            state.last_full_sync_at,
            full_refresh=full_refresh,
            reconcile_every=reconcile_every,
            overlap=overlap,
        )
        since = f", records updated since {plan.since.isoformat()}" if plan.since else ""
        mode = "full" if plan.full else "incremental"
        reason = "" if plan.reason == mode else f" ({plan.reason})"  # the reason may only repeat the mode
        log.info(f"{domain.name}: {mode} sync{reason}{since}")
        writer = RawWriter(conn, domain, run_id)
        # A record listed in several views (or moved between pages mid-scan) is staged more than once; the
        # merge keeps the newest copy per CRM id, so memory does not grow with the number of ids seen.
        for view in domain.views:
            for batch in client.iter_view(domain.entity, view, stop_before=plan.since):
                writer.add(batch)
        # Deleting bumps updated_at, so the Recycle Bin is read down to the cursor too; a delete that
        # did not (or a record purged from the bin) is caught by the periodic full reconciliation.
        for batch in client.iter_view(domain.entity, domain.deleted_view, stop_before=plan.since):
            writer.add(batch, deleted=True)
        stats = writer.merge(reconcile=plan.full)
        cursor = stats.max_updated_at or state.cursor
        save_cursor(conn, domain, cursor, full=plan.full)
    if stats.without_id:
        log.warning(f"{domain.name}: {stats.without_id} records without a numeric CRM id were skipped")
    return ExtractResult(plan=plan, stats=stats, cursor=cursor)


def clean_domain(
    engine: sa.Engine,
    domain: Domain,
    run_id: str | None,
    *,
    rebuild: bool = False,
    track: Sequence[str] = (),
    log: logging.Logger | None = None,
) -> TableChanges:
    """Bring a clean table up to date with its raw table (only what changed, unless `rebuild`), in one transaction."""
    with engine.begin() as conn:
        return clean_changes(conn, domain, run_id, rebuild=rebuild, track=track, log=log)
