"""Page bodies that orjson refuses for one value are read anyway; only a body that is not JSON fails the read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmResponseError
from crm_assets.warehouse.raw import Storable, Unstorable, check_record
from crm_assets_tests.freshsales.fakes import FakeCrm, make_records

ClientFactory = Callable[..., FreshsalesClient]
PLACEHOLDER = "__poison__"

# (JSON text of one field's value that orjson refuses, a word the quarantine reason names)
POISONS = {
    "lone surrogate": (b'"caf\\ud800"', "surrogates"),
    "number beyond a double": (b"1e400", "1e400"),
    "nested deeper than orjson reads": (b"[" * 1100 + b"]" * 1100, "nested deeper"),
}


def page_with(poison: bytes, records: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """An answer to the next request: `records` as a view page, the second one's name set to `poison`."""
    records[1]["name"] = PLACEHOLDER
    body = orjson.dumps({"deals": records, "meta": {"total": len(records), "total_pages": 1}})
    content = body.replace(orjson.dumps(PLACEHOLDER), poison)
    return lambda request: httpx.Response(200, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize("name", list(POISONS))
def test_a_record_orjson_refuses_leaves_the_rest_of_the_page_readable_and_is_quarantined(
    fake_crm: FakeCrm, make_client: ClientFactory, name: str
) -> None:
    poison, word = POISONS[name]
    records = make_records(3)
    fake_crm.add_view("deals", "Open Deals", 7, [])
    client = make_client()
    client.view_id("deals", "Open Deals")  # the view list is read first (and cached): script the page after it
    fake_crm.scripted.append(page_with(poison, records))

    (page,) = list(client.iter_view("deals", "Open Deals"))

    assert [record["id"] for record in page] == [record["id"] for record in records]
    checked = [check_record(record) for record in page]
    assert isinstance(checked[0], Storable) and isinstance(checked[2], Storable)
    poisoned = checked[1]
    assert isinstance(poisoned, Unstorable) and poisoned.crm_id == records[1]["id"]
    assert poisoned.reason.startswith("payload: cannot be stored as JSON") and word in poisoned.reason
    orjson.dumps(poisoned.payload)  # what the quarantine keeps can be stored


@pytest.mark.parametrize(
    "content", [b"<html>Down for maintenance</html>", b'{"deals": [{"id": 1, "na'], ids=["html", "truncated"]
)
def test_a_first_page_that_is_not_json_still_points_at_the_base_url(
    fake_crm: FakeCrm, make_client: ClientFactory, content: bytes
) -> None:
    fake_crm.add_view("deals", "Open Deals", 7, [])
    client = make_client()
    client.view_id("deals", "Open Deals")
    fake_crm.scripted.append(lambda request: httpx.Response(200, content=content))

    with pytest.raises(CrmResponseError, match=r"GET /api/deals/view/7 with a body that is not JSON.*CRM_BASE_URL"):
        list(client.iter_view("deals", "Open Deals"))
