"""Paging of views: order, short pages, where paging stops, concurrency, incremental stops, runaway guards."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmListingIncompleteError
from crm_assets.freshsales.progress import ProgressEvent, describe
from crm_assets_tests.freshsales.conftest import FakeSleep
from crm_assets_tests.freshsales.fakes import T0, FakeCrm, make_records

ClientFactory = Callable[..., FreshsalesClient]


def ids(pages: list[list[dict[str, Any]]]) -> list[int]:
    return [record["id"] for page in pages for record in page]


def test_view_pages_arrive_in_order_through_short_pages_until_meta_total(
    fake_crm: FakeCrm, make_client: ClientFactory
) -> None:
    records = make_records(250)
    fake_crm.add_view("deals", "Open Deals", 7, records)
    fake_crm.short_pages = {2: 50, 3: 50}  # pages 1..4 hold 100, 50, 50, 50: one past meta.total_pages (3)
    client = make_client(per_page=100)

    pages = list(client.iter_view("deals", "Open Deals"))

    assert [len(p) for p in pages] == [100, 50, 50, 50]
    assert ids(pages) == [r["id"] for r in records]
    # Past meta.total_pages (3) only while fewer than meta.total (250) records arrived: no empty page 5.
    # Short page 2 is read again once: the same answer says the CRM pages short (records come later), so
    # short page 3 is trusted without another request.
    assert sorted(r.page or 0 for r in fake_crm.view_requests()) == [1, 2, 2, 3, 4]
    first = fake_crm.view_requests()[0].params
    assert first == {"page": "1", "per_page": "100", "sort": "updated_at", "sort_type": "desc"}


def test_a_short_first_page_does_not_end_the_scan(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("contacts", "All Contacts", 3, make_records(25))
    fake_crm.short_pages = {1: 5}
    fake_crm.omit_total_pages = True  # nothing but the empty page can end the scan
    client = make_client(per_page=10)

    pages = list(client.iter_view("contacts", "All Contacts"))

    assert [len(p) for p in pages] == [5, 10, 10]
    assert [r.page for r in fake_crm.view_requests()] == [1, 1, 2, 3, 4]  # the short page read again once


def test_an_empty_view_costs_one_page_request(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("deals", "Won Deals", 8, [])
    assert list(make_client().iter_view("deals", "Won Deals")) == []
    assert [r.page for r in fake_crm.view_requests()] == [1]


def test_pages_are_fetched_concurrently_but_never_more_than_max_concurrency(
    fake_crm: FakeCrm, make_client: ClientFactory
) -> None:
    records = make_records(170)  # 17 pages of 10: page 1 alone, then 2..17 in four groups of four
    fake_crm.add_view("deals", "Open Deals", 7, records)
    fake_crm.barrier, fake_crm.barrier_last_page = 4, 17
    client = make_client(per_page=10, max_concurrency=4)

    pages = list(client.iter_view("deals", "Open Deals"))

    assert ids(pages) == [r["id"] for r in records]
    assert fake_crm.max_in_flight == 4


def test_a_page_past_the_shrunk_end_stops_the_concurrent_scan(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    records = make_records(100)
    fake_crm.add_view("deals", "Open Deals", 7, records)
    client = make_client(per_page=10, max_concurrency=3)
    pages = client.iter_view("deals", "Open Deals")
    first = next(pages)
    del records[30:]  # the view shrinks to 3 pages while meta.total_pages still says 10

    rest = list(pages)

    assert len(ids([first, *rest])) == 30
    assert (
        max(r.page or 0 for r in fake_crm.view_requests()) <= 6
    )  # stopped at the empty page 4; 5 and 6 were in flight at most


# -- pages holding fewer records than their meta.total puts there (60 records, 6 pages of 10) ----------------


def contacts_view(fake_crm: FakeCrm, count: int = 60) -> list[dict[str, Any]]:
    records = make_records(count)
    fake_crm.add_view("contacts", "All Contacts", 3, records)
    return records


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_page_answered_empty_once_mid_view_is_read_again_and_nothing_is_lost(
    fake_crm: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep, concurrency: int
) -> None:
    records = contacts_view(fake_crm)
    fake_crm.dropped = {3: [10, 0]}  # page 3 of 6 answers [] once, its meta still counting 60 records
    client = make_client(per_page=10, max_concurrency=concurrency)

    pages = list(client.iter_view("contacts", "All Contacts"))

    assert ids(pages) == [r["id"] for r in records]
    assert sorted(r.page or 0 for r in fake_crm.view_requests()) == [1, 2, 3, 3, 4, 5, 6, 7]
    assert client.stats.retries == len(fake_sleep.calls) == 1  # waited like a server error


@pytest.mark.parametrize(("start_page", "empty_page"), [(1, 3), (3, 4)], ids=["fresh", "resumed"])
def test_a_page_that_stays_empty_mid_view_fails_naming_the_view_and_the_page(
    fake_crm: FakeCrm, make_client: ClientFactory, start_page: int, empty_page: int
) -> None:
    contacts_view(fake_crm)
    fake_crm.dropped = {empty_page: [10]}
    client = make_client(per_page=10, max_retries=2, max_concurrency=1)

    with pytest.raises(CrmListingIncompleteError) as caught:
        list(client.iter_view("contacts", "All Contacts", start_page=start_page))

    assert str(caught.value).startswith(
        f"page {empty_page} of the contacts view 'All Contacts' came back empty 3 times while the CRM counts "
        "60 records (6 pages): reading on would skip the rest of the view, so nothing is merged"
    )
    assert caught.value.page == empty_page  # where the next read must start
    assert [r.page for r in fake_crm.view_requests()][-3:] == [empty_page] * 3


def test_a_page_answered_short_once_is_read_again_and_nothing_is_lost(
    fake_crm: FakeCrm, make_client: ClientFactory
) -> None:
    records = contacts_view(fake_crm)
    fake_crm.dropped = {3: [4, 0]}  # page 3 leaves out 4 records once; page 4 still starts at record 30

    pages = list(make_client(per_page=10, max_concurrency=1).iter_view("contacts", "All Contacts"))

    assert ids(pages) == [r["id"] for r in records]
    assert [r.page for r in fake_crm.view_requests()] == [1, 2, 3, 3, 4, 5, 6, 7]


def test_a_page_that_stays_short_mid_view_fails_at_the_end_naming_it(
    fake_crm: FakeCrm, make_client: ClientFactory
) -> None:
    contacts_view(fake_crm)
    fake_crm.dropped = {3: [4]}  # the same 6 records each time: read again once, then the count decides

    with pytest.raises(CrmListingIncompleteError) as caught:
        list(make_client(per_page=10, max_concurrency=1).iter_view("contacts", "All Contacts"))

    assert str(caught.value).startswith(
        "the contacts view 'All Contacts' ended after 56 of the 60 records the CRM counts, and page 3 held "
        "fewer records than its meta.total puts there: records would be missing, so nothing is merged"
    )
    assert caught.value.page == 3
    assert [r.page for r in fake_crm.view_requests()] == [1, 2, 3, 3, 4, 5, 6, 7]


def test_a_short_last_page_is_taken_with_a_warning(
    fake_crm: FakeCrm, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    records = contacts_view(fake_crm)
    fake_crm.dropped = {6: [3]}  # as when meta.total was counted before records were deleted

    with caplog.at_level(logging.WARNING, logger="crm_assets.freshsales"):
        pages = list(make_client(per_page=10, max_concurrency=1).iter_view("contacts", "All Contacts"))

    assert ids(pages) == [r["id"] for r in records[:57]]
    assert any("ended after 57 of the 60 records" in m and "only the last page" in m for m in caplog.messages)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_records_moved_back_by_deletes_while_the_view_is_read_are_read_again_and_nothing_is_an_error(
    fake_crm: FakeCrm, make_client: ClientFactory, concurrency: int
) -> None:
    records = contacts_view(fake_crm)
    client = make_client(per_page=10, max_concurrency=concurrency)
    scan = client.iter_view("contacts", "All Contacts")
    first = next(scan)
    del records[2:7]  # five records of page 1 deleted: records 10-14 move onto page 1, read already

    rest = list(scan)

    assert set(ids([first, *rest])) >= {r["id"] for r in records}
    assert client.stats.retries == 0  # the last page holding 5 records is no error
    # Page 2 counts 55 records where page 1 counted 60: page 1 is read again for the records moved onto it.
    assert sorted(r.page or 0 for r in fake_crm.view_requests())[:4] == [1, 1, 2, 3]


def test_stop_before_reads_only_the_changed_pages(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    records = make_records(1000)  # one minute apart, newest first
    fake_crm.add_view("deals", "Open Deals", 7, records)
    client = make_client(per_page=100)
    cutoff = T0 - timedelta(minutes=249)  # records 0..249 are at or after it

    pages = list(client.iter_view("deals", "Open Deals", stop_before=cutoff))

    assert ids(pages) == [r["id"] for r in records[:250]]
    assert [r.page for r in fake_crm.view_requests()] == [1, 2, 3]  # changed/100 + 1


def test_stop_before_compares_instants_across_offsets(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    records = make_records(10)  # stamped in -06:00
    fake_crm.add_view("deals", "Open Deals", 7, records)
    naive_utc_cutoff = (T0 - timedelta(minutes=2)).replace(tzinfo=None)  # naive means UTC

    pages = list(make_client().iter_view("deals", "Open Deals", stop_before=naive_utc_cutoff))

    assert ids(pages) == [r["id"] for r in records[:3]]
    assert records[0]["updated_at"].endswith("-06:00")


def test_nothing_changed_costs_one_request(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("deals", "Open Deals", 7, make_records(500))
    pages = list(make_client().iter_view("deals", "Open Deals", stop_before=T0 + timedelta(seconds=1)))
    assert pages == []
    assert len(fake_crm.view_requests()) == 1


def test_stop_before_keeps_entries_that_are_not_objects_for_the_quarantine(
    fake_crm: FakeCrm, make_client: ClientFactory
) -> None:
    records: list[Any] = make_records(10)
    records[1:1] = [None, "garbage"]  # listed like records; the warehouse quarantines them on a full sync too
    fake_crm.add_view("deals", "Open Deals", 7, records)
    cutoff = T0 - timedelta(minutes=4)  # make_records' first five records are at or after it

    pages = list(make_client().iter_view("deals", "Open Deals", stop_before=cutoff))

    assert pages == [records[:7]]


def test_stop_before_needs_a_newest_first_sort(make_client: ClientFactory) -> None:
    with pytest.raises(ValueError, match="stop_before"):
        list(make_client().iter_view("deals", "Open Deals", sort_type="asc", stop_before=T0))


def test_progress_events_and_log_lines(
    fake_crm: FakeCrm, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake_crm.add_view("deals", "Open Deals", 7, make_records(250))
    events: list[ProgressEvent] = []
    ticks = iter(range(0, 1000, 3))  # each clock read is 3 s later
    client = make_client(per_page=100, on_progress=events.append, clock=lambda: float(next(ticks)))

    with caplog.at_level(logging.INFO, logger="crm_assets.freshsales"):
        list(client.iter_view("deals", "Open Deals"))

    assert [(e.page, e.records_so_far, e.total, e.total_pages) for e in events] == [
        (1, 100, 250, 3),
        (2, 200, 250, 3),
        (3, 250, 250, 3),
    ]
    assert events[-1].eta_seconds == 0
    assert any(m.startswith("deals / Open Deals: 200 of 250 records (80%), page 2 of 3") for m in caplog.messages)
    assert any("done, 250 records in 3 pages" in m for m in caplog.messages)


def test_progress_line_format() -> None:
    event = ProgressEvent("deals", "Open Deals", 34, 3400, 10012, 101, 2100.0, 3.2)
    assert describe(event) == (
        "deals / Open Deals: 3,400 of 10,012 records (34%), page 34 of 101, 2,100 rec/s, ~3 s left"
    )
