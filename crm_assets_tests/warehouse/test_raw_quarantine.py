"""Records the warehouse cannot store as they came are quarantined with their payload; the rest loads."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains import ACCOUNTS
from crm_assets.lenient_json import loads_lenient
from crm_assets.warehouse.clean_load import clean_changes
from crm_assets.warehouse.raw import MAX_REJECTED_PAYLOAD_CHARS, RawLoadStats, RawWriter, Unstorable, check_record
from crm_assets.warehouse.schema import CANDIDATE_TABLES, CLEAN_TABLES, RAW_TABLES, raw_scan_records, rejected_records


def account(crm_id: Any, account_id: int = 10, **extra: Any) -> dict[str, Any]:
    custom = {"cf_account_id": account_id, "cf_industry": "Tech", "cf_account_value": "1000", "cf_region": "Europe"}
    return (
        {"id": crm_id, "name": f"Account {account_id}", "updated_at": "2024-01-01T10:00:00Z"}
        | {"custom_field": custom}
        | extra
    )


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def without_id() -> dict[str, Any]:
    record = account(0, 1)
    del record["id"]
    return record


# (record, crm_id kept, problem kind, a word the reason names)
UNSTORABLE = {
    "no id": (without_id(), None, "id: missing", "missing"),
    "null id": (account(None, 2), None, "id: missing", "missing"),
    "text id": (account("9001", 3), None, "id: uncastable", "'9001'"),
    "id beyond BIGINT": (account(2**64, 4), None, "id: uncastable; payload: uncastable", "64-bit"),
    "300 levels deep": (account(105, 5, notes=nested(300)), 105, "payload: uncastable", "255 levels"),
    "lone surrogate": (account(106, 6, name="caf\ud800"), 106, "payload: uncastable", "JSON"),
    "integer beyond 64 bits in a field": (account(107, 7, amount=2**70), 107, "payload: uncastable", "JSON"),
}


def write(engine: Engine, records: list[Any]) -> RawLoadStats:
    with engine.begin() as conn:
        writer = RawWriter(conn, ACCOUNTS, "run")
        writer.add(records)
        return writer.merge(reconcile=False)


def rejected_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(rejected_records).order_by(rejected_records.c.id)).all())


def test_each_unstorable_record_is_quarantined_with_its_payload_and_the_rest_loads(warehouse_engine: Engine) -> None:
    bad = [record for record, *_ in UNSTORABLE.values()]
    stats = write(warehouse_engine, [account(1, 100), *bad, account(2, 200)])

    assert (stats.inserted, stats.rejected, stats.fetched) == (2, len(bad), len(bad) + 2)
    assert stats.rejected_by_reason == {"payload: uncastable": 4, "id: missing": 2, "id: uncastable": 2}
    with warehouse_engine.connect() as conn:
        assert sorted(conn.execute(sa.select(RAW_TABLES["accounts"].c.crm_id)).scalars()) == [1, 2]
        assert conn.execute(sa.select(sa.func.count()).select_from(raw_scan_records)).scalar_one() == 0
    rows = {account_of(row.payload): row for row in rejected_rows(warehouse_engine)}
    assert len(rows) == len(bad)
    for name, (record, crm_id, problem, word) in UNSTORABLE.items():
        row = rows[record["custom_field"]["cf_account_id"]]
        assert (row.domain, row.crm_id, row.problem, row.run_id) == ("accounts", crm_id, problem, "run"), name
        assert word in row.reason, (name, row.reason)
    # JSON-able records keep their payload as JSON; the others as text a person can read.
    assert rows[3].payload["id"] == "9001"
    assert isinstance(rows[5].payload, str) and '{"a": {"a":' in rows[5].payload
    assert "\\ud800" in rows[6].payload


def account_of(payload: Any) -> int:
    """The account id a quarantined payload holds, whether it was kept as JSON or as text."""
    if isinstance(payload, dict):
        return int(payload["custom_field"]["cf_account_id"])
    match = re.search(r'"cf_account_id": (\d+)', payload)
    assert match, payload
    return int(match.group(1))


def test_a_rerun_replaces_quarantined_copies_instead_of_piling_them_up(warehouse_engine: Engine) -> None:
    bad = [record for record, *_ in UNSTORABLE.values()]
    write(warehouse_engine, bad + bad)  # listed twice in one scan (two views)
    write(warehouse_engine, bad)
    assert len(rejected_rows(warehouse_engine)) == len(bad)


def test_a_full_listing_without_an_id_less_record_takes_it_out_of_quarantine(warehouse_engine: Engine) -> None:
    write(warehouse_engine, [account(1, 100), without_id(), account("9001", 3)])
    with warehouse_engine.begin() as conn:
        writer = RawWriter(conn, ACCOUNTS, "run")
        writer.add([account(1, 100), account("9001", 3)])  # the record without an id is gone from the CRM
        writer.merge(reconcile=True)
    (row,) = rejected_rows(warehouse_engine)
    assert row.payload["id"] == "9001"


def test_the_clean_run_counts_raw_rejections_and_a_fixed_record_leaves_quarantine(warehouse_engine: Engine) -> None:
    write(warehouse_engine, [account(1, 100), account(105, 5, notes=nested(300))])
    with warehouse_engine.begin() as conn:
        changes = clean_changes(conn, ACCOUNTS, "run")
    assert changes.rejected == 1 and changes.rejected_by_reason == {"payload: uncastable": 1}
    write(warehouse_engine, [account(105, 5, updated_at="2024-02-01T00:00:00Z")])  # the CRM fixed it
    with warehouse_engine.begin() as conn:
        changes = clean_changes(conn, ACCOUNTS, "run")
    assert changes.rejected == 0
    with warehouse_engine.connect() as conn:
        assert sorted(conn.execute(sa.select(CLEAN_TABLES["accounts"].c.crm_id)).scalars()) == [1, 105]


@pytest.mark.parametrize("fresh", [False, True])
def test_a_re_decided_record_stays_quarantined_until_a_later_copy_is_stored(
    warehouse_engine: Engine, fresh: bool
) -> None:
    """A rebuild re-decides a record from the copy raw kept; the CRM's later copy, which could not be stored,
    stays in quarantine (with or without candidates to replace) until a copy after it is stored."""
    write(warehouse_engine, [account(1, 100), account(105, 5)])
    with warehouse_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")
    write(warehouse_engine, [account(105, 5, notes=nested(300), updated_at="2024-02-01T00:00:00Z")])
    with warehouse_engine.begin() as conn:
        if fresh:
            conn.execute(sa.delete(CANDIDATE_TABLES["accounts"]))
        changes = clean_changes(conn, ACCOUNTS, "run", rebuild=True)
    assert changes.rejected == 1 and changes.rejected_by_reason == {"payload: uncastable": 1}
    assert [(row.crm_id, row.problem) for row in rejected_rows(warehouse_engine)] == [(105, "payload: uncastable")]
    write(warehouse_engine, [account(105, 6, updated_at="2024-03-01T00:00:00Z")])  # the CRM fixed it
    with warehouse_engine.begin() as conn:
        changes = clean_changes(conn, ACCOUNTS, "run")
    assert changes.rejected == 0 and rejected_rows(warehouse_engine) == []


def test_a_scan_that_stores_a_fixed_copy_beside_an_unstorable_one_leaves_nothing_quarantined(
    warehouse_engine: Engine,
) -> None:
    """Edited while a scan ran, a record is listed twice: first a copy that cannot be stored, then the fixed one."""
    write(warehouse_engine, [account(2, 20, name="caf\ud800"), account(2, 20, updated_at="2024-01-01T10:05:00Z")])
    with warehouse_engine.begin() as conn:
        changes = clean_changes(conn, ACCOUNTS, "run")
    assert (changes.rows, changes.rejected) == (1, 0) and rejected_rows(warehouse_engine) == []


def test_a_deleted_copy_that_cannot_be_stored_still_deletes_the_record(warehouse_engine: Engine) -> None:
    """The Recycle Bin lists a stored record in a form the warehouse cannot store: it is gone all the same,
    counted before the merge (the mass-delete guard) and by it, and its copy is quarantined."""
    write(warehouse_engine, [account(1, 100), account(2, 200)])
    with warehouse_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")
        writer = RawWriter(conn, ACCOUNTS, "run")
        writer.add([account(2, 200, notes=nested(300), updated_at="2024-02-01T00:00:00Z")], deleted=True)
        assert writer.deletion_counts(reconcile=False).deleted_by_crm == 1
        stats = writer.merge(reconcile=False)
        changes = clean_changes(conn, ACCOUNTS, "run")
        raw = RAW_TABLES["accounts"]
        flags = {row.crm_id: row.is_deleted for row in conn.execute(sa.select(raw.c.crm_id, raw.c.is_deleted))}
    assert (stats.marked_deleted, stats.rejected) == (1, 1)
    assert flags == {1: False, 2: True}
    assert (changes.rows, changes.deleted) == (1, 1)


def test_a_huge_payload_is_cut_when_quarantined(warehouse_engine: Engine) -> None:
    huge = account(None, 8, notes="x" * (MAX_REJECTED_PAYLOAD_CHARS * 2))
    write(warehouse_engine, [huge])
    (row,) = rejected_rows(warehouse_engine)
    assert isinstance(row.payload, str)
    assert len(row.payload) < MAX_REJECTED_PAYLOAD_CHARS + 100 and "[cut:" in row.payload


@pytest.mark.parametrize("name", list(UNSTORABLE))
def test_check_record_names_the_problem(name: str) -> None:
    record, crm_id, _, word = UNSTORABLE[name]
    checked = check_record(record)
    assert isinstance(checked, Unstorable)
    assert word in checked.reason
    assert checked.crm_id == crm_id
    orjson.dumps(checked.payload)  # whatever it keeps can be stored as JSON


def test_records_orjson_could_not_read_are_quarantined_naming_the_value_and_the_rest_loads(
    warehouse_engine: Engine,
) -> None:
    # A page as the client reads it when orjson refuses its body: values JSON cannot hold are marked.
    fields = [b'"caf\\ud800"', b"1e400", b"NaN", b"[" * 1100 + b"]" * 1100]
    bad = [f'{{"id": {110 + i}, "name": "x", "notes": '.encode() + field + b"}" for i, field in enumerate(fields)]
    good = orjson.dumps(account(1, 100))
    records = loads_lenient(b"[" + b", ".join([good, *bad]) + b"]")

    stats = write(warehouse_engine, records)

    assert (stats.inserted, stats.rejected) == (1, len(bad))
    assert stats.rejected_by_reason == {"payload: uncastable": len(bad)}
    reasons = {row.crm_id: row.reason for row in rejected_rows(warehouse_engine)}
    assert "surrogates not allowed" in reasons[110]
    assert "a number beyond the range of a double: 1e400" in reasons[111]
    assert "a number JSON does not allow: NaN" in reasons[112]
    assert "nested deeper than 255 levels" in reasons[113]
