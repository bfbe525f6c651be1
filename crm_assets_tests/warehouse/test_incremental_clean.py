"""Incremental clean runs re-decide only touched business keys, and always agree with a full recompute."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains import ACCOUNTS, CONTACTS, DEALS, Column, ColumnType, Domain, ForeignKey
from crm_assets.transform.clean import clean
from crm_assets.warehouse import clean_load
from crm_assets.warehouse.clean_load import clean_changes, read_clean_rows
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.history import current_version_mismatches, reconcile
from crm_assets.warehouse.raw import RawWriter, read_live_fields
from crm_assets.warehouse.schema import CANDIDATE_TABLES, CLEAN_TABLES, deal_history, rejected_records
from crm_assets_tests.conftest import create_pg_database, drop_pg_database
from crm_assets_tests.warehouse.test_loads import contact

STAGES = ["Prospecting", "negotiation ", "Closed-Won", "Closed-Lost", "Mars"]


def account(crm_id: int, key: Any, second: int, **custom: Any) -> dict[str, Any]:
    fields = {"cf_account_id": key, "cf_industry": "Tech", "cf_account_value": "100", "cf_region": "Asia"}
    return {
        "id": crm_id,
        "name": f"A{crm_id}",
        "updated_at": f"2024-01-01T00:{second // 60:02d}:{second % 60:02d}Z",
        "custom_field": fields | custom,
    }


def deal(
    crm_id: int, key: Any, account_key: Any, second: int, stage: str = "Prospecting", day: int = 1
) -> dict[str, Any]:
    fields = {
        "cf_deal_id": key,
        "cf_probability_of_closure": "50%",
        "cf_deal_stage": stage,
        "cf_account_id": account_key,
    }
    return {
        "id": crm_id,
        "name": f"D{crm_id}",
        "amount": "10.5",
        "created_at": f"2024-02-{day:02d}T12:00:00-06:00",
        "updated_at": f"2024-03-01T00:{second // 60:02d}:{second % 60:02d}Z",
        "custom_field": fields,
    }


def write(engine: Engine, domain: Domain, records: list[dict[str, Any]], deleted: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
    with engine.begin() as conn:
        writer = RawWriter(conn, domain, "run")
        writer.add(records)
        writer.add([r | {"is_deleted": True} for r in deleted], deleted=True)
        writer.merge(reconcile=False)


def clean_all(engine: Engine, **kwargs: Any) -> None:
    for domain in (ACCOUNTS, DEALS):
        with engine.begin() as conn:
            clean_changes(conn, domain, "run", batch_size=7, chunk_size=5, **kwargs)


def state(engine: Engine, domain: Domain) -> tuple[list[tuple[Any, ...]], set[tuple[int, str]]]:
    with engine.connect() as conn:
        rows = read_clean_rows(conn, domain).rows()
        rejected = conn.execute(
            sa.select(rejected_records.c.crm_id, rejected_records.c.reason).where(
                rejected_records.c.domain == domain.name
            )
        )
        return rows, {(int(c), r) for c, r in rejected}


def reference(engine: Engine, domain: Domain) -> tuple[list[tuple[Any, ...]], set[tuple[int, str]]]:
    """The rules applied to every live raw record at once (accounts first, as a sync does)."""
    with engine.connect() as conn:
        accounts = clean(ACCOUNTS, read_live_fields(conn, ACCOUNTS))
        if domain is ACCOUNTS:
            result = accounts
        else:
            result = clean(DEALS, read_live_fields(conn, DEALS), {"accounts": accounts.rows["account_id"]})
    return result.rows.rows(), {(int(c), r) for c, r in result.rejected.iter_rows()}


@pytest.mark.parametrize(
    "mode", ["row-checked", "bulk-load", "index-probes", "whole-referenced-column", "read-ahead", "bulk-read-ahead"]
)
def test_incremental_runs_agree_with_a_full_recompute(
    warehouse_engine: Engine, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if mode == "bulk-load":  # every run drops and rebuilds plain indexes (and foreign keys, on PostgreSQL)
        monkeypatch.setattr(clean_load, "BULK_LOAD_MIN_ROWS", 0)
        monkeypatch.setattr(clean_load, "BULK_LOAD_GROWTH", 0)
    if mode == "index-probes":  # every run counts as small: joins by index probes only (PostgreSQL)
        monkeypatch.setattr(clean_load, "SMALL_CHANGE_SHARE", 0)
    if mode == "whole-referenced-column":  # every chunk's foreign keys are matched against all the accounts
        monkeypatch.setattr(clean_load.ReferencedKeys, "WHOLE_COLUMN_FROM", 0)
    if mode == "bulk-read-ahead":  # the batches read on a second connection while the tables are suspended
        monkeypatch.setattr(clean_load, "BULK_LOAD_MIN_ROWS", 0)
        monkeypatch.setattr(clean_load, "BULK_LOAD_GROWTH", 0)
    ahead = mode.endswith("read-ahead")  # a second connection reads the next batch
    rng = random.Random(42)
    second = 0
    accounts: dict[int, dict[str, Any]] = {}
    deals: dict[int, dict[str, Any]] = {}
    for round_ in range(6):
        changed_accounts, changed_deals, gone_deals = [], [], []
        for _ in range(12):
            second += 1
            crm_id = rng.randint(1, 25)
            key = rng.choice([rng.randint(1, 12), f"{rng.randint(1, 12)}.0", "lots", None])
            accounts[crm_id] = account(crm_id, key, second)
            changed_accounts.append(accounts[crm_id])
        for _ in range(25):
            second += 1
            crm_id = rng.randint(100, 160)
            if deals and rng.random() < 0.15:
                gone_deals.append(deals.pop(rng.choice(sorted(deals))))
                continue
            deals[crm_id] = deal(
                crm_id, rng.randint(1, 30), rng.randint(1, 14), second, rng.choice(STAGES), rng.randint(1, 28)
            )
            changed_deals.append(deals[crm_id])
        write(warehouse_engine, ACCOUNTS, changed_accounts)
        write(warehouse_engine, DEALS, changed_deals, gone_deals)
        clean_all(warehouse_engine, ahead=ahead)
        for domain in (ACCOUNTS, DEALS):
            assert state(warehouse_engine, domain) == reference(warehouse_engine, domain), (
                f"round {round_} {domain.name}"
            )


def test_a_first_load_gives_every_deal_the_version_reconciling_would(warehouse_engine: Engine) -> None:
    """A first load writes first versions straight into the history: reconciling afterwards finds nothing to add."""
    write(warehouse_engine, ACCOUNTS, [account(i, i, i) for i in range(1, 6)])
    deals = [deal(100 + i, i % 9, i % 7, i, STAGES[i % 4], i % 28 + 1) for i in range(1, 30)]  # duplicates, orphans
    write(warehouse_engine, DEALS, deals)
    clean_all(warehouse_engine)
    versions = sa.select(sa.func.count()).select_from(deal_history)
    with warehouse_engine.begin() as conn:
        written = conn.execute(versions).scalar_one()
        assert written == conn.execute(sa.select(sa.func.count()).select_from(CLEAN_TABLES["deals"])).scalar_one() > 0
        assert reconcile(conn, sa.select(CLEAN_TABLES["deals"].c.deal_id)) is None
        assert current_version_mismatches(conn) == (0, [])
        assert conn.execute(versions).scalar_one() == written


def test_a_second_clean_run_reads_nothing(warehouse_engine: Engine) -> None:
    write(warehouse_engine, ACCOUNTS, [account(1, 10, 1), account(2, 20, 2)])
    with warehouse_engine.begin() as conn:
        first = clean_changes(conn, ACCOUNTS, "run")
        again = clean_changes(conn, ACCOUNTS, "run")
    assert (first.records_read, first.inserted) == (2, 2)
    assert (again.records_read, again.keys_decided, again.inserted, again.rows) == (0, 0, 0, 2)


def test_an_orphan_deal_loads_once_its_account_arrives(warehouse_engine: Engine) -> None:
    write(warehouse_engine, DEALS, [deal(100, 1, 77, 1)])
    clean_all(warehouse_engine)
    assert state(warehouse_engine, DEALS)[1] == {(100, "orphan: account_id 77 has no loaded accounts row")}
    write(warehouse_engine, ACCOUNTS, [account(1, 77, 2)])
    clean_all(warehouse_engine)
    rows, rejected = state(warehouse_engine, DEALS)
    assert [r[0] for r in rows] == [1]
    assert rejected == set()


def test_a_deleted_account_turns_its_deals_into_orphans(warehouse_engine: Engine) -> None:
    write(warehouse_engine, ACCOUNTS, [account(1, 77, 1)])
    write(warehouse_engine, DEALS, [deal(100, 1, 77, 1)])
    clean_all(warehouse_engine)
    write(warehouse_engine, ACCOUNTS, [], deleted=[account(1, 77, 5)])
    clean_all(warehouse_engine)
    rows, rejected = state(warehouse_engine, DEALS)
    assert rows == []
    assert rejected == {(100, "orphan: account_id 77 has no loaded accounts row")}


def test_a_rejected_duplicate_is_promoted_when_the_winner_moves_away(warehouse_engine: Engine) -> None:
    write(warehouse_engine, ACCOUNTS, [account(1, 10, 1), account(2, 10, 2)])
    clean_all(warehouse_engine)
    assert state(warehouse_engine, ACCOUNTS)[1] == {(1, "duplicate account_id 10: CRM record 2 is more recent")}
    write(warehouse_engine, ACCOUNTS, [account(2, 11, 3)])
    clean_all(warehouse_engine)
    rows, rejected = state(warehouse_engine, ACCOUNTS)
    assert sorted((r[0], r[-2]) for r in rows) == [(10, 1), (11, 2)]
    assert rejected == set()


def test_rebuild_re_decides_everything(warehouse_engine: Engine) -> None:
    write(warehouse_engine, ACCOUNTS, [account(1, 10, 1), account(2, "lots", 2)])
    clean_all(warehouse_engine)
    with warehouse_engine.begin() as conn:
        changes = clean_changes(conn, ACCOUNTS, "run", rebuild=True)
    assert (changes.records_read, changes.inserted, changes.updated, changes.rejected) == (2, 0, 0, 1)


@pytest.mark.parametrize(
    ("bad_key", "reason"),
    [("lots", "account_id: cannot use lots, expected a whole number"), (None, "account_id: missing (required)")],
)
def test_a_run_without_candidates_replaces_its_records_leftover_rejections(
    warehouse_engine: Engine, bad_key: str | None, reason: str
) -> None:
    """A candidates table found empty (new to the warehouse, or emptied) beside rejections of its records: the
    run re-decides the records and keeps one rejection each, with a clean table to diff or without (a first load)."""
    write(warehouse_engine, ACCOUNTS, [account(1, 10, 1), account(2, bad_key, 2)])
    clean_all(warehouse_engine)
    with warehouse_engine.begin() as conn:
        conn.execute(sa.delete(CANDIDATE_TABLES["accounts"]))
        if bad_key is None:
            conn.execute(sa.delete(CLEAN_TABLES["accounts"]))
        changes = clean_changes(conn, ACCOUNTS, "run", rebuild=True)
    assert (changes.records_read, changes.rows, changes.rejected) == (2, 1, 1)  # counted, not a set: no duplicate
    assert state(warehouse_engine, ACCOUNTS)[1] == {(2, reason)}


def test_memory_follows_the_batch_not_the_table(warehouse_engine: Engine) -> None:
    """Batches of 7 raw rows and chunks of 5 keys load 40 accounts exactly like one pass would."""
    write(warehouse_engine, ACCOUNTS, [account(i, i, i) for i in range(1, 41)])
    clean_all(warehouse_engine)
    rows, _ = state(warehouse_engine, ACCOUNTS)
    assert [r[0] for r in rows] == list(range(1, 41))
    assert pl.DataFrame(rows, orient="row").height == 40


def _first_load_state(engine: Engine) -> dict[str, Any]:
    """Every table a first clean writes, with the surrogate ids and the quarantined payloads."""
    with engine.connect() as conn:
        tables = {name: conn.execute(sa.select(t).order_by(*t.primary_key)).all() for name, t in CLEAN_TABLES.items()}
        columns = [c for c in rejected_records.c if c.name not in ("id", "rejected_at")]  # ids: insertion order
        rejected = conn.execute(sa.select(*columns).order_by(rejected_records.c.domain, rejected_records.c.crm_id))
        versioned = [c for c in deal_history.c if c.name != "first_observed_at"]  # when the run ran
        history = conn.execute(sa.select(*versioned).order_by(deal_history.c.deal_id)).all()
        return tables | {"rejected": rejected.all(), "history": history}


@pytest.mark.postgres
def test_a_first_load_decided_on_the_server_matches_the_chunked_contest(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duplicates (ties on updated_at to the higher CRM id), orphans, coercion rejects: the SQL contest of a
    first load gives the same rows, ids, verdicts, history and counts as the chunks of `resolve`."""
    accounts = [account(i, i % 6, i) for i in range(1, 10)] + [account(20, "lots", 20)]
    accounts += [account(30, 7, 30), account(31, 7, 30)]  # a tie: 31 wins
    deals = [deal(100 + i, i % 11, i % 9, i % 13, STAGES[i % 5], i % 28 + 1) for i in range(40)]
    deals += [deal(200, 50, 1, 60), deal(201, 50, 1, 60), deal(202, 51, None, 61)]

    def first_load(engine: Engine) -> list[tuple[Any, ...]]:
        write(engine, ACCOUNTS, accounts)
        write(engine, DEALS, deals)
        counts = []
        for domain, track in ((ACCOUNTS, ("account_id",)), (DEALS, ("deal_id", "created_at"))):
            with engine.begin() as conn:
                changes = clean_changes(conn, domain, "run", track=track, batch_size=7, chunk_size=5)
            after = sorted(pl.concat(changes.after).rows())
            counts.append((changes.inserted, changes.keys_decided, changes.rows, changes.rejected, after))
        return counts

    decided_on_server: list[bool] = []
    on_server = clean_load._first_load_on_server

    def spy(*args: Any) -> bool:
        decided_on_server.append(on_server(*args))
        return decided_on_server[-1]

    monkeypatch.setattr(clean_load, "_first_load_on_server", spy)
    server_engine = create_warehouse_engine(pg_url)
    migrate(server_engine)
    chunked_url = create_pg_database()
    chunked_engine = create_warehouse_engine(chunked_url)
    try:
        migrate(chunked_engine)
        server_counts = first_load(server_engine)
        assert decided_on_server == [True, True]
        monkeypatch.setattr(clean_load, "_first_load_on_server", lambda *a: False)
        assert first_load(chunked_engine) == server_counts
        server, chunked = _first_load_state(server_engine), _first_load_state(chunked_engine)
        assert server == chunked
        reasons = {r.reason.split(" ")[0] for r in server["rejected"]}
        assert {"duplicate", "orphan:"} <= reasons and len(server["deals"]) > 5
        assert (31, "duplicate account_id 7: CRM record 31 is more recent") not in [
            (r.crm_id, r.reason) for r in server["rejected"]
        ]
        assert (30, "duplicate account_id 7: CRM record 31 is more recent") in [
            (r.crm_id, r.reason) for r in server["rejected"]
        ]
        assert any(r.crm_id == 202 and "account_id" in r.reason for r in server["rejected"])  # coerced out
    finally:
        server_engine.dispose()
        chunked_engine.dispose()
        drop_pg_database(chunked_url)


@pytest.mark.postgres
def test_a_first_load_on_the_server_numbers_text_keys_as_the_chunks_do_under_any_collation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a database whose collation sorts 'a' before 'B' (ICU en-US), the surrogate ids still follow the byte
    order polars sorts a chunk in, as the chunked contest gives them."""
    keys = ["a", "B", "_x", "10", "9", "é", "Ä", "z z", "Z"]
    ids: dict[bool, list[tuple[Any, ...]]] = {}
    for on_server in (True, False):
        if not on_server:
            monkeypatch.setattr(clean_load, "_first_load_on_server", lambda *a: False)
        url = create_pg_database(options="TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
        engine = create_warehouse_engine(url)
        try:
            migrate(engine)
            write(engine, CONTACTS, [contact(10 + n, key) for n, key in enumerate(keys)])
            with engine.begin() as conn:
                clean_changes(conn, CONTACTS, "run")
                table = CLEAN_TABLES["contacts"]
                ids[on_server] = [
                    tuple(row) for row in conn.execute(sa.select(table.c.id, table.c.contact_id).order_by(table.c.id))
                ]
        finally:
            engine.dispose()
            drop_pg_database(url)
    assert ids[True] == ids[False]
    assert [key for _, key in ids[True]] == sorted(keys, key=lambda k: k.encode())


def test_two_foreign_keys_to_one_domain_each_find_their_rows(warehouse_engine: Engine) -> None:
    """The values found for one foreign key are not forgotten when a second one points to the same domain."""
    write(warehouse_engine, ACCOUNTS, [account(i, i, i) for i in (1, 2, 3)])
    with warehouse_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")
    shipping = Column("shipping_account_id", ColumnType.BIGINT, "custom_field.cf_shipping_account_id")
    two_ways = replace(
        DEALS,
        columns=(*DEALS.columns, shipping),
        foreign_keys=(*DEALS.foreign_keys, ForeignKey(shipping.name, "accounts", "account_id")),
    )
    rows = pl.DataFrame({"account_id": [1, 9], "shipping_account_id": [2, 3]})
    for whole in (False, True):
        referenced = clean_load.ReferencedKeys(two_ways)
        if whole:
            referenced.WHOLE_COLUMN_FROM = 0
        with warehouse_engine.connect() as conn:
            found = referenced.present(conn, rows)
        assert sorted(set(found["accounts"].to_list())) == [1, 2, 3]
