"""Which aggregation partitions to recompute after `deals` changed: one plan for the sensor and `crm-assets run`.

A partition is refreshed when a `deals` materialization touched one of its dates and its stored rows no
longer match `deals` (a renamed deal touches its date but changes no total), or when the caller asks
for it outright (partitions never materialized, a rebuild). Windows are batched into contiguous ranges,
each one run of that cadence's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.event_log import EventLogStorage

from crm_assets.contracts import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG, TOUCHED_DATES
from crm_assets.defs.reports.assets import asset_key
from crm_assets.defs.reports.jobs import REPORT_JOBS
from crm_assets.defs.reports.partitions import report_partitions
from crm_assets.reports.reconcile import mismatches_with_deals
from crm_assets.reports.windows import Cadence, contiguous_runs, next_window, utc_day, windows_touched

DEALS_KEY = dg.AssetKey("deals")
# Stale windows of a cadence share a run when the windows between them cost less to recompute on the way
# than one more run. A window inside a range costs a few milliseconds of SQL and one materialization
# event; a run costs far more, and how much depends on who runs it:
# - a run the daemon launches for the sensor is a new process that loads the code (seconds): windows up
#   to about a year apart share a run, so a typical refresh is one run per cadence;
MERGE_GAP = {Cadence.DAILY: 366, Cadence.WEEKLY: 53, Cadence.MONTHLY: 12}
# - a run `crm-assets run` executes in its own process costs as much as a few dozen windows, depending on
#   how the instance stores events (bench_reports.py, 100k deals): in batches, as PostgreSQL and the local
#   instance crm-assets creates do (0.17-0.30 s a run, 2-4 ms a window), or one by one, as Dagster's default
#   SQLite storage does, opening its file for each (0.21 s a run, 7.5 ms a window).
IN_PROCESS_RUN_COST_IN_WINDOWS = {"batched": 80, "one_by_one": 20}


def stores_events_in_batches(storage: type[EventLogStorage]) -> bool:
    """Whether an event log storage writes a batch of events at once (the base class writes them one by one)."""
    return storage.store_event_batch is not EventLogStorage.store_event_batch


def in_process_merge_gap(instance: dg.DagsterInstance) -> Mapping[Cadence, int]:
    """The merge gap for runs executed in this process on `instance`."""
    batched = stores_events_in_batches(type(instance.event_log_storage))
    return dict.fromkeys(Cadence, IN_PROCESS_RUN_COST_IN_WINDOWS["batched" if batched else "one_by_one"])


@dataclass(frozen=True)
class RefreshRun:
    """One run of a cadence's job over the windows [first, last] (window starts, inclusive)."""

    cadence: Cadence
    first: date
    last: date

    @property
    def job_name(self) -> str:
        return REPORT_JOBS[self.cadence].name

    @property
    def tags(self) -> dict[str, str]:
        if self.first == self.last:
            return {PARTITION_TAG: self.first.isoformat()}
        return {RANGE_START_TAG: self.first.isoformat(), RANGE_END_TAG: self.last.isoformat()}

    def describe(self) -> str:
        span = str(self.first) if self.first == self.last else f"{self.first} .. {self.last}"
        return f"{self.cadence.value} {span}"

    def run_request(self, cursor_id: int) -> dg.RunRequest:
        run_key = f"{self.cadence.value}:{self.first}:{self.last}:{cursor_id}"
        if self.first == self.last:
            return dg.RunRequest(run_key=run_key, job_name=self.job_name, partition_key=self.first.isoformat())
        return dg.RunRequest(run_key=run_key, job_name=self.job_name, tags=self.tags)


@dataclass(frozen=True)
class DealChanges:
    """The `deals` materializations after a cursor: how many, the dates they touched, the newest id."""

    materializations: int
    dates: frozenset[date]
    cursor_id: int | None


def touched_dates(metadata: Mapping[str, Any], log: Any = None) -> set[date]:
    """The UTC dates listed by one `deals` materialization (bad entries are logged and skipped)."""
    entry = metadata.get(TOUCHED_DATES)
    values = entry.value if isinstance(entry, dg.MetadataValue) else entry
    dates: set[date] = set()
    for value in values if isinstance(values, list) else []:
        try:
            dates.add(date.fromisoformat(str(value)))
        except ValueError:
            if log is not None:
                log.warning(f"ignoring touched date {value!r}: not YYYY-MM-DD")
    return dates


def latest_deals_event_id(instance: dg.DagsterInstance) -> int | None:
    """Storage id of the newest `deals` materialization, None when there is none."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=DEALS_KEY), limit=1).records
    return records[0].storage_id if records else None


def start_after_newest_deals(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """A deals-driven sensor's first tick: start after the newest `deals` materialization.

    Whatever ran before the sensor first ticked (`crm-assets run` included) refreshed what depends on it:
    replaying that history would only recompute the same partitions.
    """
    newest = latest_deals_event_id(context.instance)
    if newest is None:
        return dg.SkipReason("no materialization of deals yet")
    context.update_cursor(str(newest))
    return dg.SkipReason(f"starting after the newest deals materialization (storage id {newest})")


def deal_changes_after(
    instance: dg.DagsterInstance, after: int | None, limit: int | None = None, log: Any = None
) -> DealChanges:
    """The touched dates of the `deals` materializations after storage id `after`, oldest first."""
    dates: set[date] = set()
    count, cursor, newest = 0, after, after
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=DEALS_KEY, after_storage_id=cursor),
            limit=min(limit - count, 500) if limit else 500,
            ascending=True,
        )
        for record in page.records:
            if record.asset_materialization is not None:
                dates |= touched_dates(record.asset_materialization.metadata, log)
            newest = record.storage_id
        count += len(page.records)
        cursor = newest
        if not page.has_more or not page.records or (limit and count >= limit):
            return DealChanges(count, frozenset(dates), newest)


def existing_windows(cadence: Cadence, windows: Iterable[date]) -> list[date]:
    """Windows that are partitions now: not before the start date, not the still-open current window."""
    partitions = report_partitions()[cadence]
    last_key = partitions.get_last_partition_key()
    if last_key is None:
        return []
    first, last = utc_day(partitions.start), date.fromisoformat(last_key)
    return sorted({w for w in windows if first <= w <= last})


def all_windows(cadence: Cadence) -> list[date]:
    return [date.fromisoformat(k) for k in report_partitions()[cadence].get_partition_keys()]


def unmaterialized_windows(instance: dg.DagsterInstance, cadence: Cadence) -> list[date]:
    """Partitions of a cadence that this Dagster instance has never materialized."""
    done = instance.get_materialized_partitions(asset_key(cadence))
    return [w for w in all_windows(cadence) if w.isoformat() not in done]


def stale_windows(conn: sa.Connection, cadence: Cadence, candidates: Sequence[date]) -> set[date]:
    """The candidate windows whose stored rows differ from what `deals` gives now."""
    if not candidates:
        return set()
    wanted = set(candidates)
    return {m.window for m in mismatches_with_deals(conn, cadence) if m.window in wanted}


def plan_refresh(
    conn: sa.Connection,
    touched: Iterable[date],
    forced: Mapping[Cadence, Iterable[date]] | None = None,
    merge_gap: Mapping[Cadence, int] = MERGE_GAP,
) -> list[RefreshRun]:
    """The runs that bring every cadence up to date with `deals` after the touched dates changed.

    `forced` windows (e.g. never materialized) are refreshed whether their rows differ or not; stale
    windows at most `merge_gap` windows apart share a run.
    """
    touched = set(touched)
    runs: list[RefreshRun] = []
    for cadence in Cadence:
        candidates = existing_windows(cadence, windows_touched(touched, cadence))
        windows = stale_windows(conn, cadence, candidates)
        windows |= set(existing_windows(cadence, (forced or {}).get(cadence, ())))
        runs += [RefreshRun(cadence, first, last) for first, last in merged_runs(sorted(windows), cadence, merge_gap)]
    return runs


def merged_runs(
    windows: Sequence[date], cadence: Cadence, merge_gap: Mapping[Cadence, int] = MERGE_GAP
) -> list[tuple[date, date]]:
    """Contiguous runs of windows, with runs at most `merge_gap` windows apart joined into one."""
    runs: list[tuple[date, date]] = []
    for first, last in contiguous_runs(windows, cadence):
        if runs and _windows_between(runs[-1][1], first, cadence) <= merge_gap[cadence]:
            runs[-1] = (runs[-1][0], last)
        else:
            runs.append((first, last))
    return runs


def _windows_between(last: date, first: date, cadence: Cadence) -> int:
    """How many windows lie strictly between the window starting `last` and the one starting `first`."""
    count, window = 0, next_window(last, cadence)
    while window < first:
        count, window = count + 1, next_window(window, cadence)
    return count
