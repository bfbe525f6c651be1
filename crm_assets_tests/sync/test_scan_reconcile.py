"""A reconciliation deletes only what the CRM confirms gone, and refuses what looks like an accident.

Runs the extraction against the in-process demo CRM, with a transport wrapper that edits the CRM in the
middle of a scan or makes a view list nothing, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.demo_crm import DEMO_API_KEY, DEMO_BASE_URL, DemoConfig, DemoCrm
from crm_assets.domains import DEALS
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmListingIncompleteError
from crm_assets.pipeline import ExtractResult, ScanSettings, extract_domain
from crm_assets.warehouse.scan import DeleteGuard, MassDeleteRefusedError
from crm_assets.warehouse.schema import RAW_TABLES, raw_scans

PER_PAGE = 20
Hook = Callable[[httpx.Request, httpx.Response], httpx.Response | None]


@pytest.fixture
def demo() -> DemoCrm:
    return DemoCrm(DemoConfig(accounts=20, contacts=20, deals=400, seed=3, dirty=False))


@contextmanager
def crm_client(demo: DemoCrm, hook: Hook | None = None) -> Iterator[FreshsalesClient]:
    """A client of `demo`; `hook` sees every answer and may replace it."""

    def handle(request: httpx.Request) -> httpx.Response:
        response = demo.handle(request)
        replaced = hook(request, response) if hook is not None else None
        return replaced if replaced is not None else response

    client = FreshsalesClient(
        DEMO_BASE_URL,
        DEMO_API_KEY,
        transport=httpx.MockTransport(handle),
        rate_limit_per_minute=0,
        rate_limit_per_hour=0,
        per_page=PER_PAGE,
        max_concurrency=1,
    )
    with client:
        yield client


def extract(engine: Engine, client: FreshsalesClient, **settings: Any) -> ExtractResult:
    allow = settings.pop("allow_mass_delete", False)
    scan = ScanSettings(checkpoint_pages=3, guard=DeleteGuard(allow=allow), **settings)
    return extract_domain(engine, DEALS, client, "run", full_refresh=True, settings=scan)


def raw_state(engine: Engine) -> dict[int, bool]:
    table = RAW_TABLES["deals"]
    with engine.connect() as conn:
        return {int(i): bool(d) for i, d in conn.execute(sa.select(table.c.crm_id, table.c.is_deleted))}


def live_in_crm(demo: DemoCrm) -> set[int]:
    return {i for i in demo.crm_ids("deals") if not (demo.get_record("deals", i) or {}).get("is_deleted")}


def view_page(request: httpx.Request, view_id: int) -> int | None:
    """The page number when `request` reads the view, else None."""
    if not request.url.path.endswith(f"/view/{view_id}"):
        return None
    return int(request.url.params.get("page", "1"))


def ids_of(response: httpx.Response) -> list[int]:
    return [int(r["id"]) for r in response.json()["deals"]]


def test_a_deal_leaving_a_view_mid_scan_stays_and_a_deal_deleted_mid_scan_goes(
    demo: DemoCrm, warehouse_engine: Engine
) -> None:
    with crm_client(demo) as client:
        extract(warehouse_engine, client)
        open_view = client.view_id("deals", "Open Deals")
    assert {i for i, d in raw_state(warehouse_engine).items() if not d} == live_in_crm(demo)
    read: list[int] = []
    edits: dict[str, int] = {}

    def hook(request: httpx.Request, response: httpx.Response) -> None:
        page = view_page(request, open_view)
        if page is None:
            return
        read.extend(ids_of(response))
        if page == 2 and not edits:
            # An ordinary edit on a page already read: the deal leaves Open Deals, every later one moves up
            # a slot and the first deals of page 3 onto page 2; page 3 counting fewer deals than page 2 did,
            # page 2 is read again for them.
            edits["won"] = read[0]
            demo.update_record("deals", read[0], {"custom_field": {"cf_deal_stage": "Closed-Won"}})
            edits["soft_deleted"] = read[1]  # deleted after it was read: the Recycle Bin lists it
            demo.delete_record("deals", read[1])
            later = httpx.Request("GET", request.url.copy_merge_params({"page": 5}), headers=request.headers)
            edits["purged"] = ids_of(demo.handle(later))[0]  # on a page not read yet: it will answer 404
            demo.forget_record("deals", edits["purged"])

    with crm_client(demo, hook) as client:
        result = extract(warehouse_engine, client)

    stats = result.stats
    state = raw_state(warehouse_engine)
    assert {i for i, d in state.items() if not d} == live_in_crm(demo)
    assert state[edits["soft_deleted"]] and state[edits["purged"]] and not state[edits["won"]]
    assert stats.unlisted_checked == 1  # the purged deal, re-read by id; the moved ones were listed after all
    assert stats.still_live == 0 and stats.confirmed_deleted == 1 and stats.unconfirmed == 0
    assert stats.marked_deleted == 2


def test_unconfirmed_records_beyond_the_cap_are_left_alone(demo: DemoCrm, warehouse_engine: Engine) -> None:
    with crm_client(demo) as client:
        extract(warehouse_engine, client)
    purged = demo.crm_ids("deals")[:3]
    for crm_id in purged:
        demo.forget_record("deals", crm_id)
    with crm_client(demo) as client:
        capped = extract(warehouse_engine, client, delete_checks=1)
    assert (capped.stats.unlisted_checked, capped.stats.confirmed_deleted, capped.stats.unconfirmed) == (1, 1, 2)
    assert sum(raw_state(warehouse_engine)[i] for i in purged) == 1
    with crm_client(demo) as client:
        extract(warehouse_engine, client)
    assert all(raw_state(warehouse_engine)[i] for i in purged)


def empty_view(view_id: int) -> Hook:
    def hook(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if view_page(request, view_id) is None:
            return None
        return httpx.Response(200, json={"deals": [], "meta": {"total_pages": 0, "total": 0}})

    return hook


def test_a_view_that_suddenly_lists_nothing_is_refused_then_a_normal_run_or_the_override_works(
    demo: DemoCrm, warehouse_engine: Engine
) -> None:
    with crm_client(demo) as client:
        extract(warehouse_engine, client)
        won_view = client.view_id("deals", "Won Deals")
    before = raw_state(warehouse_engine)

    with crm_client(demo, empty_view(won_view)) as client, pytest.raises(MassDeleteRefusedError) as refused:
        extract(warehouse_engine, client)
    message = str(refused.value)
    assert "raw_deals" in message and "'Won Deals' listed no records" in message
    assert "allow_mass_delete" in message and "Won Deals: 0 (last full listing" in message
    assert raw_state(warehouse_engine) == before
    with warehouse_engine.connect() as conn:
        assert conn.execute(sa.select(raw_scans.c.refused)).scalar_one() == message

    with crm_client(demo) as client:  # the view is fixed: the next normal run starts over and merges
        again = extract(warehouse_engine, client)
    assert again.scan_note.startswith("restarting: the last scan's merge was refused")
    assert raw_state(warehouse_engine) == before and again.stats.marked_deleted == 0

    with crm_client(demo, empty_view(won_view)) as client:
        with pytest.raises(MassDeleteRefusedError):
            extract(warehouse_engine, client)
        requests_before = len(demo.request_log)
        # The override merges the refused scan without reading it again; each unlisted deal is re-read by id.
        forced = extract(warehouse_engine, client, allow_mass_delete=True)
    assert forced.resumed
    assert all(r.path.startswith("/crm/sales/api/deals/") for r in demo.request_log[requests_before:])
    assert raw_state(warehouse_engine) == before
    assert forced.stats.still_live == forced.stats.unlisted_checked > 0 and forced.stats.marked_deleted == 0


def test_an_incremental_run_deleting_a_large_share_is_refused_until_overridden(
    demo: DemoCrm, warehouse_engine: Engine
) -> None:
    with crm_client(demo) as client:
        extract(warehouse_engine, client)
    before = raw_state(warehouse_engine)
    deleted = sorted(live_in_crm(demo))[::3]  # a third of the deals go to the Recycle Bin
    for crm_id in deleted:
        demo.delete_record("deals", crm_id)

    def incremental(**settings: Any) -> ExtractResult:
        with crm_client(demo) as client:
            scan = ScanSettings(guard=DeleteGuard(**settings))
            return extract_domain(warehouse_engine, DEALS, client, "run", settings=scan)

    with pytest.raises(MassDeleteRefusedError, match=rf"delete {len(deleted)} of {len(before)} live deals"):
        incremental()
    assert raw_state(warehouse_engine) == before
    result = incremental(allow=True)
    assert not result.plan.full and result.stats.marked_deleted == len(deleted)
    assert {i for i, d in raw_state(warehouse_engine).items() if d} == set(deleted)


class Crash(RuntimeError):
    pass


def test_an_interrupted_scan_resumes_from_its_checkpoint_and_a_stale_one_starts_over(
    demo: DemoCrm, warehouse_engine: Engine
) -> None:
    with crm_client(demo) as client:
        open_view = client.view_id("deals", "Open Deals")
    pages: list[int] = []

    def crash_at(last: int | None) -> Hook:
        def hook(request: httpx.Request, response: httpx.Response) -> None:
            page = view_page(request, open_view)
            if page is not None:
                pages.append(page)
                if page == last:
                    raise Crash(f"killed while reading page {page}")

        return hook

    with crm_client(demo, crash_at(8)) as client, pytest.raises(Crash):
        extract(warehouse_engine, client)  # pages 1-6 are committed in two checkpoints of 3
    assert raw_state(warehouse_engine) == {}
    pages.clear()
    with crm_client(demo, crash_at(10)) as client, pytest.raises(Crash):
        extract(warehouse_engine, client)
    assert pages[0] == 7
    pages.clear()
    with crm_client(demo, crash_at(None)) as client:
        stale = extract(warehouse_engine, client, max_scan_age=timedelta(0))
    assert stale.scan_note.startswith("restarting: the unfinished scan started") and not stale.resumed
    assert pages[0] == 1
    assert {i for i, d in raw_state(warehouse_engine).items() if not d} == live_in_crm(demo)


def test_a_listing_missing_records_fails_and_the_next_run_reads_again_from_the_short_page(
    demo: DemoCrm, warehouse_engine: Engine
) -> None:
    with crm_client(demo) as client:
        open_view = client.view_id("deals", "Open Deals")
    pages: list[int] = []

    def count_pages(request: httpx.Request, response: httpx.Response) -> None:
        page = view_page(request, open_view)
        if page is not None:
            pages.append(page)

    def drop_from_page_2(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        count_pages(request, response)
        if view_page(request, open_view) != 2:
            return None
        body = response.json()
        body["deals"] = body["deals"][:-5]  # the same 5 records left out every time: later pages do not move
        return httpx.Response(200, json=body)

    with crm_client(demo, drop_from_page_2) as client, pytest.raises(CrmListingIncompleteError) as caught:
        extract(warehouse_engine, client)  # checkpoints every 3 pages pass page 2 long before the end
    assert caught.value.page == 2 and "'Open Deals'" in str(caught.value)
    assert raw_state(warehouse_engine) == {}  # nothing merged
    pages.clear()

    with crm_client(demo, count_pages) as client:
        result = extract(warehouse_engine, client)

    assert result.resumed and pages[0] == 2
    assert {i for i, d in raw_state(warehouse_engine).items() if not d} == live_in_crm(demo)
