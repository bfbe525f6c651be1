"""Reading ahead on a second connection: everything arrives in order, bounded, and nothing is left running."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains import ACCOUNTS
from crm_assets.pipeline import clean_domain
from crm_assets.warehouse import clean_load
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.read_ahead import read_ahead
from crm_assets_tests.warehouse.test_incremental_clean import account, write


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A pool that counts its connections out and in (SQLite's in-memory pool does not)."""
    url = f"sqlite:///{tmp_path / 'read_ahead.db'}"
    engine = sa.create_engine(url, poolclass=sa.QueuePool, connect_args={"check_same_thread": False})
    yield engine
    engine.dispose()


def checked_out(engine: Engine) -> int:
    pool = engine.pool
    assert isinstance(pool, sa.QueuePool)
    return pool.checkedout()


def test_every_item_arrives_in_order_produced_on_another_connection_and_thread(engine: Engine) -> None:
    producers: set[str] = set()

    def numbers(conn: sa.Connection) -> Iterator[int]:
        producers.add(threading.current_thread().name)
        for n in range(50):
            yield conn.execute(sa.select(sa.literal(n))).scalar_one()

    assert list(read_ahead(engine, numbers)) == list(range(50))
    assert producers == {"read-ahead"}
    assert checked_out(engine) == 0


def test_the_producer_stays_at_most_depth_items_ahead(engine: Engine) -> None:
    produced: list[int] = []

    def numbers(conn: sa.Connection) -> Iterator[int]:
        for n in range(20):
            produced.append(n)
            yield n

    for taken, n in enumerate(read_ahead(engine, numbers, depth=2)):
        # Taken so far: n + 1. Queued: at most 2. One more may be made, waiting for room.
        assert len(produced) <= taken + 1 + 2 + 1, (n, produced)


def test_an_error_of_the_producer_is_raised_in_the_consumer(engine: Engine) -> None:
    def failing(conn: sa.Connection) -> Iterator[int]:
        yield 1
        raise ValueError("the raw table is gone")

    items = read_ahead(engine, failing)
    assert next(items) == 1
    with pytest.raises(ValueError, match="the raw table is gone"):
        next(items)
    assert checked_out(engine) == 0


def test_a_consumer_that_stops_early_stops_the_producer_and_frees_its_connection(engine: Engine) -> None:
    produced: list[int] = []

    def endless(conn: sa.Connection) -> Iterator[int]:
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    items = read_ahead(engine, endless)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert checked_out(engine) == 0
    assert not any(t.name == "read-ahead" for t in threading.enumerate())
    made = len(produced)
    assert made <= 3 + 2  # what was taken, the one queued and the one waiting for room; then nothing more


def test_a_clean_run_on_a_private_in_memory_database_reads_on_its_own_connection() -> None:
    """A second connection to an in-memory SQLite database would open another, empty database."""
    engine = create_warehouse_engine("sqlite://")
    migrate(engine)
    write(engine, ACCOUNTS, [account(i, i, i) for i in range(1, 4)])
    assert clean_domain(engine, ACCOUNTS, "run").inserted == 3
    engine.dispose()


def test_on_sqlite_a_clean_run_holds_the_write_lock_before_its_first_batch_is_read(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second connection reads the committed rows: no other writer may commit between the run's start
    and its first write (a write-back would be overwritten by the batch read before it)."""
    engine = create_warehouse_engine(sqlite_url)
    migrate(engine)
    write(engine, ACCOUNTS, [account(i, i, i) for i in range(1, 4)])
    other_writer: list[str] = []
    take_batch = clean_load._take_changed_batch

    def first_batch(*args: Any, **kwargs: Any) -> None:
        if not other_writer:
            attempt = sqlite3.connect(str(engine.url.database), timeout=0.1)
            try:
                attempt.execute("BEGIN IMMEDIATE")
                other_writer.append("committed")
                attempt.rollback()
            except sqlite3.OperationalError as exc:
                other_writer.append(str(exc))
            finally:
                attempt.close()
        take_batch(*args, **kwargs)

    monkeypatch.setattr(clean_load, "_take_changed_batch", first_batch)
    assert clean_domain(engine, ACCOUNTS, "run").inserted == 3
    engine.dispose()
    assert other_writer == ["database is locked"]


@pytest.mark.parametrize(("journal", "alongside"), [("wal", True), ("delete", False)])
def test_sqlite_reads_alongside_only_in_write_ahead_log_mode(sqlite_url: str, journal: str, alongside: bool) -> None:
    """In another journal mode a writer that spills its cache locks readers out until it commits: a reader
    waiting on the writer that waits on the reader would hang until the busy timeout."""
    engine = create_warehouse_engine(sqlite_url)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"PRAGMA journal_mode={journal}")
        assert clean_load._readable_alongside(conn) is alongside
    engine.dispose()


@pytest.mark.postgres
def test_a_read_ahead_waiting_behind_a_lock_fails_the_run_instead_of_hanging(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration's ACCESS EXCLUSIVE lock on the raw table waits for the run (which has read it); the reader
    queued behind it would wait for ever, and the run for the reader: PostgreSQL sees no deadlock."""
    engine = create_warehouse_engine(pg_url)
    migrate(engine)
    write(engine, ACCOUNTS, [account(i, i, i) for i in range(1, 4)])
    monkeypatch.setattr(clean_load, "READ_AHEAD_LOCK_TIMEOUT", "300ms")
    read_batches = clean_load.read_changed_batches

    def behind_a_migration(reader: sa.Connection, *args: Any) -> Iterator[Any]:
        def migration() -> None:
            with engine.connect() as other:
                other.exec_driver_sql("SET lock_timeout = '5s'")  # without the reader's timeout: ends the hang
                with contextlib.suppress(sa.exc.OperationalError):
                    other.exec_driver_sql("LOCK TABLE raw_accounts IN ACCESS EXCLUSIVE MODE")
                other.rollback()

        threading.Thread(target=migration, daemon=True).start()
        waiting = sa.text("SELECT count(*) FROM pg_locks WHERE relation = 'raw_accounts'::regclass AND NOT granted")
        with engine.connect() as probe:
            deadline = time.monotonic() + 10
            while not probe.execute(waiting).scalar() and time.monotonic() < deadline:  # until it waits for the run
                time.sleep(0.02)
        yield from read_batches(reader, *args)

    monkeypatch.setattr(clean_load, "read_changed_batches", behind_a_migration)
    # The batches are read by COPY on the driver's cursor: psycopg's own error, not SQLAlchemy's wrapper.
    with pytest.raises(psycopg.errors.LockNotAvailable, match="lock timeout"), engine.begin() as conn:
        clean_load.clean_changes(conn, ACCOUNTS, "run", ahead=True)
    engine.dispose()
