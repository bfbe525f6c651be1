"""The client against the demo CRM, in process and over loopback HTTP, with its injected faults."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from crm_assets.demo_crm import DEMO_API_KEY, DEMO_BASE_URL, DemoConfig, DemoCrm, Faults
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.freshsales.client import FreshsalesClient, parse_instant
from crm_assets.freshsales.errors import CrmAuthError, CrmViewNotFoundError
from crm_assets.freshsales.progress import ProgressEvent
from crm_assets_tests.freshsales.conftest import FakeSleep

DEAL_VIEWS = ("Open Deals", "Won Deals", "Lost Deals")
CONFIG = DemoConfig(accounts=40, contacts=150, deals=1200, seed=11, today=date(2024, 6, 30))


@pytest.fixture(scope="module")
def reference() -> dict[int, dict[str, Any]]:
    """Every deal of the three views, read fault-free one page at a time: what every other read must match."""
    demo = DemoCrm(CONFIG)
    with FreshsalesClient(
        DEMO_BASE_URL, DEMO_API_KEY, transport=demo.transport(), rate_limit_per_minute=0, max_concurrency=1
    ) as client:
        records = {r["id"]: r for view in DEAL_VIEWS for page in client.iter_view("deals", view) for r in page}
    assert len(records) > 900
    return records


@pytest.fixture
def demo() -> DemoCrm:
    return DemoCrm(CONFIG)


@pytest.fixture
def client_for(fake_sleep: FakeSleep) -> Iterator[Callable[..., FreshsalesClient]]:
    clients: list[FreshsalesClient] = []

    def build(demo_or_url: DemoCrm | str, **options: Any) -> FreshsalesClient:
        settings: dict[str, Any] = {
            "rate_limit_per_minute": 0,
            "rate_limit_per_hour": 0,
            "sleep": fake_sleep,
            "backoff_base": 0.0,
            **options,
        }
        if isinstance(demo_or_url, DemoCrm):
            client = FreshsalesClient(DEMO_BASE_URL, DEMO_API_KEY, transport=demo_or_url.transport(), **settings)
        else:
            client = FreshsalesClient(demo_or_url, DEMO_API_KEY, **settings)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def read_deals(client: FreshsalesClient, *, updated_after: datetime | None = None) -> list[dict[str, Any]]:
    """Every deal of the three views, each id once (the copy read last), as the raw merge keeps them."""
    deals: dict[int, dict[str, Any]] = {}
    for view in DEAL_VIEWS:
        for page in client.iter_view("deals", view, stop_before=updated_after):
            deals.update((r["id"], r) for r in page)
    return list(deals.values())


def page_requests(demo: DemoCrm) -> list[Any]:
    return [r for r in demo.request_log if "/view/" in r.path]


def test_full_read_in_process_reads_each_deal_once(
    demo: DemoCrm, client_for: Callable[..., FreshsalesClient], reference: dict[int, dict[str, Any]]
) -> None:
    events: list[ProgressEvent] = []
    client = client_for(demo, max_concurrency=4, on_progress=events.append)

    deals = read_deals(client)

    ids = [d["id"] for d in deals]
    assert len(ids) == len(set(ids)) == len(reference)
    assert set(ids) == set(reference)
    listed = {e.view: e.records_so_far for e in events}  # the last event of each view
    assert sum(listed.values()) > len(reference)  # the demo lists some deals in two views
    assert all(e.total == listed[e.view] for e in events)


@pytest.mark.parametrize(
    "faults",
    [
        Faults(rate_limit_every=4),
        Faults(rate_limit_every=5, retry_after=True),
        Faults(server_error_every=3),
        Faults(drop_every=4),
        Faults(rate_limit_every=7, server_error_every=5, drop_every=6),
    ],
    ids=["429", "429-retry-after", "5xx", "dropped", "mixed"],
)
def test_faults_are_retried_without_losing_records(
    demo: DemoCrm,
    client_for: Callable[..., FreshsalesClient],
    reference: dict[int, dict[str, Any]],
    fake_sleep: FakeSleep,
    faults: Faults,
) -> None:
    demo.faults = faults
    client = client_for(demo)

    deals = read_deals(client)

    assert sorted(d["id"] for d in deals) == sorted(reference)
    assert client.stats.retries == sum(1 for r in demo.request_log if r.status != 200)
    assert client.stats.retries > 0
    if faults.rate_limit_every:
        assert fake_sleep.calls.count(1.0) >= 1  # x-ratelimit-reset (or Retry-After): 1 s, no jitter with base 0


def test_short_pages_do_not_end_the_read(
    demo: DemoCrm, client_for: Callable[..., FreshsalesClient], reference: dict[int, dict[str, Any]]
) -> None:
    demo.faults = Faults(short_pages=True)
    events: list[ProgressEvent] = []
    client = client_for(demo, per_page=100, on_progress=events.append)

    deals = read_deals(client)

    assert sorted(d["id"] for d in deals) == sorted(reference)
    # Records came from pages past meta.total_pages, which short pages pushed them onto.
    assert any(e.total_pages is not None and e.page > e.total_pages for e in events)


def test_slow_answers_time_out_and_are_retried(
    demo: DemoCrm, client_for: Callable[..., FreshsalesClient], reference: dict[int, dict[str, Any]]
) -> None:
    demo.faults = Faults(slow_seconds=5.0, slow_every=6)
    client = client_for(demo, timeout=0.02)

    deals = read_deals(client)

    assert sorted(d["id"] for d in deals) == sorted(reference)
    assert client.stats.transport_errors > 0
    assert client.stats.transport_errors == client.stats.retries


def test_incremental_read_after_touching_five_percent(
    demo: DemoCrm, client_for: Callable[..., FreshsalesClient], reference: dict[int, dict[str, Any]]
) -> None:
    cursor = max(parse_instant(r["updated_at"]) for r in reference.values())  # type: ignore[type-var]
    assert isinstance(cursor, datetime)
    touched = set(demo.touch_fraction("deals", 0.05))
    demo.clear_log()
    client = client_for(demo, per_page=100)

    changed = read_deals(client, updated_after=cursor + timedelta(seconds=1))

    assert {d["id"] for d in changed} == touched
    assert len(page_requests(demo)) == len(DEAL_VIEWS)  # 60 changes: one page per view


def test_update_record_round_trip(demo: DemoCrm, client_for: Callable[..., FreshsalesClient]) -> None:
    crm_id = demo.crm_ids("deals")[0]
    client = client_for(demo)

    returned = client.update_record("deals", "deal", crm_id, {"custom_field": {"cf_deal_stage": "Negotiation"}})

    assert returned["custom_field"]["cf_deal_stage"] == "Negotiation"
    stored = demo.get_record("deals", crm_id)
    assert stored is not None and stored["custom_field"] == returned["custom_field"]
    assert client.get_record("deals", "deal", crm_id)["updated_at"] == returned["updated_at"]
    put = next(r for r in demo.request_log if r.method == "PUT")
    assert put.path.endswith(f"/api/deals/{crm_id}")


def test_wrong_key_and_unknown_view(
    demo: DemoCrm, client_for: Callable[..., FreshsalesClient], caplog: pytest.LogCaptureFixture
) -> None:
    bad = FreshsalesClient(DEMO_BASE_URL, "not-the-demo-key", transport=demo.transport())
    with caplog.at_level(logging.DEBUG), pytest.raises(CrmAuthError) as caught:
        bad.view_id("deals", "Open Deals")
    bad.close()
    assert "not-the-demo-key" not in str(caught.value) + caplog.text
    with pytest.raises(CrmViewNotFoundError, match="'Open Deals'"):
        client_for(demo).view_id("deals", "All Deals")


def test_over_loopback_with_faults(
    demo: DemoCrm, client_for: Callable[..., FreshsalesClient], reference: dict[int, dict[str, Any]]
) -> None:
    demo.faults = Faults(rate_limit_every=9, server_error_every=7, drop_every=5, short_pages=True)
    with serve_demo_crm(demo) as url:
        client = client_for(url, max_concurrency=4, timeout=5.0)
        client.view_id("deals", "Open Deals")
        deals = read_deals(client)
    assert sorted(d["id"] for d in deals) == sorted(reference)
    assert client.stats.transport_errors > 0 and client.stats.by_status.get(429, 0) > 0


def test_over_loopback_slow_answers_time_out(
    demo: DemoCrm, client_for: Callable[..., FreshsalesClient], reference: dict[int, dict[str, Any]]
) -> None:
    demo.faults = Faults(slow_seconds=3.0, slow_every=8)
    with serve_demo_crm(demo) as url:
        client = client_for(url, timeout=0.2)
        deals = read_deals(client)
    assert sorted(d["id"] for d in deals) == sorted(reference)
    assert client.stats.transport_errors > 0
