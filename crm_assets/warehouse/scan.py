"""The state of a domain's unfinished scan (what it reads, where each view stands) and the mass-delete guard.

A scan is planned once (full or incremental), staged page by page in checkpoints, and merged once complete.
Its state lives in raw_scans and raw_scan_views, so a retried step or the next run resumes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from crm_assets.domains import Domain
from crm_assets.timestamps import as_utc
from crm_assets.warehouse.bulk import upsert_insert
from crm_assets.warehouse.raw import DeletionCounts, new_scan_id
from crm_assets.warehouse.schema import raw_scan_records, raw_scan_views, raw_scans

# A reconciliation deleting more than this share of a domain's live rows looks like an accident: see the
# README section "What crm-assets refuses to do".
DEFAULT_MAX_DELETE_SHARE = 0.10
# Below this many deletes the share is noise (2 of 10 records), so the share rule starts here.
DEFAULT_MIN_MASS_DELETE = 25


@dataclass(frozen=True)
class ViewPosition:
    view: str
    next_page: int
    done: bool
    records: int  # staged by the unfinished scan
    last_full_records: int | None  # listed by the last complete full scan


@dataclass(frozen=True)
class Scan:
    domain: str
    scan_id: str
    full: bool
    since: datetime | None
    reason: str
    started_at: datetime
    checkpointed_at: datetime
    run_id: str | None
    refused: str | None
    views: dict[str, ViewPosition]

    @property
    def complete(self) -> bool:
        return all(p.done for p in self.views.values())

    def position_text(self) -> str:
        return ", ".join(f"{p.view} {'done' if p.done else f'from page {p.next_page}'}" for p in self.views.values())


class ScanMovedError(RuntimeError):
    """Another process advanced or replaced this scan: two extractions of one domain ran at once."""


class ExtractionBusyError(RuntimeError):
    """Another extraction of the domain held it for longer than this one waits."""


class MassDeleteRefusedError(RuntimeError):
    """A reconciliation would delete so much that it looks like an accident; nothing was written."""


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def load_scan(conn: sa.Connection, domain: Domain) -> Scan | None:
    row = conn.execute(sa.select(raw_scans).where(raw_scans.c.domain == domain.name)).first()
    if row is None:
        return None
    views = {
        r.view: ViewPosition(r.view, int(r.next_page), bool(r.done), int(r.records), _int(r.last_full_records))
        for r in conn.execute(sa.select(raw_scan_views).where(raw_scan_views.c.domain == domain.name))
    }
    ordered = {v: views[v] for v in scan_views(domain) if v in views}
    return Scan(
        domain=domain.name,
        scan_id=row.scan_id,
        full=bool(row.full_scan),
        since=_utc(row.since),
        reason=row.reason,
        started_at=as_utc(row.started_at),
        checkpointed_at=as_utc(row.checkpointed_at),
        run_id=row.run_id,
        refused=row.refused,
        views=ordered,
    )


def _int(value: int | None) -> int | None:
    return int(value) if value is not None else None


def scan_views(domain: Domain) -> list[str]:
    """Every view a scan reads, the Recycle Bin last."""
    return [*domain.views, domain.deleted_view]


def start_scan(
    conn: sa.Connection, domain: Domain, *, full: bool, since: datetime | None, reason: str, run_id: str | None
) -> Scan:
    """Plan a new scan (dropping any unfinished one) with every view at page 1."""
    discard_scan(conn, domain)
    now = datetime.now(UTC)
    conn.execute(
        raw_scans.insert().values(
            domain=domain.name,
            scan_id=new_scan_id(),
            full_scan=full,
            since=since,
            reason=reason,
            started_at=now,
            checkpointed_at=now,
            run_id=run_id,
        )
    )
    for view in scan_views(domain):
        insert = upsert_insert(conn, raw_scan_views).values(
            domain=domain.name, view=view, next_page=1, done=False, records=0
        )
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["domain", "view"], set_={"next_page": 1, "done": False, "records": 0}
            )
        )
    scan = load_scan(conn, domain)
    assert scan is not None
    return scan


def discard_scan(conn: sa.Connection, domain: Domain) -> None:
    """Forget the unfinished scan and its staged pages (the last full listing counts stay)."""
    scan_id = conn.execute(sa.select(raw_scans.c.scan_id).where(raw_scans.c.domain == domain.name)).scalar()
    if scan_id is not None:
        conn.execute(sa.delete(raw_scan_records).where(raw_scan_records.c.scan_id == scan_id))
    conn.execute(sa.delete(raw_scans).where(raw_scans.c.domain == domain.name))


def save_checkpoint(
    conn: sa.Connection, scan: Scan, view: str, from_page: int, to_page: int, records: int, *, done: bool
) -> None:
    """Move a view's position from `from_page` to `to_page`; fails if another process moved it meanwhile."""
    views = raw_scan_views
    moved = conn.execute(
        sa.update(views)
        .where(views.c.domain == scan.domain, views.c.view == view, views.c.next_page == from_page, ~views.c.done)
        .values(next_page=to_page, records=views.c.records + records, done=done)
    ).rowcount
    current = conn.execute(
        sa.update(raw_scans)
        .where(raw_scans.c.domain == scan.domain, raw_scans.c.scan_id == scan.scan_id)
        .values(checkpointed_at=datetime.now(UTC))
    ).rowcount
    if moved != 1 or current != 1:
        raise ScanMovedError(
            f"raw_{scan.domain}: the scan of view {view!r} was advanced or replaced by another process while "
            "this one read it (an extraction that did not take the domain's extract lock: a release before this "
            "one?). Run again: the next run resumes from the last checkpoint."
        )


def touch_scan(conn: sa.Connection, scan: Scan) -> None:
    conn.execute(
        sa.update(raw_scans)
        .where(raw_scans.c.domain == scan.domain, raw_scans.c.scan_id == scan.scan_id)
        .values(checkpointed_at=datetime.now(UTC))
    )


def mark_refused(conn: sa.Connection, scan: Scan, why: str) -> None:
    conn.execute(sa.update(raw_scans).where(raw_scans.c.scan_id == scan.scan_id).values(refused=why))


def finish_scan(conn: sa.Connection, domain: Domain, scan: Scan) -> None:
    """The scan is merged: after a full one, remember what each view listed (the empty-view guard reads it)."""
    if scan.full:
        now = datetime.now(UTC)
        for position in scan.views.values():
            conn.execute(
                sa.update(raw_scan_views)
                .where(raw_scan_views.c.domain == domain.name, raw_scan_views.c.view == position.view)
                .values(last_full_records=position.records, last_full_at=now)
            )
    discard_scan(conn, domain)


@dataclass(frozen=True)
class DeleteGuard:
    """Refuses a merge that would delete a large share of a domain, or follows a view that went empty."""

    max_share: float = DEFAULT_MAX_DELETE_SHARE
    min_rows: int = DEFAULT_MIN_MASS_DELETE
    allow: bool = False

    def problems(self, domain: Domain, scan: Scan, counts: DeletionCounts) -> list[str]:
        problems = [
            f"view {p.view!r} listed no records, where the last full listing had {p.last_full_records:,}"
            for p in _empty_views(domain, scan)
        ]
        share = counts.at_risk / counts.live if counts.live else 0.0
        if counts.at_risk >= self.min_rows and share > self.max_share:
            what = [f"{counts.deleted_by_crm:,} marked deleted by the CRM"]
            if scan.full:
                what.append(f"{counts.unlisted:,} missing from the listing")
            problems.append(
                f"it would delete {counts.at_risk:,} of {counts.live:,} live {domain.name} ({share:.0%}; "
                f"{', '.join(what)}), more than the {self.max_share:.0%} limit"
            )
        return problems

    def refusal(self, domain: Domain, scan: Scan, counts: DeletionCounts) -> str | None:
        """The refusal message, or None when the merge may go ahead."""
        problems = self.problems(domain, scan, counts)
        if not problems or self.allow:
            return None
        listed = "; ".join(
            f"{p.view}: {p.records:,}"
            + (f" (last full listing {p.last_full_records:,})" if p.last_full_records is not None else "")
            for p in scan.views.values()
        )
        return (
            f"{domain.raw_table}: refusing to merge this {'full' if scan.full else 'incremental'} scan: "
            f"{'; and '.join(problems)}. Views listed: {listed}. Nothing was written. If a view lost its "
            "records by accident (permissions, a changed filter), fix it in the CRM and run again; if the "
            f"records really are gone, run {domain.raw_asset} once with allow_mass_delete: true in its config "
            "(from the command line: crm-assets run --allow-mass-delete)."
        )


def _empty_views(domain: Domain, scan: Scan) -> Sequence[ViewPosition]:
    if not scan.full:
        return []
    return [
        p for p in scan.views.values() if p.view in domain.views and p.records == 0 and (p.last_full_records or 0) > 0
    ]
