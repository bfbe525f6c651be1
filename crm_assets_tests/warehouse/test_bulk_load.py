"""A big clean run loads without growing plain indexes row by row (and on PostgreSQL without per-row
foreign-key checks), and leaves the schema as it found it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains import ACCOUNTS, DEALS
from crm_assets.warehouse import clean_load
from crm_assets.warehouse.bulk import is_empty, restore_after_bulk_load, suspend_for_bulk_load
from crm_assets.warehouse.clean_load import clean_changes
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.raw import lock_domain
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_history
from crm_assets_tests.warehouse.test_incremental_clean import account, deal, write

TABLES = ("accounts", "deals", "accounts_candidates", "deals_candidates", "deal_history")
CATALOG = sa.text(
    "SELECT c.relname, i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
    "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid "
    "WHERE c.relname IN ('accounts', 'deals', 'accounts_candidates', 'deals_candidates', 'deal_history') "
    "UNION ALL SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) || ' ' || convalidated "
    "FROM pg_constraint WHERE conrelid::regclass::text IN ('accounts', 'deals', 'accounts_candidates', "
    "'deals_candidates', 'deal_history') ORDER BY 1, 2, 3"
)
SQLITE_CATALOG = sa.text(
    f"SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN {TABLES} ORDER BY 1, 2, 3"
)


def catalog(conn: sa.Connection) -> list[sa.Row[str, str, str]]:
    """Every index (and on PostgreSQL every constraint, with whether it is validated) of the loaded tables."""
    return list(conn.execute(CATALOG if is_postgres(conn) else SQLITE_CATALOG).all())


def test_a_big_clean_run_restores_every_index_and_validated_foreign_key(
    warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clean_load, "BULK_LOAD_MIN_ROWS", 3)
    with warehouse_engine.connect() as conn:
        before = catalog(conn)
        assert len(before) > 10
    write(warehouse_engine, ACCOUNTS, [account(i, i, i) for i in range(1, 4)])
    write(warehouse_engine, DEALS, [deal(100 + i, i, i % 3 + 1, i) for i in range(1, 7)])
    dropped: list[list[str]] = []  # the restore statements of every suspension, in order

    def recording(name: str) -> None:
        original = getattr(clean_load, name)

        def spy(conn: sa.Connection, table: sa.Table, **options: bool) -> list[str]:
            dropped.append(original(conn, table, **options))
            return dropped[-1]

        monkeypatch.setattr(clean_load, name, spy)

    recording("suspend_for_bulk_load")
    recording("drop_keys_while_empty")
    for domain in (ACCOUNTS, DEALS):
        with warehouse_engine.begin() as conn:
            clean_changes(conn, domain, "run")
    with warehouse_engine.connect() as conn:
        assert catalog(conn) == before
        assert conn.execute(sa.select(sa.func.count()).select_from(CLEAN_TABLES["deals"])).scalar_one() == 6
        assert conn.execute(sa.select(sa.func.count()).select_from(deal_history)).scalar_one() == 6
    statements = " ".join(s for run in dropped for s in run)
    # SQLite cannot drop a foreign key (a table rebuild): it keeps checking them row by row.
    assert ("VALIDATE CONSTRAINT fk_deals_account_id_accounts" in statements) == is_postgres(warehouse_engine)
    assert "ix_deals_candidates_account_id" in statements and "ix_deals_created_at" in statements
    assert "ix_deals_candidates_deal_id" in statements
    # A first load's tables are empty and no foreign key points to them: their keys are built once after
    # (PostgreSQL).
    assert ("ADD CONSTRAINT pk_deals_candidates PRIMARY KEY" in statements) == is_postgres(warehouse_engine)
    assert ("ADD CONSTRAINT uq_deals_deal_id" in statements) == is_postgres(warehouse_engine)
    # A first load versions every deal once, after the contest: the history's indexes, its open-version
    # key (unique) too, are built once after.
    assert "ix_deal_history_deal_id_valid_from" in statements and "ix_deal_history_open_account_id" in statements
    assert "CREATE UNIQUE INDEX uq_deal_history_open_deal_id" in statements


def test_a_unique_index_is_rebuilt_only_over_an_empty_table(warehouse_engine: Engine) -> None:
    """The history's open-version key is dropped for a first load, whose rebuild checks every key at once;
    over versions already kept it stays, for the lookups of the run."""
    with warehouse_engine.connect() as conn:
        before = catalog(conn)
    version = {"deal_id": 1, "crm_id": 1, "valid_from": datetime(2024, 1, 1, tzinfo=UTC), "is_deleted": False}
    refused = "uq_deal_history_open_deal_id|UNIQUE constraint failed: deal_history.deal_id"  # PostgreSQL|SQLite
    with pytest.raises(sa.exc.IntegrityError, match=refused), warehouse_engine.begin() as conn:
        lock_domain(conn, DEALS)  # as a clean run does first (on SQLite: the write transaction begins)
        restore = suspend_for_bulk_load(conn, deal_history, unique_when_empty=True)
        assert any(s.startswith("CREATE UNIQUE INDEX uq_deal_history_open_deal_id") for s in restore)
        conn.execute(deal_history.insert(), [version | {"first_observed_at": version["valid_from"]}] * 2)
        restore_after_bulk_load(conn, restore)  # two open versions of one deal: the rebuild refuses them
    with warehouse_engine.connect() as conn:
        assert catalog(conn) == before  # the failed transaction rolled the drop back too
        assert is_empty(conn, deal_history)
    with warehouse_engine.begin() as conn:
        conn.execute(deal_history.insert(), [version | {"first_observed_at": version["valid_from"]}])
        restore = suspend_for_bulk_load(conn, deal_history, unique_when_empty=True)
        assert not any("uq_deal_history_open_deal_id" in s for s in restore)
        restore_after_bulk_load(conn, restore)


@pytest.mark.postgres
def test_a_small_change_keeps_the_row_checks(pg_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    write(pg_engine, ACCOUNTS, [account(1, 1, 1)])
    monkeypatch.setattr(clean_load, "suspend_for_bulk_load", lambda *args: pytest.fail("suspended"))
    with pg_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")


@pytest.mark.postgres
def test_a_row_breaking_the_foreign_key_fails_the_restore(pg_engine: Engine) -> None:
    deals = CLEAN_TABLES["deals"]
    with pytest.raises(sa.exc.IntegrityError, match="fk_deals_account_id_accounts"), pg_engine.begin() as conn:
        restore = suspend_for_bulk_load(conn, deals)
        conn.execute(
            deals.insert().values(
                deal_id=1,
                deal_name="D",
                probability_of_closure="50%",
                deal_stage="Prospecting",
                account_id=404,
                created_at=sa.func.now(),
                crm_id=1,
                updated_at=sa.func.now(),
            )
        )
        restore_after_bulk_load(conn, restore)
    with pg_engine.connect() as conn:
        assert conn.execute(CATALOG).all()  # the failed transaction rolled the drop back too
        constraints = conn.execute(
            sa.text("SELECT convalidated FROM pg_constraint WHERE conname = 'fk_deals_account_id_accounts'")
        ).all()
    assert constraints == [(True,)]


def _settings(conn: sa.Connection) -> tuple[str, str]:
    return (
        conn.execute(sa.text("SELECT current_setting('enable_hashjoin')")).scalar_one(),
        conn.execute(sa.text("SELECT current_setting('enable_mergejoin')")).scalar_one(),
    )


@pytest.mark.postgres
def test_a_change_small_against_the_table_joins_by_index_probes(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-sync touching few keys of a large table reads by probes, a larger one by the planner's choice; and the
    settings are back as they were once the run is done. (A first load decides in one statement, not in chunks.)"""
    monkeypatch.setattr(clean_load, "SMALL_CHANGE_SHARE", 5)
    write(pg_engine, ACCOUNTS, [account(i, i, i) for i in range(1, 21)])
    seen: list[tuple[str, str]] = []
    decide = clean_load._decide

    def spy(conn: sa.Connection, *args: object, **kwargs: object) -> None:
        seen.append(_settings(conn))
        decide(conn, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(clean_load, "_decide", spy)
    with pg_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")
        conn.execute(sa.text("ANALYZE accounts"))
    write(pg_engine, ACCOUNTS, [account(1, 1, 30), account(2, 22, 31)])  # 2 changed of 20: 2 * 5 <= 20
    with pg_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")
        assert _settings(conn) == ("on", "on")
    write(pg_engine, ACCOUNTS, [account(i, i, 40 + i) for i in range(1, 6)])  # 5 changed: 5 * 5 > 20
    with pg_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")
    assert seen == [("off", "off"), ("on", "on")]


@pytest.mark.postgres
def test_a_small_change_gives_never_analyzed_rejections_and_history_statistics(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never analyzed, they would look empty to the planner, which would then read them whole for every probe."""
    monkeypatch.setattr(clean_load, "SMALL_CHANGE_SHARE", 0)
    tuples = sa.text(
        "SELECT relname, reltuples >= 0 FROM pg_class WHERE relname IN ('rejected_records', 'deal_history')"
    )
    with pg_engine.connect() as conn:
        assert sorted(conn.execute(tuples).all()) == [("deal_history", False), ("rejected_records", False)]
    write(pg_engine, ACCOUNTS, [account(1, 1, 1)])
    with pg_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")
        assert sorted(conn.execute(tuples).all()) == [("deal_history", True), ("rejected_records", True)]


def test_sqlite_refuses_to_drop_indexes_before_its_transaction_has_begun(sqlite_url: str) -> None:
    """SQLite's driver begins a transaction at the first write: a DROP INDEX before it would commit at once,
    and a failed load would leave the index gone."""
    engine = create_warehouse_engine(sqlite_url)
    migrate(engine)
    with pytest.raises(RuntimeError, match="needs a transaction that has written"), engine.begin() as conn:
        suspend_for_bulk_load(conn, CLEAN_TABLES["deals"])
    with engine.connect() as conn:
        assert any(name == "ix_deals_created_at" for _, name, _ in catalog(conn))
    engine.dispose()
