"""How stale windows are batched into runs: by what a run costs where it executes."""

from __future__ import annotations

import tempfile
from datetime import date

import dagster as dg
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster_postgres import PostgresEventLogStorage

from crm_assets.defs.reports.refresh import (
    IN_PROCESS_RUN_COST_IN_WINDOWS,
    MERGE_GAP,
    in_process_merge_gap,
    merged_runs,
    stores_events_in_batches,
)
from crm_assets.reports.windows import Cadence

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


def test_the_local_instance_stores_events_one_by_one_so_runs_join_less() -> None:
    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(home) as instance:
        gaps = in_process_merge_gap(instance)
    assert set(gaps.values()) == {IN_PROCESS_RUN_COST_IN_WINDOWS["one_by_one"]}
    assert IN_PROCESS_RUN_COST_IN_WINDOWS["batched"] > IN_PROCESS_RUN_COST_IN_WINDOWS["one_by_one"]


def test_postgresql_event_storage_writes_batches_and_sqlite_does_not() -> None:
    assert stores_events_in_batches(PostgresEventLogStorage)
    assert not stores_events_in_batches(SqliteEventLogStorage)
