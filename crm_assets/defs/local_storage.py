"""The local Dagster instance's event log: Dagster's SQLite event log with its index file kept open and a
step's partition events written in one transaction per file.

Dagster's SQLite event log creates an engine, opens the file and disposes of both for every event it
stores (one file per run, plus an index file every asset event is copied to), two commits an event. A run
writes an event per partition it materializes, so on the local instance storing events was most of the
work: rebuilding every aggregation partition took 31 s; 11 s with engines kept and batches (100k deals).
Batches (DAGSTER_EVENT_BATCH_SIZE, which `crm-assets run` sets) write a step's partitions together, as
Dagster's PostgreSQL storage does. The files and their schema are Dagster's own: a plain SQLite instance
on the same folder reads them.

A run's file is still opened and closed for each use, as Dagster does: the last connection to close
copies the write-ahead log into the file, and Dagster's watch (the UI's live run log) wakes on that write.
A connection kept open would leave the events in the log, unseen until the run ends.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from dagster._config import StringSource
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.sql import get_alembic_config
from dagster._serdes import ConfigurableClassData
from sqlalchemy.pool import NullPool

# Where Dagster's default SQLite storage keeps the event log under $DAGSTER_HOME.
EVENT_LOG_FOLDER = Path("history", "runs")
# Engines kept: the index file's and the few newest runs' (a command writes one run at a time).
ENGINES_KEPT = 8


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """SQLite event log storage that keeps an engine per recently used file (the index file's connection
    open) instead of one per event, and writes a batch of partition events at once."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, sa.Engine] = OrderedDict()  # before super(): it may connect
        super().__init__(base_dir, inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"dagster_home": StringSource}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, str]
    ) -> PooledSqliteEventLogStorage:
        return cls(str(Path(config_value["dagster_home"]) / EVENT_LOG_FOLDER), inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[sa.Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A step's materializations (or observations) of its partitions, one transaction per file instead
        of two per event. Batches come from one output of one run (DAGSTER_EVENT_BATCH_SIZE); any other
        batch is stored event by event."""
        if not _one_kind_of_one_run(events):
            super().store_event_batch(events)
            return
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(self.prepare_insert_event_batch(events))
        with self.index_transaction() as conn:
            ids = [_inserted_id(conn.execute(self.prepare_insert_event(event))) for event in events]
            self._store_asset_event_tags(conn, events, ids)
            # The asset's row records its latest event only (as Dagster's PostgreSQL storage does).
            self._store_asset_event(conn, events[-1], ids[-1])

    def _initdb(self, engine: sa.Engine, for_index_shard: bool = False) -> None:
        """A new run's file is created as Dagster creates it, without reading its migration scripts twice
        (50 ms of every run); anything else, or a race with another process, takes Dagster's own path."""
        database = engine.url.database
        if for_index_shard or database is None or Path(database).exists():
            super()._initdb(engine, for_index_shard)
            return
        try:
            with engine.connect() as conn:
                SqlEventLogStorageMetadata.create_all(conn)
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                _ALEMBIC_VERSION.create(conn, checkfirst=True)
                conn.execute(_ALEMBIC_VERSION.insert().values(version_num=_event_log_head()))
                conn.commit()
        except (sa.exc.DatabaseError, sqlite3.DatabaseError):
            super()._initdb(engine, for_index_shard)

    def _engine(self, shard: str) -> sa.Engine:
        """The shard's engine, newly used; the least recently used one is disposed beyond ENGINES_KEPT."""
        engine = self._engines.pop(shard, None)
        if engine is None:
            # Initializing a new file inspects it on a second connection while the first is open. A run's
            # file is connected to afresh each time (module docstring).
            pooling: dict[str, Any] = (
                {"pool_size": 1, "max_overflow": 1} if shard == INDEX_SHARD_NAME else {"poolclass": NullPool}
            )
            engine = sa.create_engine(
                self.conn_string_for_shard(shard),
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                **pooling,
            )
        self._engines[shard] = engine
        while len(self._engines) > ENGINES_KEPT:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    def _dispose_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._dispose_engines()  # no connection may outlive the files wipe deletes
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._dispose_engines()


_BATCHED_KINDS = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION}


def _one_kind_of_one_run(events: Sequence[EventLogEntry]) -> bool:
    """Whether a batch holds asset events of one kind (materializations or observations) of one run."""
    if not events or not all(event.is_dagster_event for event in events):
        return False
    kinds = {event.get_dagster_event().event_type for event in events}
    return len(kinds) == 1 and kinds <= _BATCHED_KINDS and len({event.run_id for event in events}) == 1


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RuntimeError("SQLite returned no id for a stored event")
    return int(key[0])


# As alembic defines it when it stamps a database.
_ALEMBIC_VERSION = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


@cache
def _event_log_head() -> str:
    """The newest revision of Dagster's SQLite event log schema (what stamping "head" writes)."""
    script = ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))
    return str(script.as_revision_number("head"))
