"""Progress of a view scan: events for callers, and a throttled log line for people watching a run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

LOG_EVERY_SECONDS = 5.0
LOG_EVERY_PAGES = 50


@dataclass(frozen=True)
class ProgressEvent:
    entity: str
    view: str
    page: int
    records_so_far: int
    total: int | None  # meta.total of the view, as the CRM reported it on page 1
    total_pages: int | None
    rate: float  # records per second since the scan started
    eta_seconds: float | None  # None when unknown (incremental scans stop before the end)
    incremental: bool = False

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None
        return min(100.0, 100.0 * self.records_so_far / self.total)


def describe(event: ProgressEvent) -> str:
    """'deals / Open Deals: 3,400 of 10,012 records (34%), page 34 of 101, 2,100 rec/s, ~3 s left'."""
    head = f"{event.entity} / {event.view}: "
    if event.incremental:
        return head + (f"{event.records_so_far:,} changed records so far, page {event.page}, {event.rate:,.0f} rec/s")
    counted = f"{event.records_so_far:,} records"
    if event.total is not None and event.percent is not None:
        counted = f"{event.records_so_far:,} of {event.total:,} records ({event.percent:.0f}%)"
    pages = f"page {event.page}" + (f" of {event.total_pages:,}" if event.total_pages else "")
    eta = f", ~{event.eta_seconds:,.0f} s left" if event.eta_seconds is not None else ""
    return f"{head}{counted}, {pages}, {event.rate:,.0f} rec/s{eta}"


class ProgressTracker:
    """Counts records of one view scan; emits an event per page and logs every few seconds or pages."""

    def __init__(
        self,
        entity: str,
        view: str,
        *,
        clock: Callable[[], float],
        log: logging.Logger,
        on_progress: Callable[[ProgressEvent], None] | None,
        incremental: bool,
    ) -> None:
        self.entity = entity
        self.view = view
        self._clock = clock
        self._log = log
        self._on_progress = on_progress
        self._incremental = incremental
        self._started = clock()
        self._last_logged = self._started
        self._pages_since_log = 0
        self.records = 0
        self.pages = 0
        self.total: int | None = None
        self.total_pages: int | None = None

    def set_totals(self, total: int | None, total_pages: int | None) -> None:
        self.total, self.total_pages = total, total_pages

    def page_done(self, page: int, records: int) -> ProgressEvent:
        self.records += records
        self.pages += 1
        now = self._clock()
        event = self._event(page, now)
        if self._on_progress is not None:
            self._on_progress(event)
        self._pages_since_log += 1
        if now - self._last_logged >= LOG_EVERY_SECONDS or self._pages_since_log >= LOG_EVERY_PAGES:
            self._log.info(describe(event))
            self._last_logged, self._pages_since_log = now, 0
        return event

    def finish(self) -> None:
        elapsed = max(self._clock() - self._started, 0.0)
        kind = "changed records" if self._incremental else "records"
        pages = f"{self.pages:,} page" + ("" if self.pages == 1 else "s")
        self._log.info(f"{self.entity} / {self.view}: done, {self.records:,} {kind} in {pages}, {elapsed:,.1f} s")

    def _event(self, page: int, now: float) -> ProgressEvent:
        elapsed = now - self._started
        rate = self.records / elapsed if elapsed > 0 else 0.0
        eta: float | None = None
        if not self._incremental and self.total is not None and rate > 0:
            eta = max(self.total - self.records, 0) / rate
        return ProgressEvent(
            entity=self.entity,
            view=self.view,
            page=page,
            records_so_far=self.records,
            total=self.total,
            total_pages=self.total_pages,
            rate=rate,
            eta_seconds=eta,
            incremental=self._incremental,
        )
