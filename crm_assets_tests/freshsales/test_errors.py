"""Error messages: the cause and the fix in plain words, and never the API key."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import (
    CrmAuthError,
    CrmBadRequestError,
    CrmError,
    CrmNotFoundError,
    CrmPermissionError,
    CrmResponseError,
    CrmViewNotFoundError,
    parse_error_body,
)
from crm_assets_tests.freshsales.fakes import API_KEY, BASE_URL, FakeCrm, make_records, status

ClientFactory = Callable[..., FreshsalesClient]


def assert_secret_free(error: BaseException, client: FreshsalesClient, caplog: pytest.LogCaptureFixture) -> None:
    for text in (str(error), repr(error), str(error.args), str(client), repr(client), caplog.text):
        assert API_KEY not in text
    assert API_KEY not in repr(vars(client))


def test_wrong_key(fake_crm: FakeCrm, make_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client(api_key="wrong-key-123")
    with caplog.at_level(logging.DEBUG), pytest.raises(CrmAuthError) as caught:
        client.view_id("deals", "Open Deals")
    assert str(caught.value) == "the CRM rejected the API key (HTTP 401): check CRM_API_KEY"
    assert caught.value.status_code == 401
    for text in (str(caught.value), repr(caught.value), str(client), repr(client), caplog.text):
        assert "wrong-key-123" not in text


def test_permission_denied_redacts_an_echoed_key(
    fake_crm: FakeCrm, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    echo = {"errors": {"code": 403, "message": [f"token {API_KEY} may not read deals"]}}
    fake_crm.scripted.append(status(403, echo))
    client = make_client()
    with caplog.at_level(logging.DEBUG), pytest.raises(CrmPermissionError) as caught:
        client.view_id("deals", "Open Deals")
    message = str(caught.value)
    assert "HTTP 403" in message and "GET /api/deals/filters" in message and "permission" in message
    assert "token ******** may not read deals" in message
    assert_secret_free(caught.value, client, caplog)


def test_not_found_on_a_list_path_blames_the_base_url(
    fake_crm: FakeCrm, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake_crm.scripted.append(status(404, "<html>Not Found</html>"))
    client = make_client()
    with pytest.raises(CrmNotFoundError) as caught:
        client.view_id("deals", "Open Deals")
    message = str(caught.value)
    assert "GET /api/deals/filters" in message
    assert f"CRM_BASE_URL ({BASE_URL}) looks wrong" in message
    assert "no longer exists" in message
    assert_secret_free(caught.value, client, caplog)


def test_not_found_on_a_record_says_deleted_or_wrong_account(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("deals", "Open Deals", 7, make_records(1, first_id=5))
    with pytest.raises(CrmNotFoundError) as caught:
        make_client().get_record("deals", "deal", 6)
    message = str(caught.value)
    assert "/api/deals/6" in message and "deleted" in message and "different CRM account" in message


def test_bad_request_lists_field_errors(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("deals", "Open Deals", 7, make_records(1, first_id=5))
    fake_crm.scripted.append(status(400, {"errors": {"amount": ["can't be blank"], "name": "too long"}}))
    with pytest.raises(CrmBadRequestError) as caught:
        make_client().update_record("deals", "deal", 5, {"amount": None})
    assert caught.value.field_errors == {"amount": ["can't be blank"], "name": ["too long"]}
    assert str(caught.value) == (
        "the CRM refused PUT /api/deals/5 (HTTP 400); field errors: amount: can't be blank; name: too long"
    )


def test_unknown_view_names_the_available_ones(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("deals", "Open Deals", 1, [])
    fake_crm.add_view("deals", "Won Deals", 2, [])
    with pytest.raises(CrmViewNotFoundError) as caught:
        make_client().view_id("deals", "All Deals")
    assert str(caught.value).startswith(
        "the CRM has no deals view named 'All Deals'; available views: 'Open Deals', 'Won Deals'."
    )
    assert caught.value.available == ["Open Deals", "Won Deals"]


def test_view_ids_are_cached_and_matched_case_insensitively(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.add_view("contacts", "Recycle Bin", 99, [])
    client = make_client()
    assert client.view_id("contacts", "Recycle Bin") == 99
    assert client.view_id("contacts", "recycle bin") == 99
    assert [r.path for r in fake_crm.requests] == ["/api/contacts/filters"]


def test_a_non_json_answer_points_at_the_base_url(fake_crm: FakeCrm, make_client: ClientFactory) -> None:
    fake_crm.scripted.append(lambda request: __import__("httpx").Response(200, text="<html>login</html>"))
    with pytest.raises(CrmResponseError, match=r"GET /api/deals/filters with a body that is not JSON"):
        make_client().view_id("deals", "Open Deals")


@pytest.mark.parametrize("url", ["acme.myfreshworks.com/crm/sales", "ftp://acme/crm", ""])
def test_base_url_must_be_http(url: str) -> None:
    with pytest.raises(CrmError, match="CRM_BASE_URL must be an http:// or https:// URL"):
        FreshsalesClient(url, API_KEY)


def test_base_url_with_api_suffix_or_credentials_is_normalised() -> None:
    with FreshsalesClient("https://user:pw@acme.myfreshworks.com/crm/sales/api/", API_KEY) as client:
        assert client.base_url == "https://acme.myfreshworks.com/crm/sales"
        assert repr(client) == "FreshsalesClient(base_url='https://acme.myfreshworks.com/crm/sales')"


@pytest.mark.parametrize("key", ["", "   ", "abc\ndef", "clé-secrète"])
def test_unusable_keys_are_refused_without_quoting_them(key: str) -> None:
    with pytest.raises(CrmAuthError, match="CRM_API_KEY") as caught:
        FreshsalesClient(BASE_URL, key)
    if key.strip():
        assert key not in str(caught.value)


def test_error_body_shapes() -> None:
    assert parse_error_body(b'{"errors": {"code": 404, "message": ["Record not found"]}}') == (
        "Record not found",
        {},
    )
    assert parse_error_body(b'{"message": "Bad key"}') == ("Bad key", {})
    assert parse_error_body(b'{"errors": [{"message": "first"}]}') == ("first", {})
    assert parse_error_body(b'{"description": "nope"}') == ("nope", {})
    assert parse_error_body(b"Service Unavailable") == ("Service Unavailable", {})
    assert parse_error_body(b"") == (None, {})
    assert parse_error_body(b"[1, 2]") == (None, {})


def test_plain_http_to_a_remote_host_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="crm_assets.freshsales"):
        FreshsalesClient("http://acme.example.com/crm/sales", API_KEY).close()
        FreshsalesClient("http://127.0.0.1:8000/crm/sales", API_KEY).close()
    assert caplog.messages == [
        "CRM_BASE_URL http://acme.example.com/crm/sales uses http://: the API key travels unencrypted"
    ]
