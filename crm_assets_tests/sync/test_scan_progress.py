"""Progress of a long scan: a resumed view starts where it stopped, and the time left follows the hourly budget."""

from __future__ import annotations

import logging

from crm_assets.demo_crm import DEMO_API_KEY, DEMO_BASE_URL, DemoConfig, DemoCrm
from crm_assets.freshsales.client import ClientStats, FreshsalesClient
from crm_assets.freshsales.progress import ProgressEvent, ProgressTracker, describe
from crm_assets.freshsales.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_budget_tells_how_long_more_requests_must_take() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, 10, clock=clock, sleep=clock.sleep)
    assert limiter.seconds_for(10) == 0.0
    for _ in range(10):
        limiter.acquire()
    clock.now = 600.0
    # 25 more: 10 when the first hour's grants expire, 10 an hour later, the last 5 an hour after that.
    assert limiter.seconds_for(25) == 3 * 3600 - 600
    assert limiter.seconds_for(1) == 3600 - 600


def test_time_left_of_a_resumed_scan_follows_the_hourly_budget() -> None:
    clock = FakeClock()
    limiter = RateLimiter(400, 1000, clock=clock, sleep=clock.sleep)
    for _ in range(1000):  # the hour's budget is spent
        limiter.acquire()
    waits = ClientStats(rate_limit_waits=3, waited_seconds=42.0)
    events: list[ProgressEvent] = []
    tracker = ProgressTracker(
        "deals",
        "Open Deals",
        clock=clock,
        log=logging.getLogger("test"),
        on_progress=events.append,
        incremental=False,
        limiter=limiter,
        waits=waits,
    )
    tracker.set_totals(500_000, 5_000, pages_before=2_000, per_page=100)
    clock.now += 0.1  # the page came fast: at this speed the rest would take 5 minutes
    event = tracker.page_done(2_001, 100)

    assert (event.page, event.records_so_far, event.total_pages) == (2_001, 200_100, 5_000)
    assert event.budget_bound and event.eta_seconds is not None
    # 2,999 pages left at 1,000 requests an hour: about three hours, however fast the last page came.
    assert 2.9 * 3600 < event.eta_seconds < 3.1 * 3600
    text = describe(event)
    assert "200,100 of 500,000 records (40%)" in text and "page 2,001 of 5,000" in text
    assert "3 budget waits (42 s)" in text and "h left (request budget)" in text
    assert events == [event]


def test_iter_view_resumes_at_a_page_and_reports_its_real_page_numbers() -> None:
    demo = DemoCrm(DemoConfig(accounts=5, contacts=5, deals=130, seed=2, dirty=False))
    events: list[ProgressEvent] = []

    def client() -> FreshsalesClient:
        return FreshsalesClient(
            DEMO_BASE_URL,
            DEMO_API_KEY,
            transport=demo.transport(),
            rate_limit_per_minute=0,
            rate_limit_per_hour=0,
            per_page=10,
            on_progress=events.append,
        )

    with client() as whole:
        pages = list(whole.iter_view("deals", "Open Deals"))
    events.clear()
    with client() as resumed:
        tail = list(resumed.iter_view("deals", "Open Deals", start_page=4))
    assert tail == pages[3:]
    assert [e.page for e in events] == list(range(4, len(pages) + 1))
    assert events[0].records_so_far == 30 + len(pages[3])
