"""The sync steps without Dagster: CRM -> raw table (extract), raw table -> clean table (clean and load).

The assets in `defs/sync` wrap these with metadata and logging; the benchmark calls them directly.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from crm_assets.domains import Domain
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmListingIncompleteError, CrmNotFoundError
from crm_assets.freshsales.progress import duration_text
from crm_assets.warehouse.clean_guard import DEFAULT_CLEAN_GUARD, CleanGuard
from crm_assets.warehouse.clean_load import TableChanges, clean_changes
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.locks import LockBusyError, named_lock
from crm_assets.warehouse.raw import RawLoadStats, RawWriter, read_cursor, save_cursor
from crm_assets.warehouse.scan import (
    DeleteGuard,
    ExtractionBusyError,
    MassDeleteRefusedError,
    Scan,
    ScanMovedError,
    ViewPosition,
    finish_scan,
    load_scan,
    mark_refused,
    save_checkpoint,
    start_scan,
    touch_scan,
)

# Pages handed to the stager thread and not yet staged, at most (each holds up to per_page records).
_PAGES_STAGING_AHEAD = 2
# How long an extraction waits for another of the same domain to end: an incremental sync takes minutes.
EXTRACT_LOCK_WAIT_SECONDS = 600.0


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
    resumed: bool = False
    scan_note: str = ""  # how the scan started: new, resumed or restarted, and why


@dataclass(frozen=True)
class ScanSettings:
    """How an extraction checkpoints, resumes, confirms deletes and guards against mass deletes."""

    checkpoint_pages: int = 200  # commit the staged pages every this many pages ...
    checkpoint_seconds: float = 300.0  # ... or this many seconds, whichever comes first
    max_scan_age: timedelta = timedelta(days=3)  # an unfinished scan older than this starts over
    delete_checks: int = 1_000  # GETs per run confirming records a full listing did not show
    guard: DeleteGuard = field(default_factory=DeleteGuard)

    def __post_init__(self) -> None:
        if self.checkpoint_pages < 1 or self.checkpoint_seconds <= 0 or self.delete_checks < 0:
            raise ValueError("checkpoint_pages and checkpoint_seconds must be positive, delete_checks not negative")


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
    settings: ScanSettings | None = None,
    log: logging.Logger | None = None,
) -> ExtractResult:
    """Read changed (or all) records of a domain into its raw table, resuming an unfinished scan.

    Pages are staged in checkpoints (no transaction spans more than one); the merge into the raw table,
    the reconciliation and the cursor advance happen once, in one transaction, when the scan is complete.
    """
    log = log or logging.getLogger(__name__)
    settings = settings or ScanSettings()

    def waiting() -> None:
        log.warning(
            f"{domain.name}: another sync is extracting it now; waiting up to {EXTRACT_LOCK_WAIT_SECONDS / 60:g} min "
            "for it to end, then reading what changed since"
        )

    # One extraction of a domain at a time, across processes: a second one (a second `crm-assets run`, a
    # manual run beside the schedule) would resume the same scan and spend the request budget twice.
    with _extract_lock(engine, domain, waiting):
        scan, resumed, note = _open_scan(engine, domain, run_id, full_refresh, reconcile_every, overlap, settings)
        log.info(f"{domain.name}: {note}")
        for view in scan.views.values():
            if not view.done:
                _scan_view(engine, domain, client, scan, view, settings)
        with engine.connect() as conn:
            scan = _reload(conn, domain)
        _guard(engine, domain, scan, run_id, settings)
        if scan.full:
            _confirm_unlisted(engine, domain, client, scan, run_id, settings, log)
        with engine.begin() as conn:
            state = read_cursor(conn, domain)
            stats = RawWriter(conn, domain, run_id, scan.scan_id).apply(reconcile=scan.full)
            cursor = _next_cursor(state.cursor, stats.max_updated_at, scan.started_at)
            save_cursor(conn, domain, cursor, full=scan.full)
            finish_scan(conn, domain, scan)
    _log_outcome(domain, stats, log)
    plan = SyncPlan(scan.full, scan.reason, scan.since)
    return ExtractResult(plan=plan, stats=stats, cursor=cursor, resumed=resumed, scan_note=note)


@contextmanager
def _extract_lock(engine: sa.Engine, domain: Domain, on_wait: Callable[[], None]) -> Iterator[None]:
    """The domain's extract lock, waited for EXTRACT_LOCK_WAIT_SECONDS at most: a wait for a first sync of
    hours would hold a `crm_api` pool slot that write-backs need. ExtractionBusyError names the other scan."""
    with ExitStack() as held:
        try:  # only the taking: a LockBusyError from inside the block would not be this lock's
            held.enter_context(named_lock(engine, f"extract.{domain.name}", on_wait, EXTRACT_LOCK_WAIT_SECONDS))
        except LockBusyError:
            with engine.connect() as conn:
                other = load_scan(conn, domain)
            since = f", its scan started {_age(other.started_at)} ago ({other.position_text()})" if other else ""
            raise ExtractionBusyError(
                f"{domain.raw_table}: another sync has been extracting {domain.name} for longer than this run "
                f"waits ({EXTRACT_LOCK_WAIT_SECONDS / 60:g} min){since}. Nothing was read; run again once it ends."
            ) from None
        yield


def _open_scan(
    engine: sa.Engine,
    domain: Domain,
    run_id: str | None,
    full_refresh: bool,
    reconcile_every: timedelta,
    overlap: timedelta,
    settings: ScanSettings,
) -> tuple[Scan, bool, str]:
    """Resume the unfinished scan when it is still good, else plan a new one; says which and why."""
    with engine.begin() as conn:
        scan = load_scan(conn, domain)
        restart = _why_restart(scan, full_refresh, settings) if scan is not None else None
        if scan is not None and restart is None:
            age = _age(scan.started_at)
            kind = "full" if scan.full else "incremental"
            return scan, True, f"resuming the unfinished {kind} scan started {age} ago: {scan.position_text()}"
        state = read_cursor(conn, domain)
        plan = plan_sync(
            state.cursor,
            state.last_full_sync_at,
            full_refresh=full_refresh,
            reconcile_every=reconcile_every,
            overlap=overlap,
        )
        scan = start_scan(conn, domain, full=plan.full, since=plan.since, reason=plan.reason, run_id=run_id)
    since = f", records updated since {plan.since.isoformat()}" if plan.since else ""
    mode = "full" if plan.full else "incremental"
    reason = "" if plan.reason == mode else f" ({plan.reason})"  # the reason may only repeat the mode
    note = f"{mode} sync{reason}{since}"
    return scan, False, (f"restarting: {restart}; new " + note) if restart else note


def _why_restart(scan: Scan, full_refresh: bool, settings: ScanSettings) -> str | None:
    if scan.refused is not None and not settings.guard.allow:
        return "the last scan's merge was refused (a mass delete), and allow_mass_delete is off"
    if datetime.now(UTC) - scan.started_at > settings.max_scan_age:
        return (
            f"the unfinished scan started {_age(scan.started_at)} ago, more than the "
            f"{duration_text(settings.max_scan_age.total_seconds())} a scan may take (max_scan_age_hours)"
        )
    if full_refresh and not scan.full:
        return "a full refresh was asked for and the unfinished scan is incremental"
    return None


def _age(since: datetime) -> str:
    return duration_text(max((datetime.now(UTC) - since).total_seconds(), 0.0))


def _reload(conn: sa.Connection, domain: Domain) -> Scan:
    scan = load_scan(conn, domain)
    if scan is None:
        raise ScanMovedError(f"{domain.raw_table}: the unfinished scan was removed by another process; run again")
    return scan


class _Checkpoints:
    """Stages pages and commits them (with the view's new position) every few pages or seconds.

    On PostgreSQL a writer thread stages each page as it arrives (record checks, then one COPY per checkpoint
    kept open) in a transaction of its own, while the next pages are fetched; the reader waits for it only at
    each checkpoint's commit, so a kill loses no more pages than before. On SQLite, whose writers lock the
    whole file, pages are buffered and written in one short transaction at the checkpoint.
    """

    def __init__(self, engine: sa.Engine, domain: Domain, scan: Scan, view: ViewPosition, settings: ScanSettings):
        self.engine, self.domain, self.scan, self.settings = engine, domain, scan, settings
        self.view = view.view
        self.next_page = view.next_page
        self.deleted = view.view == domain.deleted_view
        self.pages: list[list[dict[str, Any]]] = []  # buffered until the checkpoint (SQLite)
        self.count = 0  # pages since the last checkpoint
        self.last_commit = time.monotonic()
        streaming = is_postgres(engine)
        self._stager = ThreadPoolExecutor(1, thread_name_prefix="scan-stage") if streaming else None
        self._pending: deque[Future[None]] = deque()
        self._arrived: deque[list[dict[str, Any]]] = deque()  # pages handed to the stager, not yet taken
        self._staging: RawWriter | None = None  # the stager thread's writer, in its open transaction
        self._records = 0

    def add(self, page: list[dict[str, Any]]) -> None:
        self.count += 1
        if self._stager is None:
            self.pages.append(page)
        else:
            self._arrived.append(page)
            self._pending.append(self._stager.submit(self._stage_arrived))
            while len(self._pending) > _PAGES_STAGING_AHEAD:  # bounded memory: wait for the stager
                self._pending.popleft().result()
        due = time.monotonic() - self.last_commit >= self.settings.checkpoint_seconds
        if self.count >= self.settings.checkpoint_pages or due:
            self.commit(done=False)

    def commit(self, *, done: bool) -> None:
        to_page = self.next_page + self.count
        if self._stager is None:
            with self.engine.begin() as conn:
                writer = RawWriter(conn, self.domain, self.scan.run_id, self.scan.scan_id)
                records = sum(writer.add(page, deleted=self.deleted) for page in self.pages)
                save_checkpoint(conn, self.scan, self.view, self.next_page, to_page, records, done=done)
        else:
            self._pending.append(self._stager.submit(self._commit_staged, to_page, done))
            while self._pending:
                self._pending.popleft().result()
        self.next_page, self.pages, self.count, self.last_commit = to_page, [], 0, time.monotonic()

    def close(self) -> None:
        """Stop the stager; what it staged since the last checkpoint is rolled back (as a buffer would be lost)."""
        if self._stager is not None:
            self._stager.submit(self._discard)
            self._stager.shutdown(wait=True)

    # -- on the stager thread ----------------------------------------------------------------------

    def _writer(self) -> RawWriter:
        if self._staging is None:
            conn = self.engine.connect()
            conn.begin()
            self._staging = RawWriter(conn, self.domain, self.scan.run_id, self.scan.scan_id)
            self._staging.open_stream()  # one COPY per checkpoint: the server stores rows as they come
        return self._staging

    def _stage_arrived(self) -> None:
        """Stage every page that has arrived, in one COPY (the pages that piled up while the last one ran)."""
        pages = []
        while self._arrived:
            pages.append(self._arrived.popleft())
        if pages:
            self._records += self._writer().add(itertools.chain.from_iterable(pages), deleted=self.deleted)

    def _commit_staged(self, to_page: int, done: bool) -> None:
        writer = self._writer()
        writer.close_stream()
        conn = writer.conn
        save_checkpoint(conn, self.scan, self.view, self.next_page, to_page, self._records, done=done)
        conn.commit()
        self._discard()

    def _discard(self) -> None:
        if self._staging is not None:
            if self._staging.streaming:  # stopped half way through a COPY: the connection cannot be reused
                self._staging.conn.invalidate()
            self._staging.conn.close()  # rolls back whatever is not committed
        self._staging, self._records = None, 0


def _scan_view(
    engine: sa.Engine,
    domain: Domain,
    client: FreshsalesClient,
    scan: Scan,
    view: ViewPosition,
    settings: ScanSettings,
) -> None:
    checkpoints = _Checkpoints(engine, domain, scan, view, settings)
    # Deleting bumps updated_at, so the Recycle Bin is read down to the cursor too; a delete that did not
    # (or a record purged from the bin) is caught by the periodic full reconciliation.
    pages = client.iter_view(domain.entity, view.view, stop_before=scan.since, start_page=view.next_page)
    try:
        try:
            for page in pages:
                checkpoints.add(page)
            checkpoints.commit(done=True)
        finally:
            checkpoints.close()
    except CrmListingIncompleteError as exc:
        # The records missing are on a page a checkpoint may have passed: the next run must read it again.
        _rewind_view(engine, scan, view.view, checkpoints.next_page, exc.page)
        raise


def _rewind_view(engine: sa.Engine, scan: Scan, view: str, next_page: int, page: int) -> None:
    if page < next_page:
        with engine.begin() as conn:
            save_checkpoint(conn, scan, view, next_page, page, 0, done=False)


def _guard(engine: sa.Engine, domain: Domain, scan: Scan, run_id: str | None, settings: ScanSettings) -> None:
    """Refuse, before any confirmation is spent and before anything is merged, what looks like an accident."""
    with engine.connect() as conn:
        counts = RawWriter(conn, domain, run_id, scan.scan_id).deletion_counts(reconcile=scan.full)
    refusal = settings.guard.refusal(domain, scan, counts)
    if refusal is None:
        return
    with engine.begin() as conn:
        mark_refused(conn, scan, refusal)
    raise MassDeleteRefusedError(refusal)


def _confirm_unlisted(
    engine: sa.Engine,
    domain: Domain,
    client: FreshsalesClient,
    scan: Scan,
    run_id: str | None,
    settings: ScanSettings,
    log: logging.Logger,
) -> None:
    """GET each live record the full listing did not show (up to the cap), staging what the CRM answers."""
    with engine.connect() as conn:
        writer = RawWriter(conn, domain, run_id, scan.scan_id)
        total = writer.deletion_counts(reconcile=True).unlisted
        ids = writer.unlisted_ids(settings.delete_checks)
    if not total:
        return
    log.info(
        f"{domain.name}: {total:,} live records were not listed; checking {len(ids):,} of them one by one"
        + (f" (the rest wait for a later run: delete_checks is {settings.delete_checks:,})" if len(ids) < total else "")
    )
    found: dict[int, dict[str, Any] | None] = {}
    last_commit = time.monotonic()
    for crm_id in ids:
        found[crm_id] = _current_copy(client, domain, crm_id)
        if len(found) >= settings.checkpoint_pages or time.monotonic() - last_commit >= settings.checkpoint_seconds:
            _stage_confirmations(engine, domain, scan, run_id, found)
            found, last_commit = {}, time.monotonic()
    _stage_confirmations(engine, domain, scan, run_id, found)


def _current_copy(client: FreshsalesClient, domain: Domain, crm_id: int) -> dict[str, Any] | None:
    try:
        return client.get_record(domain.entity, domain.singular, crm_id)
    except CrmNotFoundError:
        return None


def _stage_confirmations(
    engine: sa.Engine, domain: Domain, scan: Scan, run_id: str | None, found: dict[int, dict[str, Any] | None]
) -> None:
    if not found:
        return
    with engine.begin() as conn:
        RawWriter(conn, domain, run_id, scan.scan_id).add_confirmations(found)
        touch_scan(conn, scan)


def _next_cursor(old: datetime | None, newest_seen: datetime | None, started_at: datetime) -> datetime | None:
    """The newest updated_at read, but never past the scan's start: a record edited while later pages or
    views were read may have moved to a page already read, and the next incremental run must see it."""
    if newest_seen is None:
        return old
    new = min(newest_seen, started_at)
    return new if old is None else max(old, new)


def _log_outcome(domain: Domain, stats: RawLoadStats, log: logging.Logger) -> None:
    if stats.unlisted_checked:
        log.info(
            f"{domain.name}: {stats.unlisted_checked:,} records missing from the listing were re-read: "
            f"{stats.confirmed_deleted:,} confirmed deleted, {stats.still_live:,} still live (merged)"
        )
    if stats.unconfirmed:
        log.warning(
            f"{domain.name}: {stats.unconfirmed:,} live records missing from the listing were left as they are, "
            "unconfirmed (over this run's delete_checks); a later full reconciliation checks them"
        )
    if stats.rejected:
        kinds = ", ".join(f"{k}: {n}" for k, n in stats.rejected_by_reason.items())
        log.warning(f"{domain.name}: {stats.rejected:,} records the warehouse cannot store were quarantined ({kinds})")


def clean_domain(
    engine: sa.Engine,
    domain: Domain,
    run_id: str | None,
    *,
    rebuild: bool = False,
    track: Sequence[str] = (),
    log: logging.Logger | None = None,
    guard: CleanGuard = DEFAULT_CLEAN_GUARD,
) -> TableChanges:
    """Bring a clean table up to date with its raw table (only what changed, unless `rebuild`), in one transaction.

    The transaction writes no raw row before it reads them: the next batches may be read on a second connection.
    """
    with engine.begin() as conn:
        return clean_changes(conn, domain, run_id, rebuild=rebuild, track=track, log=log, guard=guard, ahead=True)
