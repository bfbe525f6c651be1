"""The Freshsales-compatible API, through the in-process transport."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from crm_assets.demo_crm import DEMO_BASE_URL, DemoCrm
from crm_assets.domains.deals import stage_view
from crm_assets.timestamps import parse_instant
from crm_assets_tests.demo_crm.conftest import VIEW_IDS, client_for, instant, must_get, read_view, small_config

OPEN, WON, LOST, RECYCLE = 17_000_000_301, 17_000_000_302, 17_000_000_303, 17_000_000_306
DEAL = 17_200_000_001  # first deal's CRM id


def _errors(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["errors"]["code"] == response.status_code
    return body["errors"]["message"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Token token=wrong"}, {"Authorization": "Bearer demo-api-key"}],
)
def test_requests_without_the_right_token_get_401(demo: DemoCrm, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=DEMO_BASE_URL, transport=demo.transport(), headers=headers) as client:
        response = client.get("/api/deals/filters")
    assert response.status_code == 401
    assert "API key" in _errors(response)[0]


def test_unknown_paths_records_and_views_get_404(client: httpx.Client) -> None:
    for path in ("/api/deals/99", "/api/deals/view/1", "/api/leads/filters", "/api/deals/abc", "/nope"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert _errors(response)


def test_filters_list_the_default_views_with_stable_ids(client: httpx.Client) -> None:
    names = {}
    for entity in ("sales_accounts", "contacts", "deals"):
        filters = client.get(f"/api/{entity}/filters").json()["filters"]
        names[entity] = {f["name"]: f["id"] for f in filters}
        assert "Recycle Bin" in names[entity]
    assert {"Open Deals", "Won Deals", "Lost Deals", "My Deals"} <= set(names["deals"])
    for entity, views in VIEW_IDS.items():
        for name, view_id in views.items():
            assert names[entity][name] == view_id


def test_paging_is_one_based_clamped_and_ends_with_an_empty_page(client: httpx.Client) -> None:
    first = client.get(f"/api/deals/view/{OPEN}").json()  # defaults: page 1, 25 per page
    total = first["meta"]["total"]
    assert len(first["deals"]) == 25 and first["meta"]["total_pages"] == math.ceil(total / 25)
    clamped = client.get(f"/api/deals/view/{OPEN}", params={"per_page": 500}).json()
    assert len(clamped["deals"]) == min(100, total)
    assert clamped["meta"]["total_pages"] == math.ceil(total / 100)
    last_page = math.ceil(total / 30)
    last = client.get(f"/api/deals/view/{OPEN}", params={"per_page": 30, "page": last_page}).json()
    assert len(last["deals"]) == total - 30 * (last_page - 1)
    past = client.get(f"/api/deals/view/{OPEN}", params={"per_page": 30, "page": last_page + 1}).json()
    assert past["deals"] == [] and past["meta"]["total"] == total
    assert client.get(f"/api/deals/view/{OPEN}", params={"page": 0}).status_code == 400
    assert client.get(f"/api/deals/view/{OPEN}", params={"page": "x"}).status_code == 400


def stage_class(label: object) -> str:
    """Which deal view a stage label belongs in: open, won or lost."""
    return ("open", "won", "lost")[stage_view(label)]


def test_views_partition_deals_by_stage(demo: DemoCrm, client: httpx.Client) -> None:
    views = {view: read_view(client, "deals", view) for view in (OPEN, WON, LOST, RECYCLE)}
    for record in views[WON]:
        assert stage_class(record["custom_field"]["cf_deal_stage"]) == "won" and not record["is_deleted"]
    for record in views[LOST]:
        assert stage_class(record["custom_field"]["cf_deal_stage"]) == "lost"
    assert all(r["is_deleted"] for r in views[RECYCLE]) and views[RECYCLE]
    open_ids = {r["id"] for r in views[OPEN]}
    won_ids = {r["id"] for r in views[WON]}
    in_both = open_ids & won_ids  # the duplicate-across-views dirt
    assert in_both and not open_ids & {r["id"] for r in views[LOST]}
    listed = open_ids | won_ids | {r["id"] for r in views[LOST]} | {r["id"] for r in views[RECYCLE]}
    assert listed == set(demo.crm_ids("deals"))
    assert len(views[OPEN]) == len(open_ids)  # no record twice in one view


@pytest.mark.parametrize("sort", ["updated_at", "created_at"])
@pytest.mark.parametrize("sort_type", ["asc", "desc"])
def test_views_honour_the_sort_with_ties_by_id(demo: DemoCrm, sort: str, sort_type: str) -> None:
    demo.update_record("deals", DEAL + 5, {"name": "moved to the end of updated_at"})
    with client_for(demo) as client:
        records = read_view(client, "deals", OPEN, sort=sort, sort_type=sort_type, per_page=7)
    keys = [(parse_instant(r[sort]), r["id"]) for r in records]
    assert keys == sorted(keys, reverse=sort_type == "desc")
    if sort == "updated_at":
        assert records[-1 if sort_type == "asc" else 0]["id"] == DEAL + 5


def test_get_answers_the_singular_wrapper(client: httpx.Client) -> None:
    body = client.get(f"/api/sales_accounts/{17_000_000_003}").json()
    assert list(body) == ["sales_account"] and body["sales_account"]["id"] == 17_000_000_003
    assert list(client.get("/api/contacts/17100000003").json()) == ["contact"]


@pytest.mark.parametrize("wrapped", [True, False])
def test_put_merges_custom_fields_and_bumps_updated_at(demo: DemoCrm, client: httpx.Client, wrapped: bool) -> None:
    before = client.get(f"/api/deals/{DEAL + 3}").json()["deal"]
    change = {"amount": "24456.0", "custom_field": {"cf_probability_of_closure": "High"}}
    response = client.put(f"/api/deals/{DEAL + 3}", json={"deal": change} if wrapped else change)
    assert response.status_code == 200
    after = response.json()["deal"]
    assert after["amount"] == "24456.0"
    assert after["custom_field"] == {**before["custom_field"], "cf_probability_of_closure": "High"}
    assert after["created_at"] == before["created_at"] and after["id"] == before["id"]
    assert instant(after["updated_at"]) > instant(before["updated_at"])
    assert client.get(f"/api/deals/{DEAL + 3}").json()["deal"] == after
    assert demo.put_log[-1][:2] == ("deals", DEAL + 3)


def test_put_changing_the_stage_moves_the_deal_between_views(client: httpx.Client) -> None:
    won_before = {r["id"] for r in read_view(client, "deals", WON)}
    target = next(r for r in read_view(client, "deals", LOST) if r["id"] not in won_before)
    updated = client.put(
        f"/api/deals/{target['id']}", json={"deal": {"custom_field": {"cf_deal_stage": "Closed-Won"}}}
    ).json()["deal"]
    assert updated["deal_stage_id"] == 17_000_000_503 and updated["stage_updated_time"] == updated["updated_at"]
    assert target["id"] in {r["id"] for r in read_view(client, "deals", WON)}
    assert target["id"] not in {r["id"] for r in read_view(client, "deals", LOST)}


def test_put_rejects_bad_bodies_and_unknown_ids(client: httpx.Client) -> None:
    assert client.put(f"/api/deals/{DEAL}", content=b"{not json").status_code == 400
    assert client.put(f"/api/deals/{DEAL}", json=[1, 2]).status_code == 400
    assert client.put(f"/api/deals/{DEAL}", json={"deal": {"custom_field": "x"}}).status_code == 400
    assert client.put("/api/deals/17299999999", json={"deal": {"name": "x"}}).status_code == 404


def test_delete_moves_to_the_recycle_bin_and_forget_removes(demo: DemoCrm, client: httpx.Client) -> None:
    account = 17_000_000_010
    all_accounts, bin_view = VIEW_IDS["sales_accounts"]["All Accounts"], VIEW_IDS["sales_accounts"]["Recycle Bin"]
    assert client.delete(f"/api/sales_accounts/{account}").status_code == 204
    assert client.get(f"/api/sales_accounts/{account}").json()["sales_account"]["is_deleted"] is True
    assert account not in {r["id"] for r in read_view(client, "sales_accounts", all_accounts)}
    assert account in {r["id"] for r in read_view(client, "sales_accounts", bin_view)}
    assert client.delete(f"/api/sales_accounts/{account}/forget").status_code == 204
    assert client.get(f"/api/sales_accounts/{account}").status_code == 404
    assert account not in {r["id"] for r in read_view(client, "sales_accounts", bin_view)}
    assert account not in demo.crm_ids("sales_accounts")
    assert client.delete(f"/api/sales_accounts/{account}/forget").status_code == 404


def test_lookup_matches_the_string_form_of_a_field(demo: DemoCrm, client: httpx.Client) -> None:
    deal = demo.get_record("deals", DEAL + 7)
    assert deal is not None
    deal_id = deal["custom_field"]["cf_deal_id"]
    body = client.get("/api/lookup", params={"q": str(deal_id), "f": "cf_deal_id", "entities": "deal"}).json()
    assert list(body) == ["deals"] and DEAL + 7 in {d["id"] for d in body["deals"]["deals"]}
    assert all(str(d["custom_field"]["cf_deal_id"]) == str(deal_id) for d in body["deals"]["deals"])
    contact = demo.get_record("contacts", 17_100_000_002)
    assert contact is not None
    found = client.get("/api/lookup", params={"q": contact["email"], "f": "email", "entities": "contact"}).json()
    assert [c["id"] for c in found["contacts"]["contacts"]] == [17_100_000_002]
    demo.update_record("contacts", 17_100_000_002, {"email": "new@example.com"})
    again = client.get("/api/lookup", params={"q": "new@example.com", "f": "email", "entities": "contact"}).json()
    assert [c["id"] for c in again["contacts"]["contacts"]] == [17_100_000_002]
    gone = client.get("/api/lookup", params={"q": contact["email"], "f": "email", "entities": "contact"}).json()
    assert gone["contacts"]["contacts"] == []
    assert client.get("/api/lookup", params={"q": "1", "f": "id", "entities": "lead"}).status_code == 400


def test_filtered_search_applies_every_rule(demo: DemoCrm, client: httpx.Client) -> None:
    def search(rules: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        response = client.post("/api/filtered_search/deal", params=params, json={"filter_rule": rules})
        assert response.status_code == 200, response.text
        return response.json()

    won = search([{"attribute": "cf_deal_stage", "operator": "is", "value": "Closed-Won"}], per_page=100)
    assert won["deals"] and all(d["custom_field"]["cf_deal_stage"] == "Closed-Won" for d in won["deals"])
    picked = search([{"attribute": "id", "operator": "is_in", "value": [DEAL, DEAL + 1, DEAL + 2]}])
    live = [i for i in (DEAL, DEAL + 1, DEAL + 2) if not must_get(demo, "deals", i)["is_deleted"]]
    assert [d["id"] for d in picked["deals"]] == live and picked["meta"]["total"] == len(live)
    named = search([{"attribute": "name", "operator": "contains", "value": "renewal"}])
    assert named["deals"] and all("renewal" in d["name"].lower() for d in named["deals"])
    middle = demo.get_record("deals", DEAL + 100)
    assert middle is not None
    window = search(
        [
            {"attribute": "updated_at", "operator": "is_after", "value": middle["updated_at"]},
            {"attribute": "updated_at", "operator": "is_before", "value": "2030-01-01"},
        ],
        per_page=100,
    )
    assert window["meta"]["total"] > 0
    assert all(instant(d["updated_at"]) > instant(middle["updated_at"]) for d in window["deals"])
    deleted = search([{"attribute": "deleted", "operator": "is", "value": 1}], per_page=100)
    assert deleted["deals"] and all(d["is_deleted"] for d in deleted["deals"])
    bad = client.post(
        "/api/filtered_search/deal", json={"filter_rule": [{"attribute": "x", "operator": "near", "value": 1}]}
    )
    assert bad.status_code == 400
    assert client.post("/api/filtered_search/lead", json={"filter_rule": []}).status_code == 404


def test_selectors_and_field_settings(client: httpx.Client) -> None:
    users = client.get("/api/selector/owners").json()["users"]
    assert users and {"id", "display_name", "email"} <= set(users[0])
    stages = client.get("/api/selector/deal_stages").json()["deal_stages"]
    assert [s["name"] for s in stages] == ["Prospecting", "Negotiation", "Closed-Won", "Closed-Lost"]
    fields = client.get("/api/settings/deals/fields").json()["fields"]
    assert {f["name"] for f in fields if not f["default"]} >= {"cf_deal_id", "cf_deal_stage", "cf_account_id"}


def test_data_helpers(demo: DemoCrm) -> None:
    deal = demo.update_record("deals", DEAL, {"custom_field": {"cf_deal_stage": "Negotiation"}})
    assert deal["custom_field"]["cf_deal_stage"] == "Negotiation"
    deal["name"] = "changing the returned copy changes nothing"
    assert must_get(demo, "deals", DEAL)["name"] != deal["name"]
    with pytest.raises(LookupError):
        demo.update_record("deals", 17_299_999_999, {"name": "x"})
    with pytest.raises(LookupError):
        demo.get_record("leads", 1)
    assert demo.get_record("deals", 17_299_999_999) is None
    live = [i for i in demo.crm_ids("contacts") if not must_get(demo, "contacts", i)["is_deleted"]]
    touched = demo.touch_fraction("contacts", 0.1, seed=3)
    assert len(touched) == round(0.1 * len(live)) and set(touched) <= set(live)
    assert all("(rev 1)" in must_get(demo, "contacts", i)["job_title"] for i in touched)
    assert touched == DemoCrm(small_config()).touch_fraction("contacts", 0.1, seed=3)


def test_mutations_do_not_leak_between_instances() -> None:
    first, second = DemoCrm(small_config()), DemoCrm(small_config())
    first.delete_record("deals", DEAL)
    assert must_get(second, "deals", DEAL)["is_deleted"] is False
