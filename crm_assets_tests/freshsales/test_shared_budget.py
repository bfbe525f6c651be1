"""One budget per CRM account, shared by every limiter on the same warehouse (processes stand in as limiters)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from crm_assets.demo_crm import DEMO_API_KEY, DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.freshsales.ratelimit import BudgetState, FileBudgetStore, MemoryBudgetStore, RateLimiter
from crm_assets.freshsales.retry import MAX_HINT_SECONDS
from crm_assets.resources import CrmResource
from crm_assets.warehouse.budget import PostgresBudgetStore, crm_account, shared_budget_store
from crm_assets.warehouse.engine import create_warehouse_engine, migrate

ACCOUNT = "https://acme.myfreshworks.com/crm/sales"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def slots(limiters: list[RateLimiter], rounds: int) -> list[float]:
    """Alternate reservations between the limiters; the wait each one got."""
    waits = []
    for n in range(rounds):
        wait = limiters[n % len(limiters)].reserve()
        waits.append(wait.seconds if wait else 0.0)
    return waits


def test_limiters_on_one_warehouse_share_one_budget(warehouse_engine: Engine) -> None:
    clock = Clock()
    # Two engines, as two processes would have: only the warehouse state connects them.
    other_engine = create_warehouse_engine(warehouse_engine.url)
    try:
        limiters = [
            RateLimiter(3, 0, clock=clock, sleep=lambda s: None, store=shared_budget_store(engine, ACCOUNT))
            for engine in (warehouse_engine, other_engine)
        ]
        assert slots(limiters, 7) == [0, 0, 0, 60, 60, 60, 120]
    finally:
        other_engine.dispose()


def test_an_account_is_the_crm_host() -> None:
    assert crm_account("https://ACME.myfreshworks.com/crm/sales/") == "acme.myfreshworks.com"
    assert crm_account("http://127.0.0.1:8300/crm/sales") == "127.0.0.1:8300"


def test_accounts_have_separate_budgets(warehouse_engine: Engine) -> None:
    clock = Clock()
    first, second = (
        RateLimiter(1, 0, clock=clock, sleep=lambda s: None, store=shared_budget_store(warehouse_engine, account))
        for account in (ACCOUNT, "https://other.myfreshworks.com/crm/sales")
    )
    assert first.reserve() is None and second.reserve() is None


def test_the_store_follows_the_warehouse(warehouse_engine: Engine) -> None:
    store = shared_budget_store(warehouse_engine, ACCOUNT)
    if warehouse_engine.dialect.name == "postgresql":
        assert isinstance(store, PostgresBudgetStore)
    else:
        assert isinstance(store, FileBudgetStore)
        assert store.path.parent == Path(str(warehouse_engine.url.database)).parent
        assert store.path.name == "warehouse.db.acme_myfreshworks_com.crm-budget.json"
    assert isinstance(shared_budget_store(create_warehouse_engine("sqlite://"), ACCOUNT), MemoryBudgetStore)


def test_threads_of_two_file_stores_never_overspend(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "budget.json"
    limiters = [RateLimiter(10, 0, clock=clock, sleep=lambda s: None, store=FileBudgetStore(path)) for _ in range(2)]
    waits: list[float] = []
    lock = threading.Lock()

    def take(limiter: RateLimiter) -> None:
        for _ in range(10):
            wait = limiter.reserve()
            with lock:
                waits.append(wait.seconds if wait else 0.0)

    threads = [threading.Thread(target=take, args=(limiters[n % 2],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == [minute * 60.0 for minute in range(4) for _ in range(10)]


def test_an_unreadable_state_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    path.write_text("{not json")
    limiter = RateLimiter(1, 0, clock=Clock(), sleep=lambda s: None, store=FileBudgetStore(path))
    assert limiter.reserve() is None
    assert BudgetState.from_json(path.read_bytes()).grants == [Clock().now]


@pytest.mark.parametrize("status", [200, 429])
def test_the_crms_remaining_zero_holds_every_caller_until_its_reset(status: int) -> None:
    clock = Clock()
    store = MemoryBudgetStore()
    limiters = [RateLimiter(400, 0, clock=clock, sleep=lambda s: None, store=store) for _ in range(2)]
    limiters[0].observe(status, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "20"})
    assert slots(limiters, 3) == [20.0, 20.0, 20.0]
    clock.now += 21
    assert slots(limiters, 1) == [0.0]  # the CRM's window has reset


@pytest.mark.parametrize("reset", ["500000000", "1790000000000", "inf"])  # seconds, epoch milliseconds, nonsense
def test_a_reset_hint_beyond_the_hour_holds_callers_an_hour_at_most(reset: str) -> None:
    clock = Clock()
    limiters = [RateLimiter(400, 0, clock=clock, sleep=lambda s: None)]
    limiters[0].observe(429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
    assert slots(limiters, 1) == [MAX_HINT_SECONDS]


def test_a_far_future_budget_state_left_by_an_earlier_release_is_forgotten(tmp_path: Path) -> None:
    """A shared state that says to wait for years (written before hints were capped) holds nobody."""
    clock = Clock()
    path = tmp_path / "budget.json"
    years = clock.now + 5e8
    path.write_bytes(BudgetState(grants=[years], server_remaining=0, server_reset_at=years).to_json())
    limiter = RateLimiter(400, 1000, clock=clock, sleep=lambda s: None, store=FileBudgetStore(path))
    assert slots([limiter], 2) == [0.0, 0.0]


def test_the_crms_remaining_count_is_spent_before_waiting_for_its_reset() -> None:
    clock = Clock()
    limiter = RateLimiter(400, 1000, clock=clock, sleep=lambda s: None)
    limiter.observe(200, {"x-ratelimit-remaining": "2", "x-ratelimit-reset": str(int(clock.now) + 30)})  # an epoch
    assert slots([limiter], 3) == [0.0, 0.0, 30.0]


def test_answers_without_rate_limit_headers_or_with_plenty_left_change_nothing() -> None:
    store = MemoryBudgetStore()
    limiter = RateLimiter(2, 0, clock=Clock(), sleep=lambda s: None, store=store)
    limiter.observe(200, {})
    limiter.observe(200, {"x-ratelimit-remaining": "soon"})
    limiter.observe(200, {"x-ratelimit-remaining": "350", "x-ratelimit-reset": "40"})
    assert store.update(lambda state: state) == BudgetState()
    assert slots([limiter], 3) == [0.0, 0.0, 60.0]


def test_a_scaled_minute_for_benchmarks() -> None:
    limiter = RateLimiter(2, 10, clock=Clock(), sleep=lambda s: None, minute_seconds=6.0)
    assert slots([limiter], 3) == [0.0, 0.0, 6.0]
    assert [b.window_seconds for b in limiter.budgets] == [6.0, 360.0]


def test_migrate_creates_the_budget_table(pg_url: str) -> None:
    engine = create_warehouse_engine(pg_url)
    migrate(engine)
    try:
        store = PostgresBudgetStore(engine, ACCOUNT)
        assert store.update(lambda state: len(state.grants)) == 0
        store.update(lambda state: state.grants.append(1.0))
        assert store.update(lambda state: state.grants) == [1.0]
    finally:
        engine.dispose()


def test_the_crm_resource_spends_the_budget_kept_in_its_warehouse(warehouse_url: str) -> None:
    demo = DemoCrm(DemoConfig(accounts=5, contacts=5, deals=5, seed=1))
    with serve_demo_crm(demo) as url:
        resource = CrmResource(base_url=url, api_key=DEMO_API_KEY, budget_database_url=warehouse_url)
        with resource.get_client() as client:
            client.view_id("deals", "Open Deals")
        engine = create_warehouse_engine(warehouse_url)
        try:
            # The same account however its base URL is spelt.
            grants = shared_budget_store(engine, url.upper() + "/api/").update(lambda state: list(state.grants))
        finally:
            engine.dispose()
    assert len(grants) == 1
