"""The local Dagster instance a home without dagster.yaml gets: its config file, and the pooled event log
(same files as Dagster's own SQLite storage, engines kept per file, bounded, released)."""

import logging
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.event_api import EventLogRecord
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sql import check_alembic_revision, get_alembic_config
from dagster._serdes import deserialize_value

from crm_assets import settings
from crm_assets.defs import local_storage
from crm_assets.defs.instance import EARLIER_LOCAL_INSTANCE_CONFIG, LOCAL_INSTANCE_CONFIG, dagster_home
from crm_assets.defs.local_storage import PooledSqliteEventLogStorage
from crm_assets_tests.conftest import instance_at, local_and_plain_homes


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b", "c"]))
def lettered() -> dg.MaterializeResult[None]:
    return dg.MaterializeResult(metadata={"rows": 1})


def _materialize_every_partition(instance: dg.DagsterInstance) -> None:
    for key in ("a", "b", "c"):
        assert dg.materialize([lettered], instance=instance, partition_key=key).success


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(settings.DAGSTER_HOME, str(tmp_path / "home"))
    return dagster_home()


def test_a_new_home_gets_the_pooled_event_log(home: Path) -> None:
    assert (home / "dagster.yaml").read_text() == LOCAL_INSTANCE_CONFIG
    with instance_at(home) as instance:
        assert type(instance.event_log_storage) is PooledSqliteEventLogStorage
        _materialize_every_partition(instance)
        assert instance.get_materialized_partitions(lettered.key) == {"a", "b", "c"}


def test_dagsters_own_sqlite_storage_reads_what_the_pooled_one_wrote(home: Path) -> None:
    with instance_at(home) as instance:
        _materialize_every_partition(instance)
        run_ids = {run.run_id for run in instance.get_runs()}
    (home / "dagster.yaml").write_text(EARLIER_LOCAL_INSTANCE_CONFIG)  # the same folder, Dagster's default storage
    with instance_at(home) as instance:
        assert type(instance.event_log_storage) is SqliteEventLogStorage
        assert {run.run_id for run in instance.get_runs()} == run_ids
        assert instance.get_materialized_partitions(lettered.key) == {"a", "b", "c"}
        for run_id in run_ids:
            assert instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)


def test_engines_are_kept_per_file_bounded_and_released(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_storage, "ENGINES_KEPT", 2)
    with instance_at(home) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        _materialize_every_partition(instance)  # three run files and the index file
        kept = list(storage._engines.values())
        assert len(kept) == 2
        newest_run = instance.get_runs(limit=1)[0].run_id
        assert storage.get_logs_for_run(newest_run)  # read back through a kept or a new engine
        storage.wipe()  # deletes the run files: none of their engines may outlive them
        assert set(storage._engines) <= {"index"}
        assert instance.get_materialized_partitions(lettered.key) == set()
        _materialize_every_partition(instance)  # usable after a wipe
    assert not storage._engines, "disposed with the instance"


def test_an_earlier_generated_config_is_upgraded_and_a_users_own_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv(settings.DAGSTER_HOME, str(home))
    config = home / "dagster.yaml"

    config.write_text(EARLIER_LOCAL_INSTANCE_CONFIG)
    dagster_home()
    assert config.read_text() == LOCAL_INSTANCE_CONFIG

    own = LOCAL_INSTANCE_CONFIG + "run_monitoring:\n  enabled: true\n"
    config.write_text(own)
    dagster_home()
    assert config.read_text() == own


def test_a_copied_home_keeps_its_events_in_its_own_folder(home: Path, tmp_path: Path) -> None:
    with instance_at(home) as instance:
        _materialize_every_partition(instance)
    copy = tmp_path / "a copy, with spaces and ü"
    shutil.copytree(home, copy)
    with instance_at(copy) as instance:  # as `dg dev` opens it: DAGSTER_HOME names the copy
        assert dg.materialize([lettered], instance=instance, partition_key="a").success
        assert len(instance.get_runs()) == 4
    with instance_at(home) as instance:
        assert len(instance.get_runs()) == 3, "the original is left as it was"
        assert len(instance.fetch_materializations(lettered.key, limit=10).records) == 3


def _schema(database: Path) -> tuple[list[tuple[str, str]], str, str]:
    with sqlite3.connect(database) as conn:
        ddl = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
    return ddl, revision, journal


def test_a_new_run_file_is_created_as_dagster_creates_it(tmp_path: Path) -> None:
    ours, dagsters = (
        PooledSqliteEventLogStorage(str(tmp_path / "ours")),
        SqliteEventLogStorage(str(tmp_path / "dagster")),
    )
    for storage in (ours, dagsters):
        with storage.run_connection("a-run") as conn:
            conn.execute(sa.text("SELECT 1"))
    created = _schema(tmp_path / "ours" / "a-run.db")
    assert created == _schema(tmp_path / "dagster" / "a-run.db")
    assert created[2] == "wal"
    with dagsters.run_connection("a-run") as conn:  # Dagster finds it at its newest revision
        assert check_alembic_revision(get_alembic_config(sqlite_event_log.__file__), conn)[0] == created[1]
    ours.dispose()


@dg.asset(
    partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-03-01"),
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult[None]:
    for key in context.partition_keys:
        context.add_asset_metadata({"day": key}, partition_key=key)
    return dg.MaterializeResult()


def _one_run_over_every_day(instance: dg.DagsterInstance) -> list[Any]:
    """One run materializing the 59 days; what the instance then knows of them."""
    tags = {"dagster/asset_partition_range_start": "2026-01-01", "dagster/asset_partition_range_end": "2026-02-28"}
    assert dg.materialize([daily], instance=instance, tags=tags).success
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=daily.key), limit=100).records
    latest = instance.get_latest_materialization_event(daily.key)
    return [
        sorted(instance.get_materialized_partitions(daily.key)),
        sorted((r.partition_key, r.asset_materialization.metadata["day"].value) for r in records),  # type: ignore[union-attr]
        latest.dagster_event.partition if latest and latest.dagster_event else None,
        instance.get_asset_records([daily.key])[0].asset_entry.last_materialization_record.partition_key,  # type: ignore[union-attr]
        len(
            instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=daily.key, asset_partitions=["2026-02-01"]), limit=10
            ).records
        ),
    ]


def test_a_batch_of_materializations_is_stored_as_dagster_stores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batched write (one transaction per file) leaves what Dagster's own storage, event by event, leaves."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "25")
    pooled_home, plain_home = local_and_plain_homes(tmp_path)
    seen = {}
    for home in (pooled_home, plain_home):
        with instance_at(home) as instance:
            seen[home] = [*_one_run_over_every_day(instance), _stored(home)]
    assert seen[pooled_home] == seen[plain_home]
    assert len(seen[pooled_home][0]) == 59 and seen[pooled_home][2] == "2026-02-28"


def _stored(home: Path) -> list[Any]:
    """What the event files hold, without ids, run ids and times: events by kind and partition, the asset's
    row (its latest materialization's partition), the asset event tags by key."""
    runs = home / "history" / "runs"
    with sqlite3.connect(runs / "index.db") as index:
        events = Counter(index.execute("SELECT dagster_event_type, partition FROM event_logs").fetchall())
        (latest,) = index.execute("SELECT last_materialization FROM asset_keys").fetchone()
        tags = Counter(key for (key,) in index.execute("SELECT key FROM asset_event_tags"))
    (run_file,) = (f for f in runs.glob("*.db") if f.name != "index.db")
    with sqlite3.connect(run_file) as run:
        run_events = Counter(kind for (kind,) in run.execute("SELECT dagster_event_type FROM event_logs"))
    latest_partition = deserialize_value(latest, EventLogRecord).event_log_entry.get_dagster_event().partition
    return [events, latest_partition, tags, run_events]


def _message(run_id: str, text: str) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level=logging.INFO,
        user_message=text,
        run_id=run_id,
        timestamp=time.time(),
        step_key=None,
        job_name="a_job",
        dagster_event=None,
    )


@pytest.mark.parametrize("reader_kind", [PooledSqliteEventLogStorage, SqliteEventLogStorage])
@pytest.mark.parametrize("writer_kind", [PooledSqliteEventLogStorage, SqliteEventLogStorage])
def test_a_watched_run_sees_each_event_as_it_is_stored(
    tmp_path: Path, writer_kind: type[SqliteEventLogStorage], reader_kind: type[SqliteEventLogStorage]
) -> None:
    """The UI's live run log: Dagster's watch wakes on writes to the run's file, which a connection kept
    open would leave in the write-ahead log until the run's end."""
    writer, reader = writer_kind(str(tmp_path)), reader_kind(str(tmp_path))
    writer.store_event(_message("a-run", "first"))
    assert len(reader.get_records_for_run("a-run").records) == 1  # as the UI reads a run before watching it
    seen: list[str] = []
    reader.watch("a-run", None, lambda entry, _cursor: seen.append(entry.user_message))
    for i in range(5):
        writer.store_event(_message("a-run", f"event {i}"))
        deadline = time.monotonic() + 5
        while f"event {i}" not in seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert f"event {i}" in seen, f"not seen while the run goes on: {seen}"
    writer.dispose()
    reader.dispose()
