"""Bad input fails before any write, with a message naming the problem; hostile strings are only values."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from crm_assets.demo_crm import DemoCrm
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.schema import CLEAN_TABLES, crm_update_audit
from crm_assets_tests.write_back.conftest import rows, run_update, seed_warehouse
from crm_assets_tests.write_back.test_update_job import failure_text, first_deal

DEAL = {"domain": "deals", "key": "deal_id", "value": "1", "key_to_update": "deal_size", "update_value": "10"}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param({"key": "deal_number"}, ["key", "no field 'deal_number'", "deal_size"], id="key"),
        pytest.param({"key_to_update": "colour"}, ["key_to_update", "no field 'colour'"], id="field"),
        pytest.param({"key_to_update": "deal_id"}, ["business key", "writable fields: deal_name"], id="business-key"),
        pytest.param({"key_to_update": "created_at"}, ["'created_at' is read-only"], id="created-at"),
        pytest.param({"key_to_update": "crm_id"}, ["CRM record id"], id="crm-id"),
        pytest.param(
            {"update_value": "abc"}, ["update_value 'abc'", "deal_size", "decimal number"], id="deal-size-abc"
        ),
        pytest.param({"value": "lots"}, ["value 'lots'", "deal_id", "whole number"], id="key-value-uncastable"),
        pytest.param({"value": "  "}, ["deal_id", "missing"], id="key-value-empty"),
        pytest.param(
            {"key_to_update": "deal_stage", "update_value": ""}, ["deal_stage: missing (required)"], id="required-empty"
        ),
        pytest.param(
            {
                "domain": "accounts",
                "key": "account_id",
                "value": "1001",
                "key_to_update": "region",
                "update_value": "Mars",
            },
            ["update_value 'Mars'", "region", "one of North America, Europe, Asia"],
            id="region-mars",
        ),
        pytest.param(
            {
                "domain": "contacts",
                "key": "last_name",
                "value": "x",
                "key_to_update": "last_contact_date",
                "update_value": "yesterday",
            },
            ["update_value 'yesterday'", "last_contact_date", "YYYY-MM-DD"],
            id="date-yesterday",
        ),
        pytest.param(
            {"key_to_update": "probability_of_closure", "update_value": " low "},
            [
                "update_value ' low ' is not a choice of the CRM's dropdown 'Probability of closure'",
                "(did you mean 'Low'?); choices: Low, Medium, High",
            ],
            id="dropdown-spelling",
        ),
        pytest.param(
            {"key_to_update": "probability_of_closure", "update_value": "Certain"},
            ["update_value 'Certain' is not a choice", "(cf_probability_of_closure)", "choices: Low, Medium, High"],
            id="dropdown-unknown",
        ),
        pytest.param({"value": "999999"}, ["no deals record in the CRM has deal_id = '999999'"], id="no-match"),
        pytest.param(
            {"key": "deal_name", "value": "x' OR '1'='1"},
            ["no deals record", "deal_name = \"x' OR '1'='1\""],
            id="sql-in-key",
        ),
        pytest.param({"key": "deal_name", "value": "1&f=name&q=%&entities=deal"}, ["no deals record"], id="url-in-key"),
    ],
)
def test_bad_input_fails_before_any_write_and_says_why(
    demo: DemoCrm, crm_url: str, sqlite_url: str, config: dict[str, Any], expected: list[str]
) -> None:
    engine = create_warehouse_engine(sqlite_url)
    migrate(engine)
    result = run_update(crm_url, sqlite_url, **(DEAL | config))

    assert not result.success
    message = failure_text(result)
    assert message.startswith("nothing was written: ")
    for part in expected:
        assert part in message
    assert not [
        r for r in demo.request_log if r.method in ("PUT", "POST", "DELETE") and "filtered_search" not in r.path
    ]
    assert demo.put_log == []
    assert rows(engine, crm_update_audit) == []


def test_a_new_account_id_the_warehouse_does_not_know_fails_before_any_write(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    crm_id = first_deal(demo)
    seed_warehouse(warehouse_engine, demo, [crm_id])
    deal_id = str((demo.get_record("deals", crm_id) or {})["custom_field"]["cf_deal_id"])

    result = run_update(
        crm_url, warehouse_url, **(DEAL | {"value": deal_id, "key_to_update": "account_id", "update_value": "987654"})
    )

    assert not result.success
    assert "no accounts row has account_id = 987654 in the warehouse" in failure_text(result)
    assert demo.put_log == []
    assert rows(warehouse_engine, crm_update_audit) == []


def test_sql_and_url_lookalikes_are_written_as_plain_values(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    crm_id = first_deal(demo)
    seed_warehouse(warehouse_engine, demo, [crm_id])
    deal_id = str((demo.get_record("deals", crm_id) or {})["custom_field"]["cf_deal_id"])
    hostile = "Robert'); DROP TABLE deals;-- ../../sales_accounts/1?api_key=x&f=name"

    result = run_update(
        crm_url, warehouse_url, **(DEAL | {"value": deal_id, "key_to_update": "deal_name", "update_value": hostile})
    )

    assert result.success
    assert demo.put_log == [("deals", crm_id, {"deal": {"name": hostile}})]
    (row,) = rows(warehouse_engine, CLEAN_TABLES["deals"], CLEAN_TABLES["deals"].c.crm_id == crm_id)
    assert row["deal_name"] == hostile
    assert len(rows(warehouse_engine, CLEAN_TABLES["accounts"])) == len(demo.crm_ids("sales_accounts"))


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize(
    ("field", "text", "named"),
    [
        pytest.param("update_value", "Acme\x00 Renewal", "a NUL character (U+0000) at position 5", id="nul"),
        pytest.param("update_value", "bell\x07", "the control character U+0007 at position 5", id="bell"),
        pytest.param("update_value", "half \ud83d pair", "a lone surrogate (U+D83D) at position 6", id="surrogate"),
        pytest.param("value", "x\x00", "a NUL character (U+0000) at position 2", id="nul-in-key-value"),
    ],
)
def test_a_value_the_warehouse_or_the_crm_cannot_store_fails_before_any_write(
    demo: DemoCrm,
    crm_url: str,
    warehouse_url: str,
    warehouse_engine: Engine,
    field: str,
    text: str,
    named: str,
    dry_run: bool,
) -> None:
    crm_id = first_deal(demo)
    seed_warehouse(warehouse_engine, demo, [crm_id])
    deal_id = str((demo.get_record("deals", crm_id) or {})["custom_field"]["cf_deal_id"])
    config = DEAL | {"key": "deal_name", "value": "x", "key_to_update": "deal_name", "dry_run": dry_run}
    config |= {"key": "deal_id", "value": deal_id} if field == "update_value" else {}
    demo.clear_log()

    result = run_update(crm_url, warehouse_url, **(config | {field: text}))

    assert not result.success
    message = failure_text(result)
    assert message.startswith(f"nothing was written: {field} ")
    assert f"contains {named}" in message and "remove it" in message
    assert demo.request_log == [], "refused before the CRM is asked anything"
    assert rows(warehouse_engine, crm_update_audit) == []
    (row,) = rows(warehouse_engine, CLEAN_TABLES["deals"], CLEAN_TABLES["deals"].c.crm_id == crm_id)
    assert row["deal_name"] == (demo.get_record("deals", crm_id) or {})["name"]


def test_tabs_newlines_and_other_scripts_are_ordinary_text(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    crm_id = first_deal(demo)
    seed_warehouse(warehouse_engine, demo, [crm_id])
    deal_id = str((demo.get_record("deals", crm_id) or {})["custom_field"]["cf_deal_id"])
    text = "Renewal\t2027\r\nÉtape 2 — 更新 🚀"

    result = run_update(
        crm_url, warehouse_url, **(DEAL | {"value": deal_id, "key_to_update": "deal_name", "update_value": text})
    )

    assert result.success
    (row,) = rows(warehouse_engine, CLEAN_TABLES["deals"], CLEAN_TABLES["deals"].c.crm_id == crm_id)
    assert row["deal_name"] == text


def test_a_label_that_does_not_fit_is_said_once_with_what_fits(demo: DemoCrm, crm_url: str, sqlite_url: str) -> None:
    migrate(create_warehouse_engine(sqlite_url))

    result = run_update(crm_url, sqlite_url, **(DEAL | {"key_to_update": "deal_stage", "update_value": "closed won"}))

    assert failure_text(result) == (
        "nothing was written: update_value 'closed won' does not fit deal_stage: "
        "expected one of Prospecting, Negotiation, Closed-Won, Closed-Lost"
    )
