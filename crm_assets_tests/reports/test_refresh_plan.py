"""How stale windows are batched into runs: by what a run costs where it executes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster_postgres import PostgresEventLogStorage

from crm_assets.defs.local_storage import PooledSqliteEventLogStorage
from crm_assets.defs.reports.refresh import (
    IN_PROCESS_RUN_COST_IN_WINDOWS,
    MERGE_GAP,
    in_process_merge_gap,
    merged_runs,
    stores_events_in_batches,
)
from crm_assets.reports.windows import Cadence
from crm_assets_tests.conftest import instance_at, local_and_plain_homes

DAYS = [date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 20), date(2025, 6, 1), date(2026, 9, 1)]


def test_contiguous_windows_share_a_run_and_gaps_join_up_to_the_merge_gap() -> None:
    gap_of = dict.fromkeys(Cadence, 20)
    assert merged_runs(DAYS, Cadence.DAILY, gap_of) == [
        (date(2025, 1, 1), date(2025, 1, 20)),  # 17 days between: cheaper than a run
        (date(2025, 6, 1), date(2025, 6, 1)),
        (date(2026, 9, 1), date(2026, 9, 1)),
    ]
    # The daemon's runs are new processes: a year's windows cost less than one more.
    assert merged_runs(DAYS, Cadence.DAILY) == [
        (date(2025, 1, 1), date(2025, 6, 1)),
        (date(2026, 9, 1), date(2026, 9, 1)),
    ]
    assert (
        MERGE_GAP[Cadence.DAILY]
        > IN_PROCESS_RUN_COST_IN_WINDOWS["batched"]
        > IN_PROCESS_RUN_COST_IN_WINDOWS["one_by_one"]
    )


def test_runs_join_more_where_the_instance_stores_events_in_batches(tmp_path: Path) -> None:
    """The local instance crm-assets creates batches them; Dagster's default SQLite storage opens a file per event."""
    local, plain = local_and_plain_homes(tmp_path)
    gaps = {}
    for home in (local, plain):
        with instance_at(str(home)) as instance:
            gaps[home] = set(in_process_merge_gap(instance).values())
    assert gaps[local] == {IN_PROCESS_RUN_COST_IN_WINDOWS["batched"]}
    assert gaps[plain] == {IN_PROCESS_RUN_COST_IN_WINDOWS["one_by_one"]}


def test_postgresql_and_the_local_instance_write_batches_and_dagsters_sqlite_does_not() -> None:
    assert stores_events_in_batches(PostgresEventLogStorage)
    assert stores_events_in_batches(PooledSqliteEventLogStorage)
    assert not stores_events_in_batches(SqliteEventLogStorage)
