"""History benchmark on PostgreSQL (prints figures; not a test).

    python crm_assets_tests/benchmarks/bench_history.py --deals 100000 [--rounds 3] [--days 365]

1. The cost of keeping deal_history on the 1% re-sync: the demo CRM (N deals, N/10 accounts, N/2
   contacts) served over loopback HTTP, one full sync, then rounds of "1% of each entity changes, re-sync",
   alternately with the history hook switched off and on. Prints the median re-sync of each and the
   time spent in the hook itself (target: the hook adds under 20% to the re-sync).
2. A 365-day pipeline_daily backfill over N deals with 5 versions each (synthetic history written with
   COPY), as one set-based replacement and as one Dagster run over the range (per-partition metadata and
   the chart included); then the rebuild of deal_stage_transitions, and keeping it up to date after 1% of
   the deals moved stage (target: backfill under 30 s at 1M).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "100")  # before Dagster reads it

import dagster as dg
import polars as pl
import sqlalchemy as sa

from crm_assets.contracts import RANGE_END_TAG, RANGE_START_TAG
from crm_assets.demo_crm import DEMO_API_KEY
from crm_assets.domains import configured_domains
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.pipeline import clean_domain
from crm_assets.reports.pipeline import replace_pipeline
from crm_assets.reports.transitions import refresh_transitions
from crm_assets.resources import ExportDirectory, WarehouseResource
from crm_assets.warehouse import clean_load
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.schema import deal_history
from crm_assets_tests.benchmarks.bench_sync import PeakRss, demo_server, fetch_all, throwaway_database, touch
from crm_assets_tests.conftest import create_pg_database, drop_pg_database

_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
_DAY = 86_400


class HookTimer:
    """Wraps the clean step's history hook: switches it off, or times it."""

    def __init__(self) -> None:
        self.original = clean_load.record_versions
        self.enabled = True
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        started = time.perf_counter()
        try:
            return self.original(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def _resync(engine: sa.Engine, client: FreshsalesClient, base: str) -> float:
    for domain in configured_domains():
        touch(base, domain.entity, 0.01)
    started = time.perf_counter()
    fetch_all(engine, client, full=False)
    for domain in configured_domains():
        clean_domain(engine, domain, "bench")
    return time.perf_counter() - started


def resync_cost(deals: int, rounds: int) -> None:
    print(f"== 1% re-sync with and without deal_history: {deals:,} deals, {deals // 10:,} accounts ==", flush=True)
    hook = HookTimer()
    clean_load.record_versions = hook
    with throwaway_database() as url, demo_server(deals) as base:
        engine = create_warehouse_engine(url)
        migrate(engine)
        client = FreshsalesClient(base, DEMO_API_KEY, rate_limit_per_minute=0, rate_limit_per_hour=0, max_concurrency=4)
        started = time.perf_counter()
        fetch_all(engine, client, full=True)
        for domain in configured_domains():
            clean_domain(engine, domain, "bench")
        print(f"  full sync (history seeded)        {time.perf_counter() - started:8.2f} s", flush=True)
        timings: dict[bool, list[float]] = {False: [], True: []}
        hook_seconds: list[float] = []
        for _ in range(rounds):
            for enabled in (False, True):
                hook.enabled, hook.seconds = enabled, 0.0
                timings[enabled].append(_resync(engine, client, base))
                if enabled:
                    hook_seconds.append(hook.seconds)
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT count(*) FROM deal_history")).scalar_one()
        client.close()
        engine.dispose()
    clean_load.record_versions = hook.original
    off, on, spent = (statistics.median(v) for v in (timings[False], timings[True], hook_seconds))
    print(f"  re-sync, history off (median of {rounds})  {off:8.2f} s   {timings[False]}")
    print(f"  re-sync, history on  (median of {rounds})  {on:8.2f} s   {timings[True]}")
    print(f"  time in the history hook (median)  {spent:8.2f} s = {spent / off:.1%} of the re-sync (target < 20%)")
    print(f"  difference of the medians          {on - off:8.2f} s = {(on - off) / off:.1%}")
    print(f"  deal_history rows at the end       {versions:,}", flush=True)


def _copy(engine: sa.Engine, table: str, frame: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, null_value="")
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        columns = ", ".join(frame.columns)
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '')") as copy:
            copy.write(buffer.getvalue())


def _synthetic_history(engine: sa.Engine, deals: int, start: datetime) -> None:
    """N/10 accounts; per deal 5 versions over ~14 months: two in Prospecting, two in Negotiation, then
    Closed-Won, Closed-Lost, or (one deal in ten) a deletion."""
    accounts = max(deals // 10, 1)
    _copy(
        engine,
        "accounts",
        pl.DataFrame({"account_id": pl.int_range(1, accounts + 1, eager=True)}).with_columns(
            account_name=pl.lit("Account"),
            industry=pl.lit("Software"),
            account_value=pl.lit(1000),
            region=pl.col("account_id").map_elements(lambda i: ("North America", "Europe", "Asia")[i % 3], pl.String),
            crm_id=pl.col("account_id"),
            updated_at=pl.lit(start.isoformat()),
        ),
    )
    base = int(start.timestamp())
    ids = pl.int_range(0, deals, eager=True)
    first = base + (ids.hash(1) % (150 * _DAY)).cast(pl.Int64)
    columns: list[pl.DataFrame] = []
    moment = first
    for version in range(5):
        stage = ["Prospecting", "Prospecting", "Negotiation", "Negotiation", None][version]
        last = version == 4
        gap = (ids.hash(10 + version) % (60 * _DAY)).cast(pl.Int64) + 3_600
        frame = pl.DataFrame({"deal_id": ids + 1, "version": version, "valid_from": moment, "gap": gap})
        frame = frame.with_columns(
            deal_stage=pl.lit(stage)
            if stage
            else pl.when(pl.col("deal_id") % 2 == 0).then(pl.lit("Closed-Won")).otherwise(pl.lit("Closed-Lost")),
            is_deleted=pl.lit(last) & (pl.col("deal_id") % 10 == 0),
            deal_size=((pl.col("deal_id").hash(2) % 1_000_000) / 100 + version * 10).round(2),
        )
        columns.append(frame)
        moment = moment + gap
    versions = pl.concat(columns).sort("deal_id", "version")
    versions = versions.with_columns(
        valid_to=pl.col("valid_from").shift(-1).over("deal_id"),
        account_id=(pl.col("deal_id").hash(3) % accounts + 1).cast(pl.Int64),
    )

    def timestamp(column: str) -> pl.Expr:
        return pl.from_epoch(pl.col(column), time_unit="s").dt.strftime("%Y-%m-%d %H:%M:%S+00")

    _copy(
        engine,
        "deal_history",
        versions.select(
            "deal_id",
            crm_id=pl.col("deal_id"),
            valid_from=timestamp("valid_from"),
            valid_to=timestamp("valid_to"),
            deal_name=pl.lit("deal"),
            deal_size="deal_size",
            deal_stage="deal_stage",
            probability_of_closure=pl.lit("50%"),
            account_id="account_id",
            created_at=timestamp("valid_from").first().over("deal_id"),
            is_deleted="is_deleted",
            first_observed_at=pl.lit(start.strftime("%Y-%m-%d %H:%M:%S+00")),
        ),
    )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")


def _new_versions(engine: sa.Engine, share: float) -> int:
    """A new version, one stage on, for that share of the deals (as a sync would write it); how many."""
    h = deal_history.c
    every = round(1 / share)
    with engine.begin() as conn:
        closed = conn.execute(
            sa.update(deal_history)
            .where(h.valid_to.is_(None), h.deal_id % every == 0)
            .values(valid_to=h.valid_from + timedelta(days=1))
            .returning(h.id)
        ).scalars()
        ids = list(closed)
        columns = [c.name for c in deal_history.columns if c.name not in ("id", "valid_from", "valid_to")]
        moved = sa.select(
            *(sa.literal("Closed-Won").label(c) if c == "deal_stage" else h[c] for c in columns),
            (h.valid_from + timedelta(days=1)).label("valid_from"),
        ).where(h.id.in_(ids))
        conn.execute(deal_history.insert().from_select([*columns, "valid_from"], moved))
    return len(ids)


@contextmanager
def _database() -> Iterator[str]:
    url = create_pg_database("crm_assets_bench_history")
    try:
        yield url
    finally:
        drop_pg_database(url)


def _timed(label: str, action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    print(f"  {label:<52} {elapsed:8.2f} s", flush=True)
    return elapsed


def backfill(deals: int, days: int) -> None:
    from crm_assets.defs.history.assets import build_pipeline_daily_asset

    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    history_start = datetime.combine(first - timedelta(days=30), datetime.min.time(), tzinfo=UTC)
    print(f"== pipeline_daily backfill: {deals:,} deals x 5 versions, {days} days ({first} .. {last}) ==", flush=True)
    rss = PeakRss()
    with _database() as url:
        engine = create_warehouse_engine(url)
        migrate(engine)
        _timed("write the synthetic history (COPY)", lambda: _synthetic_history(engine, deals, history_start))
        end = last + timedelta(days=1)
        rss.reset()
        stats: list[Any] = []
        sql = _timed("set-based replacement, SQL only", lambda: stats.append(replace_pipeline(engine, first, end)))
        print(f"    rows written {stats[0].rows_written:,}; peak RSS {rss.peak / 2**20:.0f} MiB")
        with tempfile.TemporaryDirectory() as home, dg.instance_for_test(temp_dir=home) as instance:
            os.environ.setdefault("CRM_EXPORT_DIR", os.path.join(home, "exports"))
            rss.reset()
            tags = {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
            pipeline_daily = build_pipeline_daily_asset()

            def run() -> None:
                result = dg.materialize(
                    [pipeline_daily],
                    instance=instance,
                    resources={
                        "warehouse": WarehouseResource(url=url),
                        "exports": ExportDirectory(path=tempfile.gettempdir()),
                    },
                    run_config=_QUIET,
                    tags=tags,
                )
                assert result.success

            dagster = _timed(f"one Dagster run over {days} partitions", run)
            print(f"    peak RSS {rss.peak / 2**20:.0f} MiB (target: backfill under 30 s at 1M deals)")
        rss.reset()
        _timed("rebuild deal_stage_transitions", lambda: refresh_transitions(engine, rebuild=True))
        print(f"    peak RSS {rss.peak / 2**20:.0f} MiB")
        changed = _new_versions(engine, share=0.01)
        kept: list[Any] = []
        _timed(
            f"keep it up to date after {changed:,} deals changed stage",
            lambda: kept.append(refresh_transitions(engine)),
        )
        print(f"    deals recomputed {kept[0].deals_recomputed:,}")
        engine.dispose()
    rss.stop()
    print(f"  summary: SQL {sql:.1f} s, Dagster run {dagster:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="re-syncs with the history off, and as many on")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--skip-resync", action="store_true")
    parser.add_argument("--skip-backfill", action="store_true")
    args = parser.parse_args()
    if not args.skip_resync:
        resync_cost(args.deals, args.rounds)
    if not args.skip_backfill:
        backfill(args.deals, args.days)


if __name__ == "__main__":
    main()
