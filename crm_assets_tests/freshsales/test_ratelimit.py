"""The client-side budgets: sliding minute and hour windows, shared by threads, waits logged with a reason."""

from __future__ import annotations

import logging
import threading

import pytest

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.ratelimit import RateLimiter
from crm_assets_tests.freshsales.fakes import API_KEY, BASE_URL, FakeCrm, make_records


class FakeClock:
    """Time that only moves when someone sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(round(seconds, 6))
            self.now = max(self.now, self.now + seconds)


def test_per_minute_budget() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 0, clock=clock, sleep=clock.sleep)
    waits = [limiter.acquire() for _ in range(3)]
    clock.now += 10
    waits.append(limiter.acquire())  # 4th: must wait until the 1st is a minute old
    assert waits == [0, 0, 0, 50]
    assert clock.now == 1060
    # The 2nd and 3rd also leave the window at 1060, so two more go at once; then the window is full
    # of requests granted at 1060 and the next one waits a whole minute.
    assert [limiter.acquire() for _ in range(3)] == [0, 0, 60]
    assert clock.now == 1120


def test_per_hour_budget_binds_when_the_minute_one_does_not() -> None:
    clock = FakeClock()
    limiter = RateLimiter(400, 5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        assert limiter.acquire() == 0
        clock.now += 60
    assert limiter.acquire() == pytest.approx(3600 - 300)


def test_unlimited_never_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, 0, clock=clock, sleep=clock.sleep)
    assert all(limiter.acquire() == 0 for _ in range(5000))
    assert clock.sleeps == []


def test_slots_are_reserved_so_sleep_time_does_not_change_the_schedule() -> None:
    # The injected sleep does not move the clock: the schedule must still hold 2 requests per minute.
    limiter = RateLimiter(2, 0, clock=lambda: 0.0, sleep=lambda s: None)
    waits = [limiter.reserve() for _ in range(6)]
    assert [w.seconds if w else 0 for w in waits] == [0, 0, 60, 60, 120, 120]
    assert waits[2] is not None and waits[2].reason == "2 requests/minute budget used"


def test_threads_share_one_budget() -> None:
    limiter = RateLimiter(10, 0, clock=lambda: 0.0, sleep=lambda s: None)
    slots: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(10):
            wait = limiter.reserve()
            with lock:
                slots.append(wait.seconds if wait else 0.0)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(slots) == [minute * 60.0 for minute in range(4) for _ in range(10)]


def test_client_waits_are_logged_and_counted(fake_crm: FakeCrm, caplog: pytest.LogCaptureFixture) -> None:
    fake_crm.add_view("deals", "Open Deals", 1, make_records(30))
    clock = FakeClock()
    client = FreshsalesClient(
        BASE_URL,
        API_KEY,
        transport=fake_crm.transport(),
        rate_limit_per_minute=2,
        rate_limit_per_hour=0,
        max_concurrency=1,
        per_page=10,
        sleep=clock.sleep,
        wall_clock=clock,
    )
    with caplog.at_level(logging.INFO, logger="crm_assets.freshsales"):
        pages = list(client.iter_view("deals", "Open Deals"))
    client.close()

    assert sum(len(p) for p in pages) == 30
    assert len(fake_crm.requests) == 5  # filters, pages 1-3 and the empty page 4: slots 0, 0, 61.5, 61.5, 123
    assert client.stats.rate_limit_waits == 2
    assert clock.sleeps == [61.5, 61.5]  # each window lengthened by the 2.5% margin
    assert client.stats.waited_seconds == 123.0
    assert "rate limit: 2 requests/minute budget used, waiting 61.5 s" in caplog.text
