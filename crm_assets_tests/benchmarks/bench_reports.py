"""Benchmark of the reporting layer on PostgreSQL or SQLite (prints figures; not a test).

    .venv/bin/python crm_assets_tests/benchmarks/bench_reports.py [--deals 1000000] [--accounts 2000]
        [--days 1096] [--sample 10] [--db postgres|sqlite] [--instance local|dagster-sqlite|postgres]

On a throwaway database: N deals over the last `--days` days, then
  1. the set-based replacement alone (SQL, no Dagster),
  2. a single-run backfill of every daily partition through Dagster (range tags, one run),
  3. weekly and monthly single-run backfills of the same span,
  4. one daily partition,
  5. one run per daily partition on a sample, extrapolated to the whole range.
The Dagster instance is a temporary local one as `crm-assets` commands create it (SQLite, its event log
writing batches; `--instance dagster-sqlite`: Dagster's default SQLite storage), or with `--instance postgres` the
production instance of the repository's dagster.yaml on a throwaway PostgreSQL database; either way
with DAGSTER_EVENT_BATCH_SIZE=100 and DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true (as the Docker
image sets them) unless the environment sets them.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "100")  # before Dagster reads it
# As the Docker image sets it: a single-run backfill's planned partitions in one event, not one each.
os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")

import dagster as dg
import polars as pl
import sqlalchemy as sa

from crm_assets.contracts import RANGE_END_TAG, RANGE_START_TAG
from crm_assets.defs.instance import LOCAL_INSTANCE_CONFIG
from crm_assets.defs.reports.assets import report_assets
from crm_assets.reports.aggregate import replace_aggregations
from crm_assets.reports.windows import Cadence, window_start
from crm_assets.resources import ExportDirectory, WarehouseResource
from crm_assets.warehouse.bulk import fill_stage
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.schema import CLEAN_TABLES
from crm_assets_tests.conftest import create_pg_database, drop_pg_database, instance_at

REPOSITORY_INSTANCE = Path(__file__).resolve().parents[2] / "dagster.yaml"

_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _load(engine: sa.Engine, deals: int, accounts: int, first: date, days: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    account_rows = pl.DataFrame(
        {
            "account_id": range(1, accounts + 1),
            "account_name": [f"Account {i}" for i in range(1, accounts + 1)],
            "industry": "Software",
            "account_value": 1000,
            "region": [("North America", "Europe", "Asia")[i % 3] for i in range(accounts)],
            "crm_id": range(1, accounts + 1),
            "updated_at": now,
        }
    )
    base = int(datetime.combine(first, datetime.min.time(), tzinfo=UTC).timestamp())
    seed = pl.int_range(0, deals, eager=True)
    deal_rows = pl.DataFrame({"deal_id": seed + 1}).with_columns(
        deal_name=pl.lit("deal"),
        deal_size=(seed.hash(1) % 10_000_000).cast(pl.Float64) / 100,
        probability_of_closure=pl.lit("50%"),
        deal_stage=pl.lit("Prospecting"),
        account_id=(seed.hash(2) % accounts + 1).cast(pl.Int64),
        created_at=pl.from_epoch(
            base + (seed.hash(3) % (days * 86_400)).cast(pl.Int64), time_unit="s"
        ).dt.replace_time_zone("UTC"),
        crm_id=seed + 1,
        updated_at=pl.lit(now),
    )
    with engine.begin() as conn:  # COPY on PostgreSQL, executemany on SQLite: the warehouse's own bulk path
        fill_stage(conn, CLEAN_TABLES["accounts"], account_rows)
        fill_stage(conn, CLEAN_TABLES["deals"], deal_rows)
    if engine.dialect.name == "postgresql":  # SQLite keeps no statistics unless asked: measure it as users run it
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")


@contextmanager
def _throwaway_database(db: str) -> Iterator[str]:
    if db == "sqlite":
        with tempfile.TemporaryDirectory(prefix="crm_bench_reports_") as folder:
            yield f"sqlite:///{Path(folder) / 'warehouse.db'}"
        return
    url = create_pg_database("crm_assets_bench")
    try:
        yield url
    finally:
        drop_pg_database(url)


@contextmanager
def production_instance_home(home: Path) -> Iterator[dict[str, str]]:
    """The repository's dagster.yaml in `home`, on a throwaway PostgreSQL database; yields the DAGSTER_PG_*
    variables it reads (set them in the environment of whatever opens the instance)."""
    storage = sa.make_url(create_pg_database("crm_assets_bench_dagster"))
    shutil.copy(REPOSITORY_INSTANCE, home / "dagster.yaml")
    try:
        yield {
            "DAGSTER_PG_HOST": storage.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(storage.port or 5432),
            "DAGSTER_PG_USER": storage.username or "postgres",
            "DAGSTER_PG_PASSWORD": storage.password or "",
            "DAGSTER_PG_DB": storage.database or "",
        }
    finally:
        drop_pg_database(storage.render_as_string(hide_password=False))


@contextmanager
def _dagster_instance(kind: str) -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance: the local SQLite one `crm-assets` commands create (`local`), Dagster's
    default SQLite storage (`dagster-sqlite`), or the repository's dagster.yaml on PostgreSQL."""
    with tempfile.TemporaryDirectory(prefix="crm_bench_dagster_") as home:
        if kind == "local":
            (Path(home) / "dagster.yaml").write_text(LOCAL_INSTANCE_CONFIG)
        if kind in ("local", "dagster-sqlite"):
            with instance_at(home) as instance:
                yield instance
            return
        with production_instance_home(Path(home)) as settings:
            saved = {name: os.environ.get(name) for name in settings}
            os.environ.update(settings)
            try:
                with dg.DagsterInstance.from_config(home) as instance:
                    yield instance
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value


def _timed(label: str, fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    print(f"  {label:<58} {elapsed:8.2f} s", flush=True)
    return elapsed


REPORT_ASSETS = report_assets()


def _materialize(instance: dg.DagsterInstance, url: str, cadence: Cadence, first: str, last: str) -> None:
    tags = {RANGE_START_TAG: first, RANGE_END_TAG: last}
    if first == last:
        tags = {}
    result = dg.materialize(
        [REPORT_ASSETS[cadence]],
        instance=instance,
        resources={"warehouse": WarehouseResource(url=url), "exports": ExportDirectory(path=tempfile.gettempdir())},
        run_config=_QUIET,
        tags=tags,
        partition_key=first if first == last else None,
    )
    assert result.success


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=1_096)
    parser.add_argument("--sample", type=int, default=10, help="daily partitions run one per run")
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres", help="the warehouse database")
    parser.add_argument(
        "--instance",
        choices=("local", "dagster-sqlite", "postgres"),
        default="local",
        help="Dagster storage: the local instance crm-assets creates, Dagster's default SQLite storage, "
        "or the repository's dagster.yaml on a throwaway PostgreSQL",
    )
    args = parser.parse_args()
    with _throwaway_database(args.db) as url:
        _run(args, url)


def _run(args: argparse.Namespace, url: str) -> None:
    last = datetime.now(UTC).date() - timedelta(days=1)  # the newest complete daily partition
    first = last - timedelta(days=args.days - 1)
    engine = create_warehouse_engine(url)
    try:
        migrate(engine)
        print(
            f"reports benchmark ({args.db}): {args.deals:,} deals, {args.accounts:,} accounts, "
            f"{args.days:,} daily partitions "
            f"({first} .. {last}), Dagster instance {args.instance}, "
            f"DAGSTER_EVENT_BATCH_SIZE={os.environ['DAGSTER_EVENT_BATCH_SIZE']}, "
            "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS="
            f"{os.environ['DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS']}"
        )
        _timed("load deals (bulk path, setup only)", lambda: _load(engine, args.deals, args.accounts, first, args.days))
        end = last + timedelta(days=1)
        _timed(
            "SQL only: replace every daily window in one statement",
            lambda: replace_aggregations(engine, Cadence.DAILY, first, end),
        )
        with _dagster_instance(args.instance) as instance:
            _timed(
                "warm-up: one in-process run (imports, instance schema)",
                lambda: _materialize(instance, url, Cadence.DAILY, last.isoformat(), last.isoformat()),
            )
            backfill = _timed(
                f"Dagster single-run backfill, {args.days:,} daily partitions",
                lambda: _materialize(instance, url, Cadence.DAILY, first.isoformat(), last.isoformat()),
            )
            week_first = window_start(first, Cadence.WEEKLY) + timedelta(days=7)
            week_last = window_start(last, Cadence.WEEKLY) - timedelta(days=7)
            _timed(
                f"Dagster single-run backfill, weekly {week_first} .. {week_last}",
                lambda: _materialize(instance, url, Cadence.WEEKLY, week_first.isoformat(), week_last.isoformat()),
            )
            month_first = (
                window_start(first, Cadence.MONTHLY).replace(month=1)
                if first.month == 1
                else window_start(first + timedelta(days=31), Cadence.MONTHLY)
            )
            month_last = window_start(last, Cadence.MONTHLY) - timedelta(days=1)
            month_last = window_start(month_last, Cadence.MONTHLY)
            _timed(
                f"Dagster single-run backfill, monthly {month_first} .. {month_last} (with chart)",
                lambda: _materialize(instance, url, Cadence.MONTHLY, month_first.isoformat(), month_last.isoformat()),
            )
            single = _timed(
                "one daily partition (one run)",
                lambda: _materialize(instance, url, Cadence.DAILY, last.isoformat(), last.isoformat()),
            )
            samples = []
            for i in range(args.sample):
                key = (first + timedelta(days=i * max(1, args.days // args.sample))).isoformat()
                samples.append(
                    _timed(
                        f"  per-partition run {i + 1}/{args.sample} ({key})",
                        partial(_materialize, instance, url, Cadence.DAILY, key, key),
                    )
                )
        per_run = statistics.mean(samples)
        print("\nsummary")
        print(f"  single-run backfill of {args.days:,} daily partitions: {backfill:.2f} s")
        print(f"  one daily partition:                            {single:.2f} s")
        print(
            f"  one run per partition (in-process, mean of {args.sample}): {per_run:.3f} s per run -> "
            f"{per_run * args.days:.1f} s for {args.days:,} partitions "
            f"({per_run * args.days / backfill:.1f}x the single run; launched runs add ~2.5 s each)"
        )
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
