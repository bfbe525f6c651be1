"""Reading ahead on a second connection: everything arrives in order, bounded, and nothing is left running."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains import ACCOUNTS
from crm_assets.pipeline import clean_domain
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
