"""Single-record reads and writes and filtered search: request shapes and response unwrapping."""

from __future__ import annotations

from collections.abc import Callable

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets_tests.freshsales.fakes import API_KEY, FakeCrm, make_records

ClientFactory = Callable[..., FreshsalesClient]


def test_requests_carry_the_token_header(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("deals", "Open Deals", 1, [])
    make_client().view_id("deals", "Open Deals")
    (request,) = fake_crm.requests
    assert request.path == "/api/deals/filters"
    assert request.headers["authorization"] == f"Token token={API_KEY}"
    assert request.headers["accept"] == "application/json"


def test_update_wraps_the_fields_in_the_singular_key(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("sales_accounts", "All Accounts", 1, make_records(2, first_id=40))
    fields = {"name": "Acme Ltd", "custom_field": {"cf_region": "Europe"}}

    record = make_client().update_record("sales_accounts", "sales_account", 41, fields)

    (put,) = fake_crm.requests
    assert (put.method, put.path) == ("PUT", "/api/sales_accounts/41")
    assert put.body == {"sales_account": fields}
    assert put.headers["content-type"] == "application/json"
    assert record["id"] == 41 and record["name"] == "Acme Ltd"


def test_get_record_unwraps(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("contacts", "All Contacts", 1, make_records(3, first_id=70))
    assert make_client().get_record("contacts", "contact", 72)["name"] == "record 2"


def test_filtered_search_pages_until_empty(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("deals", "Open Deals", 1, make_records(25, first_id=300))
    fake_crm.short_pages = {1: 4}
    rules = [{"attribute": "updated_at", "operator": "is_after", "value": "2024-01-01T00:00:00Z"}]

    pages = list(make_client(per_page=10).filtered_search("deal", rules, "deals"))

    assert [len(p) for p in pages] == [4, 10, 10, 1]
    assert [(r.method, r.path, r.page) for r in fake_crm.requests] == [
        ("POST", "/api/filtered_search/deal", page) for page in (1, 2, 3, 4, 5)
    ]
    assert fake_crm.requests[0].body == {"filter_rule": rules}


def test_stats_count_every_request(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("deals", "Open Deals", 1, make_records(15))
    client = make_client(per_page=10)
    list(client.iter_view("deals", "Open Deals"))
    assert client.stats.as_dict() == {
        "requests": 3,  # filters + pages 1 and 2: meta says 15 records in 2 pages
        "retries": 0,
        "rate_limit_waits": 0,
        "waited_seconds": 0.0,
        "transport_errors": 0,
        "by_status": {200: 3},
    }
