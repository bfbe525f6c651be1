"""Retries: 429 hints, 5xx, timeouts and dropped connections, and the error when they never stop."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import httpx
import pytest

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import (
    CrmOutcomeUnknownError,
    CrmRateLimitError,
    CrmUnavailableError,
    CrmUnreachableError,
)
from crm_assets.freshsales.retry import MAX_HINT_SECONDS, backoff_delay, reset_hint, retry_after_hint
from crm_assets_tests.freshsales.conftest import FakeSleep
from crm_assets_tests.freshsales.fakes import API_KEY, FakeCrm, make_records, raise_, status

ClientFactory = Callable[..., FreshsalesClient]
NOW = 1_714_564_800.0  # a fixed wall clock for epoch headers


@pytest.fixture
def deals(fake_crm: FakeCrm) -> FakeCrm:
    fake_crm.add_view("deals", "Open Deals", 7, make_records(3))
    return fake_crm


def test_429_waits_for_x_ratelimit_reset_in_seconds(
    deals: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep
) -> None:
    deals.scripted.append(status(429, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "42"}))
    client = make_client(backoff_base=0)

    client.view_id("deals", "Open Deals")

    assert fake_sleep.calls == [42.0]
    assert client.stats.retries == 1
    assert client.stats.by_status == {429: 1, 200: 1}


def test_429_reads_a_large_x_ratelimit_reset_as_an_epoch(
    deals: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep
) -> None:
    deals.scripted.append(status(429, headers={"x-ratelimit-reset": str(int(NOW + 75))}))
    make_client(backoff_base=0, wall_clock=lambda: NOW).view_id("deals", "Open Deals")
    assert fake_sleep.calls == [75.0]


def test_429_honours_retry_after(deals: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep) -> None:
    deals.scripted.append(status(429, headers={"Retry-After": "7"}))
    make_client(backoff_base=0).view_id("deals", "Open Deals")
    assert fake_sleep.calls == [7.0]


def test_429_without_hints_backs_off_exponentially(
    deals: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    deals.scripted.extend([status(429), status(429), status(429)])
    with caplog.at_level(logging.WARNING, logger="crm_assets.freshsales"):
        make_client(backoff_base=2.0).view_id("deals", "Open Deals")

    ranges = [(1.0, 2.0), (2.0, 4.0), (4.0, 8.0)]
    assert len(fake_sleep.calls) == 3
    assert all(lo <= s <= hi for s, (lo, hi) in zip(fake_sleep.calls, ranges, strict=True))
    assert "HTTP 429 (rate limited); retry 2 of 6" in caplog.text
    assert "exponential backoff" in caplog.text


def test_server_errors_then_success(
    deals: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    deals.scripted.extend([status(500), status(503)])
    client = make_client()
    with caplog.at_level(logging.WARNING, logger="crm_assets.freshsales"):
        pages = list(client.iter_view("deals", "Open Deals"))

    assert len(pages[0]) == 3
    assert client.stats.retries == 2
    assert client.stats.by_status[500] == client.stats.by_status[503] == 1
    assert "GET /api/deals/filters: HTTP 500 (server error); retry 1 of 6" in caplog.text
    assert "HTTP 503 (server error); retry 2 of 6" in caplog.text
    assert client.stats.waited_seconds == pytest.approx(sum(fake_sleep.calls))


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ReadTimeout, "response timed out"),
        (httpx.ConnectTimeout, "connection timed out"),
        (httpx.RemoteProtocolError, "connection dropped"),
        (httpx.ConnectError, "could not connect"),
        (httpx.ReadError, "connection dropped while reading"),
    ],
)
def test_timeouts_and_dropped_connections_are_retried(
    deals: FakeCrm,
    make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    error: type[httpx.TransportError],
    reason: str,
) -> None:
    deals.scripted.extend([raise_(error), raise_(error)])
    client = make_client()
    with caplog.at_level(logging.WARNING, logger="crm_assets.freshsales"):
        client.view_id("deals", "Open Deals")
    assert client.stats.retries == 2
    assert client.stats.transport_errors == 2
    assert f"GET /api/deals/filters: {reason}; retry 1 of 6" in caplog.text


def test_persistent_429_raises_a_rate_limit_error(
    deals: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep
) -> None:
    deals.scripted.extend(status(429) for _ in range(10))
    client = make_client(max_retries=3, backoff_base=10, backoff_max=15)

    with pytest.raises(CrmRateLimitError) as caught:
        list(client.iter_view("deals", "Open Deals"))

    message = str(caught.value)
    assert "GET /api/deals/filters" in message and "3 retries" in message
    assert "CRM_RATE_LIMIT_PER_MINUTE" in message
    assert API_KEY not in message
    assert len(fake_sleep.calls) == 3
    assert all(s <= 15 for s in fake_sleep.calls)  # capped at backoff_max
    assert len(deals.requests) == 4


def test_persistent_server_errors_raise_unavailable(deals: FakeCrm, make_client: ClientFactory) -> None:
    deals.scripted.extend(status(502) for _ in range(3))
    with pytest.raises(CrmUnavailableError, match=r"kept failing GET /api/deals/filters \(last: HTTP 502\)"):
        make_client(max_retries=2).view_id("deals", "Open Deals")


def not_json(kind: str) -> httpx.Response:
    """A 200 whose body is not JSON: a maintenance page, or an answer cut half way."""
    if kind == "html":
        return httpx.Response(200, text="<html>Down for maintenance</html>", headers={"content-type": "text/html"})
    return httpx.Response(200, content=b'{"deals": [{"id": 1, "na', headers={"content-type": "application/json"})


@pytest.mark.parametrize("kind", ["html", "truncated"])
def test_a_page_that_is_not_json_after_the_first_one_is_retried_like_a_server_error(
    fake_crm: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep, kind: str
) -> None:
    records = make_records(30)
    fake_crm.add_view("deals", "Open Deals", 7, records)
    fake_crm.broken_answers = {2: [not_json(kind)]}
    client = make_client(per_page=10, max_concurrency=1)

    pages = list(client.iter_view("deals", "Open Deals"))

    assert [r["id"] for page in pages for r in page] == [r["id"] for r in records]
    assert client.stats.retries == len(fake_sleep.calls) == 1


def test_a_page_that_stays_unreadable_is_an_outage_not_a_wrong_base_url(
    fake_crm: FakeCrm, make_client: ClientFactory
) -> None:
    fake_crm.add_view("deals", "Open Deals", 7, make_records(30))
    fake_crm.broken_answers = {2: [not_json("html") for _ in range(3)]}

    with pytest.raises(CrmUnavailableError) as caught:
        list(make_client(per_page=10, max_retries=2, max_concurrency=1).iter_view("deals", "Open Deals"))

    message = str(caught.value)
    assert message.startswith(
        "the CRM at acme.myfreshworks.com kept answering GET /api/deals/view/7 with HTTP 200 and a body that is "
        "not JSON (text/html) through 2 retries, after answering this view's first page well"
    )
    assert "CRM_BASE_URL" not in message


def test_unreachable_crm_raises_unreachable_without_httpx_details(deals: FakeCrm, make_client: ClientFactory) -> None:
    deals.scripted.extend(raise_(httpx.ConnectError) for _ in range(2))
    with pytest.raises(CrmUnreachableError) as caught:
        make_client(max_retries=1).view_id("deals", "Open Deals")
    assert "could not connect to the CRM at https://acme.myfreshworks.com/crm/sales" in str(caught.value)
    assert "GET /api/deals/filters (could not connect" in str(caught.value)
    assert "check CRM_BASE_URL" in str(caught.value)
    assert not isinstance(caught.value, CrmUnavailableError)  # a step retry would only repeat the wait
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_client_errors_are_not_retried(deals: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep) -> None:
    deals.scripted.append(status(403))
    with pytest.raises(Exception, match="HTTP 403"):
        make_client().view_id("deals", "Open Deals")
    assert fake_sleep.calls == []
    assert len(deals.requests) == 1


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(attempt, 1.0, 60.0, rng) for attempt in range(1, 10)]
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered


def test_hint_parsing() -> None:
    assert reset_hint("30", NOW) == 30
    assert reset_hint(str(NOW + 12), NOW) == 12
    assert reset_hint(str(NOW - 5), NOW) is None  # already reset
    assert reset_hint("soon", NOW) is None
    assert retry_after_hint("Wed, 01 May 2024 12:01:00 GMT", NOW) == 60
    assert retry_after_hint("-1", NOW) is None
    assert reset_hint("86400", NOW) == reset_hint(str((NOW + 10**7) * 1000), NOW) == MAX_HINT_SECONDS  # capped
    assert retry_after_hint("86400", NOW) == MAX_HINT_SECONDS
    assert reset_hint("nan", NOW) is None


@pytest.mark.parametrize(
    ("failure", "ended_at_crm"),
    [
        (status(503), True),
        (status(500), True),
        (status(504), False),
        (raise_(httpx.ReadTimeout), False),
        (raise_(httpx.RemoteProtocolError), False),
    ],
    ids=["503", "500", "504-gateway", "read-timeout", "dropped"],
)
def test_a_put_whose_outcome_is_unknown_is_not_retried(
    fake_crm: FakeCrm,
    make_client: ClientFactory,
    fake_sleep: FakeSleep,
    failure: Callable[..., httpx.Response],
    ended_at_crm: bool,
) -> None:
    """The request may have been applied: sent again, it would be applied twice. The caller reads it back, and
    may send it again only when the CRM itself answered (the request is over there, not still under way)."""
    fake_crm.add_view("deals", "Open Deals", 7, make_records(2, first_id=40))
    fake_crm.scripted.append(failure)

    unknown = r"PUT /api/deals/41: .*whether the CRM applied it is unknown"
    with pytest.raises(CrmOutcomeUnknownError, match=unknown) as e:
        make_client().update_record("deals", "deal", 41, {"name": "Renamed"})

    assert e.value.ended_at_crm is ended_at_crm

    assert [r.method for r in fake_crm.requests] == ["PUT"]
    assert fake_sleep.calls == []


@pytest.mark.parametrize("refusal", [status(429), raise_(httpx.ConnectError)], ids=["429", "not-connected"])
def test_a_put_the_crm_certainly_did_not_act_on_is_retried(
    fake_crm: FakeCrm, make_client: ClientFactory, fake_sleep: FakeSleep, refusal: Callable[..., httpx.Response]
) -> None:
    fake_crm.add_view("deals", "Open Deals", 7, make_records(2, first_id=40))
    fake_crm.scripted.append(refusal)

    record = make_client(backoff_base=0.5).update_record("deals", "deal", 41, {"name": "Renamed"})

    assert [r.method for r in fake_crm.requests] == ["PUT", "PUT"]
    assert record["name"] == "Renamed"
    assert len(fake_sleep.calls) == 1
