"""SPEC section 3, rules 2-4: rejects with reasons, duplicates, orphans; no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import polars as pl

from crm_assets.domains import ACCOUNTS, CONTACTS, DEALS
from crm_assets.transform.clean import clean, coerce_records, problems, reason_kinds
from crm_assets.transform.coerce import KEY_MAX_BYTES

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def deal(crm_id: int, deal_id: str | None = "1", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "crm_id": crm_id,
        "updated_at": T0,
        "deal_id": deal_id,
        "deal_name": "Deal",
        "deal_size": "10.00",
        "probability_of_closure": "50%",
        "deal_stage": "Prospecting",
        "account_id": "7",
        "created_at": "2024-01-01T10:00:00Z",
    }
    return row | fields


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {"crm_id": pl.Int64(), "updated_at": pl.Datetime("us", "UTC")}
    schema |= {c: pl.String() for c in DEALS.column_names}
    return pl.DataFrame(rows, schema=schema)


ACCOUNT_KEYS = {"accounts": pl.Series([7, 8])}


def test_a_record_missing_a_required_column_is_rejected_with_the_reason() -> None:
    result = clean(DEALS, frame([deal(1, deal_name="  "), deal(2, deal_id="2")]), ACCOUNT_KEYS)
    assert result.rows["crm_id"].to_list() == [2]
    assert result.rejected.to_dicts() == [{"crm_id": 1, "reason": "deal_name: missing (required)"}]


def test_every_problem_of_a_record_is_named() -> None:
    result = clean(DEALS, frame([deal(1, deal_size="lots", deal_stage="Mars")]), ACCOUNT_KEYS)
    (reason,) = result.rejected["reason"].to_list()
    assert "deal_size: cannot use lots" in reason
    assert "deal_stage: cannot use Mars" in reason
    assert result.rejected_by_reason() == {"deal_size: uncastable": 1, "deal_stage: uncastable": 1}


def test_a_key_too_long_to_index_is_rejected_and_other_long_text_is_kept() -> None:
    """Text business keys are indexed (at most KEY_MAX_BYTES, counted in UTF-8 bytes); other text is not."""
    fitting, too_long = "é" * (KEY_MAX_BYTES // 2), "é" * (KEY_MAX_BYTES // 2) + "x"
    raw = pl.DataFrame(
        {
            "crm_id": [1, 2],
            "updated_at": [T0, T0],
            "contact_id": [fitting, too_long],
            "first_name": ["Ada", "Ada"],
            "last_name": ["L" * 100_000, "L"],
            "email": ["a@example.com", "b@example.com"],
            "job_title": [None, None],
            "lead_source": ["website", "website"],
            "last_contact_date": [None, None],
        },
        schema_overrides={"job_title": pl.String, "last_contact_date": pl.String},
    )
    coerced = coerce_records(CONTACTS, raw)
    assert coerced["error"].to_list() == [
        None,
        f"contact_id: cannot use a key of {KEY_MAX_BYTES + 1} bytes, expected at most {KEY_MAX_BYTES:,}",
    ]
    assert coerced["contact_id"].to_list() == [fitting, None]  # nothing too long reaches an index
    assert coerced["last_name"][0] == "L" * 100_000
    assert reason_kinds(coerced["error"][1]) == ["contact_id: uncastable"]


def test_duplicates_the_most_recently_updated_wins_compared_as_instants() -> None:
    late_in_chicago = datetime(2024, 1, 1, 6, tzinfo=UTC)  # 2024-01-01T00:00-06:00
    early_in_utc = datetime(2024, 1, 1, 5, tzinfo=UTC)
    rows = [deal(1, updated_at=late_in_chicago), deal(2, updated_at=early_in_utc)]
    result = clean(DEALS, frame(rows), ACCOUNT_KEYS)
    assert result.rows["crm_id"].to_list() == [1]
    assert result.rejected.to_dicts() == [{"crm_id": 2, "reason": "duplicate deal_id 1: CRM record 1 is more recent"}]


def test_duplicate_ties_go_to_the_higher_crm_id() -> None:
    result = clean(DEALS, frame([deal(5), deal(9), deal(7)]), ACCOUNT_KEYS)
    assert result.rows["crm_id"].to_list() == [9]
    assert sorted(result.rejected["crm_id"].to_list()) == [5, 7]


def test_duplicates_are_judged_after_coercion() -> None:
    """'1' and '1.0' are the same deal_id; a rejected record never wins a duplicate contest."""
    newer_but_bad = deal(2, deal_id="1.0", deal_size="x", updated_at=datetime(2025, 1, 1, tzinfo=UTC))
    result = clean(DEALS, frame([deal(1), newer_but_bad, deal(3, deal_id="1.0")]), ACCOUNT_KEYS)
    assert result.rows["crm_id"].to_list() == [3]
    assert result.rejected.filter(pl.col("crm_id") == 1)["reason"].item().startswith("duplicate deal_id 1")


def test_a_winning_deal_without_a_loaded_account_is_an_orphan() -> None:
    result = clean(DEALS, frame([deal(1, account_id="99"), deal(2, deal_id="2", account_id="8")]), ACCOUNT_KEYS)
    assert result.rows["crm_id"].to_list() == [2]
    assert result.rejected.to_dicts() == [{"crm_id": 1, "reason": "orphan: account_id 99 has no loaded accounts row"}]


def test_a_record_whose_optional_foreign_key_is_empty_is_loaded_not_lost() -> None:
    """A domain may declare a nullable foreign key (an added module: a task with an optional deal). NULL
    points nowhere, as in SQL: the record is neither an orphan nor dropped."""
    columns = tuple(replace(c, nullable=True) if c.name == "account_id" else c for c in DEALS.columns)
    optional = replace(DEALS, columns=columns)
    rows = [deal(1, account_id=None), deal(2, deal_id="2", account_id="99"), deal(3, deal_id="3")]
    result = clean(optional, frame(rows), ACCOUNT_KEYS)
    assert result.rows["crm_id"].to_list() == [1, 3]
    assert result.rows["account_id"].to_list() == [None, 7]
    assert result.rejected.to_dicts() == [{"crm_id": 2, "reason": "orphan: account_id 99 has no loaded accounts row"}]


def test_typed_output_schema() -> None:
    result = clean(DEALS, frame([deal(1, deal_size="1200.505", created_at="2024-01-01T23:00:00-06:00")]), ACCOUNT_KEYS)
    row = result.rows.row(0, named=True)
    assert str(row["deal_size"]) == "1200.50"
    assert row["created_at"] == datetime(2024, 1, 2, 5, tzinfo=UTC)
    assert result.rows.schema["deal_id"] == pl.Int64


def test_domains_without_foreign_keys_need_no_loaded_keys() -> None:
    raw = pl.DataFrame(
        {
            "crm_id": [1],
            "updated_at": [T0],
            "account_id": ["5"],
            "account_name": ["Acme"],
            "industry": ["Tech"],
            "account_value": ["1000.0"],
            "region": [" europe "],
        }
    )
    result = clean(ACCOUNTS, raw)
    assert result.rows.select("account_id", "account_value", "region").row(0) == (5, 1000, "Europe")


def test_problems_names_the_same_kinds_as_reason_kinds() -> None:
    reasons = [
        "duplicate deal_id 7: CRM record 12 is more recent",
        "duplicate name a b: CRM record 3 is more recent",
        "orphan: account_id 5 has no loaded accounts row",
        "deal_size: missing (required)",
        "deal_size: cannot use 'x', expected a decimal number",
        "deal_stage: cannot use 'Mars', expected one of A, B; created_at: missing (required)",
        "odd text without a separator",
    ]
    frame = pl.DataFrame({"reason": reasons}).select(problems(pl.col("reason")))
    assert frame["reason"].to_list() == ["; ".join(reason_kinds(r)) for r in reasons]
