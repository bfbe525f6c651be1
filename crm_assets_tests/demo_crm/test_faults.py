"""Fault injection, each fault on its own, through the in-process transport and the admin endpoints."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from crm_assets.demo_crm import DEMO_BASE_URL, DemoCrm, Faults
from crm_assets_tests.demo_crm.conftest import AUTH, client_for, must_get, read_view

OPEN = 17_000_000_301
DEAL = 17_200_000_001


def _statuses(client: httpx.Client, count: int) -> list[int]:
    return [client.get("/api/deals/filters").status_code for _ in range(count)]


def test_rate_limit_every_nth_request_without_retry_after(demo: DemoCrm, client: httpx.Client) -> None:
    demo.faults.rate_limit_every = 3
    demo.faults.rate_limit_reset_seconds = 2
    assert _statuses(client, 6) == [200, 200, 429, 200, 200, 429]
    limited = client.get("/api/deals/filters"), client.get("/api/deals/filters"), client.get("/api/deals/filters")
    response = limited[2]
    assert response.status_code == 429
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-reset"] == "2"
    assert "retry-after" not in response.headers
    assert response.json()["errors"]["code"] == 429


def test_retry_after_can_be_added(demo: DemoCrm, client: httpx.Client) -> None:
    demo.faults = Faults(rate_limit_every=1, retry_after=True)
    response = client.get("/api/deals/filters")
    assert response.status_code == 429 and response.headers["retry-after"] == "1"


def test_server_errors_every_nth_request(demo: DemoCrm, client: httpx.Client) -> None:
    demo.faults.server_error_every = 2
    assert _statuses(client, 8) == [200, 502, 200, 503, 200, 500, 200, 502]


def test_drop_raises_a_remote_protocol_error_in_process(demo: DemoCrm, client: httpx.Client) -> None:
    demo.faults.drop_every = 2
    assert client.get("/api/deals/filters").status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/api/deals/filters")
    assert client.get("/api/deals/filters").status_code == 200
    assert [r.status for r in demo.request_log] == [200, 0, 200]


def test_slow_answers_time_out_a_client_with_a_shorter_timeout(demo: DemoCrm) -> None:
    demo.faults = Faults(slow_seconds=0.2, slow_every=2)
    with client_for(demo, timeout=0.02) as impatient:
        assert impatient.get("/api/deals/filters").status_code == 200  # request 1 is not slow
        with pytest.raises(httpx.ReadTimeout):
            impatient.get("/api/deals/filters")
    demo.faults = Faults(slow_seconds=0.01)  # every request, shorter than the timeout
    with client_for(demo, timeout=5) as patient:
        assert patient.get("/api/deals/filters").status_code == 200


def test_short_pages_need_paging_until_an_empty_page(demo: DemoCrm, client: httpx.Client) -> None:
    expected = {r["id"] for r in read_view(client, "deals", OPEN, per_page=20)}
    demo.faults.short_pages = True
    first = client.get(f"/api/deals/view/{OPEN}", params={"per_page": 20, "page": 1}).json()
    assert 0 < len(first["deals"]) < 20
    assert first["meta"]["total_pages"] == math.ceil(len(expected) / 20)
    by_meta = []
    for page in range(1, first["meta"]["total_pages"] + 1):
        by_meta += client.get(f"/api/deals/view/{OPEN}", params={"per_page": 20, "page": page}).json()["deals"]
    assert len(by_meta) < len(expected)  # a client trusting total_pages or short pages loses records
    until_empty = read_view(client, "deals", OPEN, per_page=20)
    assert [r["id"] for r in until_empty] == sorted(expected)


def test_put_on_failing_ids_answers_500_and_changes_nothing(demo: DemoCrm, client: httpx.Client) -> None:
    demo.faults.fail_put_crm_ids = {DEAL + 1}
    before = demo.get_record("deals", DEAL + 1)
    failed = client.put(f"/api/deals/{DEAL + 1}", json={"deal": {"name": "x"}})
    assert failed.status_code == 500 and demo.get_record("deals", DEAL + 1) == before
    assert client.put(f"/api/deals/{DEAL + 2}", json={"deal": {"name": "x"}}).status_code == 200
    assert [entry[1] for entry in demo.put_log] == [DEAL + 2]


def test_request_log_records_method_path_query_and_status(demo: DemoCrm, client: httpx.Client) -> None:
    client.get(f"/api/deals/view/{OPEN}", params={"page": 2, "per_page": 5})
    client.get("/api/deals/1")
    assert demo.request_log == [
        ("GET", f"/crm/sales/api/deals/view/{OPEN}", {"page": "2", "per_page": "5"}, 200),
        ("GET", "/crm/sales/api/deals/1", {}, 404),
    ]
    demo.clear_log()
    assert demo.request_log == []


def test_admin_endpoints_need_no_key(demo: DemoCrm, client: httpx.Client) -> None:
    with httpx.Client(base_url=DEMO_BASE_URL, transport=demo.transport()) as anonymous:
        set_faults = anonymous.post("/_demo/faults", json={"rate_limit_every": 1, "fail_put_crm_ids": [5]})
        assert set_faults.status_code == 200
        assert demo.faults == Faults(rate_limit_every=1, fail_put_crm_ids={5})
        assert client.get("/api/deals/filters").status_code == 429
        assert anonymous.post("/_demo/faults", json={"rate_limit_evry": 1}).status_code == 400
        assert anonymous.post("/_demo/faults", json={}).status_code == 200
        assert demo.faults == Faults()
        touched = anonymous.post("/_demo/touch", json={"entity": "deals", "fraction": 0.05}).json()
        assert touched["count"] == len(touched["ids"]) > 0
        assert "(rev 1)" in must_get(demo, "deals", touched["ids"][0])["name"]
        assert anonymous.post("/_demo/touch", json={"entity": "leads", "fraction": 0.05}).status_code == 400
        stats = anonymous.get("/_demo/stats").json()
        assert stats["requests"]["total"] == 1 and stats["requests"]["by_status"] == {"429": 1}
        assert stats["requests"]["by_endpoint"] == {"GET /crm/sales/api/deals/filters": 1}
        assert stats["records"]["deals"]["mutated"] == touched["count"]
        assert anonymous.post("/_demo/clear_log").status_code == 200 and demo.request_log == []
        assert anonymous.get("/_demo/nothing").status_code == 404


def test_async_clients_get_the_same_api(demo: DemoCrm) -> None:
    demo.faults.drop_every = 2

    async def two_requests() -> int:
        async with httpx.AsyncClient(base_url=DEMO_BASE_URL, transport=demo.transport(), headers=AUTH) as client:
            status = (await client.get("/api/deals/filters")).status_code
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/api/deals/filters")
            return status

    assert asyncio.run(two_requests()) == 200
