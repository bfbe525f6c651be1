"""PostgreSQL: a small clean run's joins probe indexes from the staged side whatever the big table's statistics say.

A plain VACUUM (an operator's `vacuumdb`, or autovacuum whose ANALYZE never ran) gives rejected_records its size
but no column statistics: the planner then guesses how many rejections a domain has, and with hash joins off
(`probing_joins`) it drove the rejections' delete from that table, scanning the stage once per rejection. A
re-sync of 4,900 contacts against 31,000 of their rejections took 20 s in that one statement instead of 30 ms.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains import ACCOUNTS
from crm_assets.warehouse import clean_load
from crm_assets.warehouse.bulk import analyze_if_never_analyzed, create_stage, fill_stage, probed_in, probing_joins
from crm_assets.warehouse.clean_load import clean_changes
from crm_assets.warehouse.schema import RAW_TABLES, rejected_records
from crm_assets_tests.warehouse.test_incremental_clean import account, write

pytestmark = pytest.mark.postgres

REJECTIONS = 30_000  # of the domain whose records are re-decided, among ...
OTHER_REJECTIONS = 170_000  # ... these of another: the planner guesses 0.5% of all, 1,000, for the domain
STAGED = 5_000


def _vacuum(engine: Engine, table: sa.Table) -> None:
    """VACUUM alone, outside a transaction: the table's size is then known, its columns' values not."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM {table.name}"))


def _column_statistics(conn: sa.Connection, table: sa.Table) -> int:
    return int(
        conn.execute(sa.text("SELECT count(*) FROM pg_stats WHERE tablename = :t"), {"t": table.name}).scalar_one()
    )


def _reject_many(engine: Engine, domain: str, n: int) -> None:
    """`n` rejections with payloads of a demo record's size (their pages weigh in the planner's costs)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rejected_records (domain, crm_id, reason, problem, payload, rejected_at) "
                "SELECT :domain, g, 'account_value: not a number', 'not a number', "
                "jsonb_build_object('id', g, 'name', repeat('x', 600)), now() FROM generate_series(1, :n) g"
            ),
            {"domain": domain, "n": n},
        )


def _executed(engine: Engine, prefix: str) -> list[str]:
    """The statements starting with `prefix` that `engine` executes from now on, as they are executed."""
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith(prefix):
            statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    return statements


def _setting_at(engine: Engine, prefix: str, setting: str) -> list[str]:
    """The value of `setting` in force at each statement starting with `prefix` that `engine` executes from now on."""
    values: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith(prefix):
            values.append(cursor.connection.execute(f"SELECT current_setting('{setting}')").fetchone()[0])

    sa.event.listen(engine, "before_cursor_execute", seen)
    return values


def _plan(conn: sa.Connection, statement: sa.Delete) -> str:
    compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
    return "\n".join(conn.execute(sa.text(f"EXPLAIN {compiled}")).scalars())


def test_a_table_vacuumed_but_never_analyzed_is_analyzed(pg_engine: Engine) -> None:
    _reject_many(pg_engine, "accounts", 1_000)
    _vacuum(pg_engine, rejected_records)
    with pg_engine.begin() as conn:
        size = sa.text("SELECT reltuples FROM pg_class WHERE relname = 'rejected_records'")
        assert conn.execute(size).scalar_one() > 0
        assert _column_statistics(conn, rejected_records) == 0
        analyze_if_never_analyzed(conn, rejected_records)
        assert _column_statistics(conn, rejected_records) > 0


def test_a_table_with_statistics_is_not_analyzed_again(pg_engine: Engine) -> None:
    _reject_many(pg_engine, "accounts", 1_000)
    with pg_engine.begin() as conn:
        conn.execute(sa.text("ANALYZE rejected_records"))
    analyzed = _executed(pg_engine, "ANALYZE")
    with pg_engine.begin() as conn:
        analyze_if_never_analyzed(conn, rejected_records)
    assert not analyzed, analyzed


def test_staged_ids_are_probed_however_the_big_table_is_misjudged(pg_engine: Engine) -> None:
    """The hazard, then the cure: with no column statistics, `IN (stage)` plans a scan of the stage per
    rejection (a join filter); `probed_in` an index condition on the staged values."""
    _reject_many(pg_engine, "contacts", REJECTIONS)
    _reject_many(pg_engine, "deals", OTHER_REJECTIONS)
    _vacuum(pg_engine, rejected_records)
    with pg_engine.begin() as conn, probing_joins(conn):
        stage = create_stage(conn, RAW_TABLES["contacts"], ["crm_id"])
        fill_stage(conn, stage, pl.DataFrame({"crm_id": range(1, 2 * STAGED, 2)}))
        staged = sa.select(stage.c.crm_id)
        mine = rejected_records.c.domain == "contacts"
        scanned = _plan(conn, sa.delete(rejected_records).where(mine, rejected_records.c.crm_id.in_(staged)))
        probed = _plan(
            conn, sa.delete(rejected_records).where(mine, probed_in(conn, rejected_records.c.crm_id, staged))
        )
    assert "Join Filter" in scanned, f"the planner no longer misjudges this case; the test shows nothing:\n{scanned}"
    assert "Join Filter" not in probed and "Materialize" not in probed, probed
    assert "crm_id = ANY" in probed and "ix_rejected_records_domain_crm_id" in probed, probed


def test_a_small_clean_run_drops_rejections_by_probes(pg_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring: a re-sync small against the table deletes its rejections through `probed_in`; a first load
    (not small) through the plain IN, which a hash join serves best at any size."""
    write(
        pg_engine, ACCOUNTS, [account(i, i, i, cf_account_value="n/a" if i % 10 == 0 else "5") for i in range(1, 201)]
    )
    statements = _executed(pg_engine, "DELETE FROM rejected_records")
    with pg_engine.begin() as conn:
        clean_changes(conn, ACCOUNTS, "run")
        conn.execute(sa.text("ANALYZE accounts"))
    assert statements and not [s for s in statements if "ANY (array(" in s], statements
    monkeypatch.setattr(clean_load, "SMALL_CHANGE_SHARE", 10)
    write(pg_engine, ACCOUNTS, [account(i, i, 100 + i, cf_account_value="n/a") for i in (3, 4)])
    statements.clear()  # the raw merge's own deletes of quarantined records are not the clean run's
    with pg_engine.begin() as conn:
        changes = clean_changes(conn, ACCOUNTS, "run")
    assert statements and all("ANY (array(" in s for s in statements), statements
    assert changes.rejected == 22  # 20 from the first load, and the two changed to a bad value


BAD_RECORDS = {"one in ten": range(10, 201, 10), "all": range(1, 201), "the first fifth, together": range(1, 41)}


@pytest.mark.parametrize(
    ("bad", "merge_join"), [("one in ten", "off"), ("all", "on"), ("the first fifth, together", "on")]
)
def test_few_rejections_take_their_payloads_by_probes(pg_engine: Engine, bad: str, merge_join: str) -> None:
    """Rejections few against the raw rows of their id range look their payloads up by id (merge and hash
    joins off); when most records of the range are rejected, a join reads the range once."""
    bad_ids = set(BAD_RECORDS[bad])
    records = [account(i, i, i, cf_account_value="n/a" if i in bad_ids else "5") for i in range(1, 201)]
    write(pg_engine, ACCOUNTS, records)
    with pg_engine.begin() as conn:
        conn.execute(sa.text("ANALYZE raw_accounts"))  # its size, which a bulk write of this few rows leaves unknown
    merge_joins = _setting_at(pg_engine, "INSERT INTO rejected_records", "enable_mergejoin")
    with pg_engine.begin() as conn:
        changes = clean_changes(conn, ACCOUNTS, "run")
        with_payload = sa.select(sa.func.count()).where(rejected_records.c.payload["name"].is_not(None))
        payloads = conn.execute(with_payload).scalar_one()
    assert merge_joins == [merge_join]
    assert changes.rejected == payloads == len(bad_ids)
