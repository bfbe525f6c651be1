"""named_lock across connections: a bounded wait gives up with LockBusyError, holds nothing afterwards, and
(PostgreSQL) does not sit idle in a transaction while it waits."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.locks import LockBusyError, named_lock


def _held_elsewhere(engine: Engine, name: str, released: threading.Event) -> threading.Thread:
    taken = threading.Event()

    def hold() -> None:
        with named_lock(engine, name):
            taken.set()
            released.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(30)
    return holder


def test_a_bounded_wait_gives_up_and_leaves_the_lock_to_its_holder(warehouse_engine: Engine) -> None:
    released = threading.Event()
    holder = _held_elsewhere(warehouse_engine, "test.bounded", released)
    waits: list[str] = []
    waiting = threading.Event()
    states: list[str] = []

    def on_wait() -> None:
        waits.append("waiting")
        waiting.set()

    def sample_states() -> None:  # the waiting connection between its tries, as pg_stat_activity shows it
        assert waiting.wait(30)
        with warehouse_engine.connect() as conn:
            for _ in range(8):
                time.sleep(0.1)
                states.extend(
                    conn.execute(
                        sa.text(
                            "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()"
                        )
                    ).scalars()
                )
                conn.rollback()

    sampler = threading.Thread(target=sample_states) if is_postgres(warehouse_engine) else None
    try:
        started = time.monotonic()
        if sampler:
            sampler.start()
        with (
            pytest.raises(LockBusyError, match=r"test\.bounded"),
            named_lock(warehouse_engine, "test.bounded", on_wait, wait_seconds=1.5),
        ):
            pytest.fail("taken while another holds it")
        assert 1.5 <= time.monotonic() - started < 10
        assert waits == ["waiting"]
        if sampler:
            sampler.join()
            assert len(states) >= 8 * 2, "the holder's and the waiter's connections, sampled"
            assert "idle in transaction" not in states, states
    finally:
        released.set()
        holder.join(30)
    with named_lock(warehouse_engine, "test.bounded", wait_seconds=1.0):  # free again: the waiter held nothing
        pass


def test_a_bounded_wait_takes_the_lock_once_it_is_released(warehouse_engine: Engine) -> None:
    released = threading.Event()
    holder = _held_elsewhere(warehouse_engine, "test.released", released)
    threading.Timer(0.5, released.set).start()
    try:
        with named_lock(warehouse_engine, "test.released", wait_seconds=20):
            assert released.is_set()
    finally:
        released.set()
        holder.join(30)
