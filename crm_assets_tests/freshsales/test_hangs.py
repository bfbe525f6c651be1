"""No request or scan runs on for ever: a whole-request deadline, paging guards, a bounded wait for a dead port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmPagingError, CrmUnavailableError, CrmUnreachableError
from crm_assets_tests.freshsales.fakes import API_KEY, FakeCrm, make_records, raise_

ClientFactory = Callable[..., FreshsalesClient]
FILTERS = b'{"filters": [{"id": 7, "name": "Open Deals"}]}'


@contextmanager
def trickling_server(answers_before_good: int, *, interval: float = 0.3) -> Iterator[tuple[str, list[int]]]:
    """A loopback HTTP server whose first `answers_before_good` answers send their headers, then one body
    byte every `interval` seconds (each read succeeds, so only a whole-request deadline can end it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    served: list[int] = []
    stop = threading.Event()

    def answer(conn: socket.socket, number: int) -> None:
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(FILTERS)}\r\n\r\n"
            conn.sendall(head.encode())
            if number >= answers_before_good:
                conn.sendall(FILTERS)
                return
            for byte in FILTERS:
                if stop.wait(interval):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return  # the client gave up

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            served.append(len(served))
            threading.Thread(target=answer, args=(conn, served[-1]), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/crm/sales", served
    finally:
        stop.set()
        listener.close()


def http_client(url: str, **options: object) -> FreshsalesClient:
    settings: dict[str, object] = {"rate_limit_per_minute": 0, "rate_limit_per_hour": 0, "backoff_base": 0.05}
    settings.update(options)
    return FreshsalesClient(url, API_KEY, **settings)  # type: ignore[arg-type]


def test_a_trickling_answer_hits_the_request_deadline_and_is_retried_like_a_timeout() -> None:
    with trickling_server(answers_before_good=1) as (url, served), http_client(url, request_deadline=1.0) as client:
        started = time.monotonic()
        assert client.view_id("deals", "Open Deals") == 7
        took = time.monotonic() - started

    assert len(served) == 2  # the trickle, then the retry that got a whole answer
    assert client.stats.retries == 1 and client.stats.transport_errors == 1
    assert took >= 1.0, "the deadline was not waited out"
    assert took < 5.0  # the trickle alone lasts 14 s, and each byte came within the 30 s read timeout


def test_a_server_that_always_trickles_fails_within_the_retries(caplog: pytest.LogCaptureFixture) -> None:
    with (
        trickling_server(answers_before_good=99) as (url, _),
        http_client(url, request_deadline=1.0, max_retries=1) as client,
        pytest.raises(CrmUnavailableError) as caught,
    ):
        client.view_id("deals", "Open Deals")
    assert "no complete response within the 1 s request deadline" in str(caught.value)
    assert "GET /api/deals/filters" in str(caught.value)


def test_a_port_with_nothing_listening_fails_fast_naming_the_url() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    url = f"http://127.0.0.1:{port}/crm/sales"
    started = time.monotonic()
    with (
        http_client(url, connect_retry_seconds=1.0, backoff_base=0.2) as client,
        pytest.raises(CrmUnreachableError) as caught,
    ):
        client.view_id("deals", "Open Deals")
    took = time.monotonic() - started

    assert took < 5.0  # six retries with this backoff would sleep 6 to 12 s
    assert f"could not connect to the CRM at {url}" in str(caught.value)
    assert "check CRM_BASE_URL" in str(caught.value)
    assert client.stats.transport_errors >= 2  # retried, but only for connect_retry_seconds


def test_connect_errors_stop_after_connect_retry_seconds_of_backoff(
    fake_crm: FakeCrm, make_client: ClientFactory
) -> None:
    fake_crm.scripted.extend(raise_(httpx.ConnectError) for _ in range(50))
    client = make_client(backoff_base=4.0, backoff_max=60.0, connect_retry_seconds=20.0, max_retries=10)
    with pytest.raises(CrmUnreachableError):
        client.view_id("deals", "Open Deals")
    assert client.stats.waited_seconds <= 20.0  # backoff alone would have slept minutes through 10 retries
    assert client.stats.retries < 10


def test_paging_stops_at_meta_total_pages(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    records = make_records(25)
    fake_crm.add_view("deals", "Open Deals", 7, records)
    fake_crm.endless = True  # a page past the end would never be empty
    pages = list(make_client(per_page=10).iter_view("deals", "Open Deals"))

    assert [len(p) for p in pages] == [10, 10, 5]
    assert [r.page for r in fake_crm.view_requests()] == [1, 2, 3]


def test_a_full_last_page_is_read_past_once_for_records_created_during_the_scan(
    fake_crm: FakeCrm, make_client: ClientFactory
) -> None:
    records = make_records(30, first_id=100)
    fake_crm.add_view("deals", "Open Deals", 7, records)
    scan = make_client(per_page=10, max_concurrency=1).iter_view("deals", "Open Deals")
    first = next(scan)
    records.insert(0, make_records(1, first_id=999)[0])  # a new deal pushes the oldest onto page 4

    rest = list(scan)

    seen = {r["id"] for page in [first, *rest] for r in page}
    assert seen >= {r["id"] for r in records[1:]}
    assert [r.page for r in fake_crm.view_requests()] == [1, 2, 3, 4]


@pytest.mark.parametrize("omit_total_pages", [False, True], ids=["with-meta", "without-meta"])
def test_a_page_repeating_the_previous_one_is_an_error_naming_view_and_page(
    fake_crm: FakeCrm, make_client: ClientFactory, omit_total_pages: bool
) -> None:
    fake_crm.add_view("deals", "Open Deals", 7, make_records(250))
    fake_crm.ignore_page = True
    fake_crm.omit_total_pages = omit_total_pages
    with pytest.raises(CrmPagingError) as caught:
        list(make_client(per_page=100, max_concurrency=1).iter_view("deals", "Open Deals"))

    message = str(caught.value)
    assert "page 2 of the deals view 'Open Deals'" in message and "same 100 records as page 1" in message
    assert len(fake_crm.view_requests()) == 2


def test_the_repeat_guard_holds_for_concurrent_pages(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("deals", "Open Deals", 7, make_records(1000))
    fake_crm.ignore_page = True
    with pytest.raises(CrmPagingError, match="page 2 of the deals view"):
        list(make_client(per_page=100, max_concurrency=4).iter_view("deals", "Open Deals"))
    assert len(fake_crm.view_requests()) <= 1 + 4  # page 1, then at most one round of concurrent pages
