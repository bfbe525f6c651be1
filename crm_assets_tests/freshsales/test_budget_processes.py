"""Three processes hammering one demo CRM (over HTTP, budget enforced) share one budget: no 429 in steady state."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from crm_assets.demo_crm import DEMO_API_KEY, DemoConfig, DemoCrm, Faults
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.warehouse.budget import shared_budget_store
from crm_assets.warehouse.engine import create_warehouse_engine, migrate

PER_MINUTE = 8
MINUTE_SECONDS = 1.0  # a fast clock: 8 requests a second between all three processes
REQUESTS_EACH = 8
PROCESSES = 3


def hammer(base_url: str, database_url: str | None, crm_ids: list[int], start_at: float) -> dict[str, Any]:
    """One process: REQUESTS_EACH record reads through a client on the shared budget (or a private one)."""
    engine = create_warehouse_engine(database_url) if database_url else None
    store = shared_budget_store(engine, base_url) if engine is not None else None
    with FreshsalesClient(
        base_url,
        DEMO_API_KEY,
        rate_limit_per_minute=PER_MINUTE,
        rate_limit_per_hour=0,
        rate_limit_minute_seconds=MINUTE_SECONDS,
        budget_store=store,
        # 10% of a 1 s window: a process descheduled between its grant and its send on a busy CI machine
        # must not push a request into the previous window (2.5% of Freshsales' real minute is 1.5 s).
        rate_limit_margin=0.1,
        backoff_base=0.1,
    ) as client:
        time.sleep(max(0.0, start_at - time.time()))  # start together, once every process has imported
        for n in range(REQUESTS_EACH):
            client.get_record("deals", "deal", crm_ids[n % len(crm_ids)])
        stats = client.stats.as_dict()
    if engine is not None:
        engine.dispose()
    return stats


def run_three(demo: DemoCrm, database_url: str | None) -> tuple[list[dict[str, Any]], list[float], float]:
    demo.faults = Faults(budget_per_minute=PER_MINUTE, budget_minute_seconds=MINUTE_SECONDS)
    crm_ids = demo.crm_ids("deals")[:50]
    with serve_demo_crm(demo) as url, multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        start_at = time.time() + 2.0
        jobs = [pool.apply_async(hammer, (url, database_url, crm_ids, start_at)) for _ in range(PROCESSES)]
        stats = [job.get(timeout=60) for job in jobs]
        took = time.time() - start_at
    assert demo.budget is not None
    return stats, demo.budget.log.rejected_at, took


@pytest.fixture
def demo() -> DemoCrm:
    return DemoCrm(DemoConfig(accounts=10, contacts=10, deals=60, seed=3))


def test_three_processes_share_the_budget_without_a_429(demo: DemoCrm, warehouse_url: str) -> None:
    migrate(create_warehouse_engine(warehouse_url))
    stats, rejected_at, took = run_three(demo, warehouse_url)

    # Steady state is every window after the first, where cold processes (first connection, first
    # import of the HTTP stack) send their first requests late and out of step with their grant times.
    assert [t for t in rejected_at if t >= MINUTE_SECONDS] == []
    assert sum(s["by_status"].get(200, 0) for s in stats) == PROCESSES * REQUESTS_EACH
    # Paced to the one budget: 24 requests at 8 a "minute" cannot take less than 2 "minutes".
    assert took >= (PROCESSES * REQUESTS_EACH / PER_MINUTE - 1) * MINUTE_SECONDS


def test_private_budgets_add_up_and_are_rate_limited(demo: DemoCrm) -> None:
    """The control: each process pacing itself to the whole budget overspends it three times over."""
    _, rejected_at, _ = run_three(demo, None)
    assert len(rejected_at) > 0
