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
