"""Schema drift: a mapped field gone from every changed record stops the clean run before it writes."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.demo_crm.data import entity_spec
from crm_assets.demo_crm.fields import settings_fields
from crm_assets.domains import ACCOUNTS, CONTACTS, DEALS
from crm_assets.warehouse.clean_load import clean_changes
from crm_assets.warehouse.drift import (
    DRIFT_MIN_RECORDS,
    SchemaDriftError,
    missing_in_changed_records,
    missing_in_field_settings,
)
from crm_assets.warehouse.raw import latest_change_seq, read_cleaned_through
from crm_assets.warehouse.schema import CLEAN_TABLES, rejected_records
from crm_assets_tests.warehouse.test_incremental_clean import account, clean_all, deal, write


def without_region(record: dict[str, Any]) -> dict[str, Any]:
    custom = {k: v for k, v in record["custom_field"].items() if k != "cf_region"}
    return record | {"custom_field": custom}


def snapshot(engine: Engine) -> tuple[int, int, int, int]:
    with engine.connect() as conn:
        counts = [
            conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (CLEAN_TABLES["accounts"], CLEAN_TABLES["deals"], rejected_records)
        ]
        return (*counts, read_cleaned_through(conn, ACCOUNTS))  # type: ignore[return-value]


def loaded(engine: Engine, accounts: int = 30) -> None:
    write(engine, ACCOUNTS, [account(i, 1000 + i, 1) for i in range(1, accounts + 1)])
    write(engine, DEALS, [deal(100 + i, 5000 + i, 1000 + i, 1) for i in range(1, accounts + 1)])
    clean_all(engine)


def test_a_field_missing_from_every_changed_record_fails_the_clean_run_and_writes_nothing(
    warehouse_engine: Engine,
) -> None:
    loaded(warehouse_engine)
    before = snapshot(warehouse_engine)
    touched = [without_region(account(i, 1000 + i, 30)) for i in range(1, DRIFT_MIN_RECORDS + 2)]
    write(warehouse_engine, ACCOUNTS, touched)
    with pytest.raises(SchemaDriftError) as failure, warehouse_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")
    message = str(failure.value)
    for named in ("accounts", "region", "custom_field.cf_region", "CRM_FIELD_MAP", "rebuild: true"):
        assert named in message
    assert f"{len(touched)} changed records" in message
    assert snapshot(warehouse_engine) == before

    write(warehouse_engine, ACCOUNTS, [account(i, 1000 + i, 40) for i in range(1, DRIFT_MIN_RECORDS + 2)])
    clean_all(warehouse_engine)  # the field is back: the next run completes
    assert snapshot(warehouse_engine)[:3] == before[:3]


def test_null_values_a_few_records_and_deleted_records_are_not_drift(warehouse_engine: Engine) -> None:
    loaded(warehouse_engine)
    # A JSON null is a present field without a value: ordinary dirt, rejected record by record.
    write(warehouse_engine, ACCOUNTS, [account(i, 1000 + i, 30, cf_region=None) for i in range(1, 15)])
    with warehouse_engine.connect() as conn:
        assert missing_in_changed_records(conn, ACCOUNTS, 1, latest_change_seq(conn, ACCOUNTS)) == []
    clean_all(warehouse_engine)
    # Fewer changed records than the minimum say nothing; deleted records do not count.
    few = [without_region(account(i, 1000 + i, 50)) for i in range(1, DRIFT_MIN_RECORDS)]
    gone = [without_region(account(i, 1000 + i, 50)) for i in range(20, 30)]
    write(warehouse_engine, ACCOUNTS, few, deleted=gone)
    clean_all(warehouse_engine)  # no drift: record by record, the few are rejected like the nulls before them
    with warehouse_engine.connect() as conn:
        rejected = conn.execute(
            sa.select(rejected_records.c.crm_id).where(rejected_records.c.reason.like("region: missing%"))
        ).scalars()
        assert sorted(rejected) == list(range(1, 15))


def test_the_field_settings_check_finds_mapped_fields_the_crm_no_longer_lists() -> None:
    for domain in (ACCOUNTS, CONTACTS, DEALS):
        assert missing_in_field_settings(domain, settings_fields(entity_spec(domain))) == []
    renamed = [
        f | {"name": "cf_territory"} if f["name"] == "cf_region" else f for f in settings_fields(entity_spec(ACCOUNTS))
    ]
    (missing,) = missing_in_field_settings(ACCOUNTS, renamed)
    assert (missing.column, missing.source) == ("region", "custom_field.cf_region")
