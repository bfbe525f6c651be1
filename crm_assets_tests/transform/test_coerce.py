"""SPEC section 3, rule 1: coercion of each value to its column type."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from crm_assets.domains import ACCOUNTS, CONTACTS, DEALS
from crm_assets.transform.coerce import cast_value, to_crm_value

ACCOUNT_ID = ACCOUNTS.column("account_id")
REGION = ACCOUNTS.column("region")
NAME = ACCOUNTS.column("account_name")
DEAL_SIZE = DEALS.column("deal_size")
CREATED_AT = DEALS.column("created_at")
LAST_CONTACT = CONTACTS.column("last_contact_date")
LEAD_SOURCE = CONTACTS.column("lead_source")
JOB_TITLE = CONTACTS.column("job_title")


@pytest.mark.parametrize("raw", ["1003", "1003.0", " 1003 ", "1003.000"])
def test_integer_columns_accept_integral_values(raw: str) -> None:
    assert cast_value(ACCOUNT_ID, raw) == 1003


@pytest.mark.parametrize("raw", ["1003.5", "lots", "true", "12abc"])
def test_integer_columns_reject_the_rest(raw: str) -> None:
    with pytest.raises(ValueError, match=r"account_id: cannot use .*whole number"):
        cast_value(ACCOUNT_ID, raw)


def test_large_integers_keep_every_digit() -> None:
    assert cast_value(ACCOUNT_ID, "9007199254740993") == 9007199254740993


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1200.505", "1200.50"),
        ("1200.515", "1200.52"),
        ("0.125", "0.12"),
        ("-1.005", "-1.00"),
        ("24456", "24456.00"),
    ],
)
def test_money_rounds_half_even_to_cents(raw: str, expected: str) -> None:
    assert cast_value(DEAL_SIZE, raw) == Decimal(expected)


def test_money_rounding_matches_python_decimal_on_random_inputs() -> None:
    rng = random.Random(3)
    for _ in range(300):
        raw = f"{rng.randint(-(10**9), 10**9)}.{rng.randint(0, 99999):05d}"
        expected = Decimal(raw).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
        assert cast_value(DEAL_SIZE, raw) == expected, raw


def test_missing_money_is_null_but_bad_money_is_rejected() -> None:
    assert cast_value(DEAL_SIZE, None) is None
    assert cast_value(DEAL_SIZE, "   ") is None
    with pytest.raises(ValueError, match="deal_size: cannot use abc"):
        cast_value(DEAL_SIZE, "abc")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-01T23:59:59-06:00", datetime(2024, 1, 2, 5, 59, 59, tzinfo=UTC)),
        ("2019-09-18T06:57:37Z", datetime(2019, 9, 18, 6, 57, 37, tzinfo=UTC)),
        ("2024-02-29T03:00:00+05:30", datetime(2024, 2, 28, 21, 30, tzinfo=UTC)),
    ],
)
def test_timestamps_keep_their_instant_in_utc(raw: str, expected: datetime) -> None:
    assert cast_value(CREATED_AT, raw) == expected


def test_a_date_column_fed_a_timestamp_takes_its_utc_date() -> None:
    assert cast_value(LAST_CONTACT, "2024-01-01T23:30:00-06:00") == date(2024, 1, 2)
    assert cast_value(LAST_CONTACT, "2024-03-01") == date(2024, 3, 1)
    with pytest.raises(ValueError, match="last_contact_date: cannot use yesterday"):
        cast_value(LAST_CONTACT, "yesterday")


@pytest.mark.parametrize(
    "raw",
    [
        "0001-01-01T00:00:00+05:30",  # year 0 in UTC (.NET's DateTime.MinValue in India)
        "9999-12-31T23:00:00-05:00",  # year 10000 in UTC
        "0000-06-01T00:00:00",
        "0000-06-01",
        "10000-01-01",
    ],
)
def test_dates_and_instants_outside_years_1_to_9999_in_utc_are_rejected(raw: str) -> None:
    for column in (CREATED_AT, LAST_CONTACT):
        with pytest.raises(ValueError, match=re.escape(f"{column.name}: cannot use {raw},")):
            cast_value(column, raw)


def test_the_first_and_last_instants_of_the_calendar_are_kept() -> None:
    assert cast_value(CREATED_AT, "0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)
    assert cast_value(CREATED_AT, "9999-12-31T18:59:59-05:00") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert cast_value(LAST_CONTACT, "0001-01-01") == date(1, 1, 1)
    assert cast_value(LAST_CONTACT, "9999-12-31") == date(9999, 12, 31)


@pytest.mark.parametrize(
    ("column", "raw", "expected"),
    [
        (LEAD_SOURCE, " email  campaign", "Email Campaign"),
        (LEAD_SOURCE, "WEBSITE", "Website"),
        (REGION, "north\tamerica ", "North America"),
    ],
)
def test_enum_labels_are_normalized_to_the_canonical_label(column, raw: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert cast_value(column, raw) == expected


def test_unknown_enum_label_names_the_choices() -> None:
    with pytest.raises(ValueError, match="region: cannot use Mars, expected one of North America, Europe, Asia"):
        cast_value(REGION, "Mars")


def test_text_is_stored_as_received_and_blank_is_missing() -> None:
    assert cast_value(NAME, "  Acme  Ltd ") == "  Acme  Ltd "
    assert cast_value(JOB_TITLE, "  ") is None
    with pytest.raises(ValueError, match="account_name: missing"):
        cast_value(NAME, " ")


def test_values_go_back_to_the_crm_in_wire_form() -> None:
    assert to_crm_value(DEAL_SIZE, Decimal("24456.00")) == "24456.00"
    assert to_crm_value(LAST_CONTACT, date(2024, 1, 2)) == "2024-01-02"
    assert to_crm_value(ACCOUNT_ID, 5) == 5
