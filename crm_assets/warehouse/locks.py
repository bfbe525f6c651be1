"""Locks held across processes for as long as a block runs, without holding a transaction open.

PostgreSQL: a session advisory lock on a connection of its own. SQLite: an flock on a file beside the
database, since every process using an SQLite file runs on this machine; flock also excludes other
threads of the same process, each opening the file anew.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.warehouse.dialect import is_postgres, is_private_memory

log = logging.getLogger(__name__)

# Prefix of every advisory lock name, as crm_assets.warehouse.raw.lock_domain names its own.
_PG_LOCK_PREFIX = "crm_assets."
_POLL_SECONDS = 0.5  # how often a bounded wait tries the lock again


class LockBusyError(RuntimeError):
    """Another holder kept the lock for longer than the caller would wait."""


def _no_wait_notice() -> None:
    return None


@contextmanager
def sqlite_file_lock(
    engine: Engine, suffix: str, on_wait: Callable[[], None] = _no_wait_notice, wait_seconds: float | None = None
) -> Iterator[None]:
    """An exclusive flock on `<database><suffix>` until the block ends; `on_wait` is called once if it must wait,
    and LockBusyError raised if that wait passes `wait_seconds`.

    A private in-memory database has no file and no other user: nothing to lock.
    """
    if is_private_memory(engine):
        yield
        return
    with open(f"{Path(str(engine.url.database)).resolve()}{suffix}", "a") as lock_file:

        def taken() -> bool:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not taken():
            on_wait()
            if wait_seconds is None:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            else:
                _poll(taken, wait_seconds, suffix)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextmanager
def _pg_session_lock(
    engine: Engine, name: str, on_wait: Callable[[], None], wait_seconds: float | None
) -> Iterator[None]:
    key = sa.func.hashtext(f"{_PG_LOCK_PREFIX}{name}")
    with engine.connect() as conn:

        def taken() -> bool:
            if conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one():
                return True
            conn.rollback()  # not idle in a transaction between tries: the lock would be the session's anyway
            return False

        if not taken():
            on_wait()
            if wait_seconds is None:
                conn.execute(sa.select(sa.func.pg_advisory_lock(key)))
            else:
                _poll(taken, wait_seconds, name)
        conn.commit()  # the lock belongs to the session, not to this transaction
        try:
            yield
        finally:
            _pg_unlock(conn, key)


def _poll(taken: Callable[[], bool], wait_seconds: float, name: str) -> None:
    deadline = time.monotonic() + wait_seconds
    while not taken():
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockBusyError(f"the lock {name} stayed taken for {wait_seconds:g} s")
        time.sleep(min(_POLL_SECONDS, left))


def _pg_unlock(conn: sa.Connection, key: sa.ColumnElement[int]) -> None:
    try:
        conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
        conn.commit()
    except sa.exc.DBAPIError as exc:
        # A lost session holds no lock; discarding the connection closes it for sure. The block's own
        # error, if any, is the one worth raising.
        log.warning(f"could not release the advisory lock ({exc.orig}); closing its connection instead")
        conn.invalidate()


@contextmanager
def named_lock(
    engine: Engine, name: str, on_wait: Callable[[], None] = _no_wait_notice, wait_seconds: float | None = None
) -> Iterator[None]:
    """An exclusive lock called `name` in this warehouse, held until the block ends, across processes.

    PostgreSQL: the session advisory lock on hashtext('crm_assets.<name>'), on a connection held for
    the block; SQLite: the file `<database>.<name>.lock`. `on_wait` is called once when another holds it;
    with `wait_seconds`, LockBusyError is raised when it is still held that long after.
    """
    if is_postgres(engine):
        with _pg_session_lock(engine, name, on_wait, wait_seconds):
            yield
    else:
        with sqlite_file_lock(engine, f".{name}.lock", on_wait, wait_seconds):
            yield
