"""Progress of a view scan: events for callers, and a throttled log line for people watching a run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

LOG_EVERY_SECONDS = 5.0
LOG_EVERY_PAGES = 50


class Budgeted(Protocol):
    """The client's rate limiter: how long `requests` more requests must take under the budgets."""

    def seconds_for(self, requests: int) -> float: ...


class WaitCounts(Protocol):
    """The client's counters of rate-limit waits."""

    rate_limit_waits: int
    waited_seconds: float


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
    budget_waits: int = 0  # rate-limit waits of the client so far
    waited_seconds: float = 0.0  # ... and their time, with retry backoff
    budget_bound: bool = False  # the time left follows the request budget, not the observed speed

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
    pages = f"page {event.page:,}" + (f" of {event.total_pages:,}" if event.total_pages else "")
    eta = ""
    if event.eta_seconds is not None:
        eta = f", ~{duration_text(event.eta_seconds)} left" + (" (request budget)" if event.budget_bound else "")
    waits = ""
    if event.budget_waits:
        waits = f", {event.budget_waits:,} budget waits ({duration_text(event.waited_seconds)})"
    return f"{head}{counted}, {pages}, {event.rate:,.0f} rec/s{waits}{eta}"


def duration_text(seconds: float) -> str:
    """'42 s', '17 min', '3.5 h'."""
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"


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
        limiter: Budgeted | None = None,
        waits: WaitCounts | None = None,
    ) -> None:
        self.entity = entity
        self.view = view
        self._clock = clock
        self._log = log
        self._on_progress = on_progress
        self._incremental = incremental
        self._limiter = limiter
        self._waits = waits
        self._started = clock()
        self._last_logged = self._started
        self._pages_since_log = 0
        self.records = 0
        self.pages = 0
        self.total: int | None = None
        self.total_pages: int | None = None
        self.records_before = 0  # a resumed scan: records on the pages an earlier run read

    def set_totals(
        self, total: int | None, total_pages: int | None, *, pages_before: int = 0, per_page: int = 0
    ) -> None:
        """The view's size as the CRM reports it; `pages_before` full pages were read by an earlier run."""
        self.total, self.total_pages = total, total_pages
        self.records_before = pages_before * per_page

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
        done = self.records_before + self.records
        eta, budget_bound = self._time_left(page, done, rate)
        return ProgressEvent(
            entity=self.entity,
            view=self.view,
            page=page,
            records_so_far=done,
            total=self.total,
            total_pages=self.total_pages,
            rate=rate,
            eta_seconds=eta,
            incremental=self._incremental,
            budget_waits=self._waits.rate_limit_waits if self._waits is not None else 0,
            waited_seconds=self._waits.waited_seconds if self._waits is not None else 0.0,
            budget_bound=budget_bound,
        )

    def _time_left(self, page: int, done: int, rate: float) -> tuple[float | None, bool]:
        """(seconds left, whether the request budget sets it): the slower of the observed speed and the budget.

        The first minutes of a long scan run at full speed on a fresh hourly budget; from then on the
        budget sets the pace, so the speed alone would promise far too little.
        """
        if self._incremental or self.total is None:
            return None, False
        by_speed = max(self.total - done, 0) / rate if rate > 0 else None
        requests_left = max(self.total_pages - page, 0) if self.total_pages is not None else 0
        by_budget = self._limiter.seconds_for(requests_left) if self._limiter is not None else 0.0
        if by_speed is None or by_budget > by_speed:
            return (by_budget, True) if by_budget > 0 else (by_speed, False)
        return by_speed, False
