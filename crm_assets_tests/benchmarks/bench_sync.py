"""Sync benchmark: N deals (+ N/10 accounts, N/2 contacts) from the demo CRM over loopback HTTP into
PostgreSQL (default) or the embedded SQLite warehouse (`--db sqlite`).

Runs the full sync as the sync job's graph runs it (every domain's raw step at once, each clean step once its
inputs are done); then, into a second warehouse, each stage alone (fetch, parse and clean, load), printing
records/s and peak RSS, and the full sync against the fetch alone; beside them, a plain COPY of the same
deal rows and an origin-style ORM row-by-row load of a 5,000-row sample; last, in the first warehouse, a
re-sync after 1% of the records changed, as the job runs it. Not a test: it prints figures.

    python crm_assets_tests/benchmarks/bench_sync.py --deals 1000000
    python crm_assets_tests/benchmarks/bench_sync.py --deals 1000000 --db sqlite
    python crm_assets_tests/benchmarks/bench_sync.py --compare 250000,1000000   # RSS growth between sizes
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa

from crm_assets.demo_crm import DEMO_API_KEY
from crm_assets.domains import Domain, configured_domains
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.pipeline import clean_domain, extract_domain
from crm_assets.warehouse.clean_load import TableChanges
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.schema import CLEAN_TABLES, SurrogateKey

ADMIN_DSN = os.environ.get("CRM_ASSETS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")


class PeakRss:
    """Samples this process's resident set size; `peak` is the highest seen since `reset`."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.current())

    def reset(self) -> None:
        self.peak = self.current()

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Stage:
    name: str
    records: int
    seconds: float
    peak_rss: int

    def line(self) -> str:
        rate = self.records / self.seconds if self.seconds else float("inf")
        return (
            f"  {self.name:<22} {self.records:>10,} records {self.seconds:>8.2f} s {rate:>11,.0f} rec/s"
            f"   peak RSS {self.peak_rss / 2**20:>7.0f} MiB"
        )


@dataclass
class Report:
    stages: list[Stage] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def measure(report: Report, rss: PeakRss, name: str, action: Callable[[], tuple[int, T]]) -> T:
    rss.reset()
    started = time.perf_counter()
    records, value = action()
    report.stages.append(Stage(name, records, time.perf_counter() - started, rss.peak))
    print(report.stages[-1].line(), flush=True)
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def demo_server(deals: int) -> Iterator[str]:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("crm-assets")),
        "demo-crm",
        "--port",
        str(port),
        "--deals",
        str(deals),
        "--accounts",
        str(max(deals // 10, 1)),
        "--contacts",
        str(max(deals // 2, 1)),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/crm/sales"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_demo/stats", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield base
    finally:
        process.kill()
        process.wait()


def touch(base: str, entity: str, fraction: float) -> None:
    root = base.split("/crm/")[0]
    body = json.dumps({"entity": entity, "fraction": fraction}).encode()
    request = urllib.request.Request(f"{root}/_demo/touch", data=body, headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=120).read()


@contextmanager
def throwaway_database(db: str = "postgres", suffix: str = "") -> Iterator[str]:
    if db == "sqlite":
        with tempfile.TemporaryDirectory(prefix="crm_bench_") as folder:
            yield f"sqlite:///{Path(folder) / 'warehouse.db'}"
        return
    name = f"crm_bench_{os.getpid()}{'_' + suffix if suffix else ''}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fetch_all(engine: sa.Engine, client: FreshsalesClient, full: bool) -> tuple[int, None]:
    """Every domain's extraction, one after another, through one client."""
    results = [extract_domain(engine, d, client, "bench", full_refresh=full) for d in configured_domains()]
    return sum(r.stats.fetched for r in results), None


def bench_client(base: str) -> FreshsalesClient:
    return FreshsalesClient(base, DEMO_API_KEY, rate_limit_per_minute=0, rate_limit_per_hour=0, max_concurrency=4)


@dataclass
class JobRun:
    """What one sync as the job runs it did: records fetched and requests, when the last fetch ended, the
    clean steps' changes."""

    fetched: int = 0
    requests: int = 0
    fetch_seconds: float = 0.0
    changes: dict[str, TableChanges] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)  # when each step began and ended, from the run's start

    def note(self, started: float, what: str) -> None:
        self.timeline.append(f"{time.perf_counter() - started:.1f} s {what}")


def sync_as_the_job_runs(engine: sa.Engine, base: str, full: bool, *, clean: bool = True) -> JobRun:
    """The sync job's graph, in threads: every domain's raw step at once (the crm_api pool holds the three, each
    with its own client), each clean step as soon as its raw step and the clean steps of the domains it
    references are done; as Dagster's default (multiprocess) executor runs the job. `clean=False`: the raw
    steps alone. Threads share this process's GIL, which processes would not: a conservative measure."""
    domains = configured_domains()
    run = JobRun()
    started = time.perf_counter()
    lock = threading.Lock()
    steps: dict[str, Future[None]] = {}

    def step(domain: Domain) -> None:
        with bench_client(base) as client:
            result = extract_domain(engine, domain, client, "bench", full_refresh=full)
        with lock:
            run.fetched += result.stats.fetched
            run.requests += client.stats.requests
            run.fetch_seconds = max(run.fetch_seconds, time.perf_counter() - started)
            run.note(started, f"{domain.raw_asset} done")
        if not clean:
            return
        for fk in domain.foreign_keys:
            steps[fk.domain].result()  # submitted before: domains come in load order
        run.note(started, f"{domain.name} clean begins")
        run.changes[domain.name] = clean_domain(engine, domain, "bench")
        run.note(started, f"{domain.name} clean done")

    with ThreadPoolExecutor(len(domains), thread_name_prefix="step") as pool:
        for domain in domains:
            steps[domain.name] = pool.submit(step, domain)
        for future in steps.values():
            future.result()
    return run


def clean_and_load(engine: sa.Engine, report: Report, rss: PeakRss, label: str) -> int:
    """Per domain: coerce changed raw rows and decide their keys (parse and clean), write them (load)."""
    total = records = 0
    clean_seconds = load_seconds = 0.0
    peak = 0
    for domain in configured_domains():
        rss.reset()
        started = time.perf_counter()
        changes = clean_domain(engine, domain, "bench")
        elapsed = time.perf_counter() - started
        clean_seconds += elapsed - changes.write_seconds
        load_seconds += changes.write_seconds
        peak = max(peak, rss.peak)  # one step, one process: both stages share it
        records += changes.records_read
        total += changes.inserted + changes.updated + changes.deleted
        report.extra[f"{label}_{domain.name}_clean_rate"] = changes.records_read / elapsed if elapsed else 0.0
        report.extra[f"{label}_{domain.name}_write_rate"] = (
            changes.records_read / changes.write_seconds if changes.write_seconds else 0.0
        )
    report.stages.append(Stage(f"{label} parse+clean", records, clean_seconds, peak))
    print(report.stages[-1].line(), flush=True)
    report.stages.append(Stage(f"{label} load", records, load_seconds, peak))
    print(report.stages[-1].line(), flush=True)
    return total


def plain_copy_seconds(engine: sa.Engine) -> tuple[int, float]:
    """The ceiling: COPY the loaded deal rows into a (logged) table with no constraints or indexes.

    On SQLite, which has no COPY: one executemany of the rows into such a table, in one transaction.
    """
    if engine.dialect.name == "sqlite":
        return _plain_insert_seconds(engine)
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        buffer = io.BytesIO()
        with cursor.copy("COPY (SELECT * FROM deals) TO STDOUT") as copy:
            for block in copy:
                buffer.write(block)
        cursor.execute("CREATE TABLE deals_plain_copy (LIKE deals)")
        conn.commit()
        started = time.perf_counter()
        with cursor.copy("COPY deals_plain_copy FROM STDIN") as copy:
            copy.write(buffer.getbuffer())
        conn.commit()
        elapsed = time.perf_counter() - started
        rows = int(conn.execute(sa.text("SELECT count(*) FROM deals_plain_copy")).scalar_one())
        conn.execute(sa.text("DROP TABLE deals_plain_copy"))
        conn.commit()
    return rows, elapsed


def _plain_insert_seconds(engine: sa.Engine) -> tuple[int, float]:
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        rows = driver.execute("SELECT * FROM deals").fetchall()
        columns = [c[1] for c in driver.execute("PRAGMA table_info(deals)").fetchall()]
        driver.execute(f"CREATE TABLE deals_plain_copy ({', '.join(columns)})")
        started = time.perf_counter()
        driver.execute("BEGIN")
        driver.executemany(f"INSERT INTO deals_plain_copy VALUES ({', '.join('?' * len(columns))})", rows)
        driver.execute("COMMIT")
        elapsed = time.perf_counter() - started
        count = int(driver.execute("SELECT count(*) FROM deals_plain_copy").fetchone()[0])
        driver.execute("DROP TABLE deals_plain_copy")
    return count, elapsed


def orm_row_by_row_seconds(engine: sa.Engine, sample: int = 5000) -> tuple[int, float]:
    """The origin project's way: one ORM object and one commit per row."""
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class Deal(Base):
        __table__ = sa.Table(
            "deals_orm",
            Base.metadata,
            sa.Column("id", SurrogateKey, primary_key=True, autoincrement=True),
            sa.Column("deal_id", sa.BigInteger, unique=True),
            sa.Column("deal_name", sa.Text),
            sa.Column("deal_size", sa.Numeric(18, 2)),
            sa.Column("probability_of_closure", sa.Text),
            sa.Column("deal_stage", sa.Text),
            sa.Column("account_id", sa.BigInteger),
            sa.Column("created_at", sa.DateTime(timezone=True)),
        )

    Base.metadata.create_all(engine)
    deals = CLEAN_TABLES["deals"]
    columns = ("deal_id", "deal_name", "deal_size", "probability_of_closure", "deal_stage", "account_id", "created_at")
    with engine.connect() as conn:  # typed by the table, so SQLite's text timestamps come back as datetimes
        rows = conn.execute(sa.select(*(deals.c[c] for c in columns)).limit(sample)).mappings().all()
    started = time.perf_counter()
    with Session(engine) as session:
        for row in rows:
            session.add(Deal(**row))
            session.commit()
    return len(rows), time.perf_counter() - started


def run(deals: int, db: str = "postgres") -> Report:
    report = Report()
    rss = PeakRss()
    print(
        f"== sync benchmark ({db}): {deals:,} deals, {deals // 10:,} accounts, {deals // 2:,} contacts ==",
        flush=True,
    )
    with demo_server(deals) as base, throwaway_database(db, "job") as job_url:
        # First, on the cold demo CRM (its first listings cost it more), the sync as the job runs it: the
        # fetch alone then meets a warm server, which can only make the ratio between them look worse.
        job_engine = create_warehouse_engine(job_url)
        migrate(job_engine)
        rss.reset()
        started = time.perf_counter()
        job = sync_as_the_job_runs(job_engine, base, full=True)
        full_seconds = time.perf_counter() - started
        job_rss = rss.peak
        report.extra |= {"full_sync_seconds": full_seconds, "job_fetch_seconds": job.fetch_seconds}

        # The stages, each alone, into a second warehouse; dropped before the re-sync, so that its autovacuum
        # does not run beside it.
        with throwaway_database(db) as url:
            engine = create_warehouse_engine(url)
            migrate(engine)
            measure(report, rss, "full fetch", lambda: _fetched(sync_as_the_job_runs(engine, base, True, clean=False)))
            fetch = report.stages[-1]
            clean_and_load(engine, report, rss, "full")
            stages = sum(s.seconds for s in report.stages)
            print(f"  the stages in a row      {stages:.1f} s = fetch + {stages / fetch.seconds - 1:.1%}", flush=True)
            ratio = full_seconds / fetch.seconds - 1
            print(
                f"  full sync as the job runs it {full_seconds:.1f} s = fetch alone + {ratio:.1%} (target at most "
                f"+20%): its last fetch ended after {job.fetch_seconds:.1f} s, then "
                f"{full_seconds - job.fetch_seconds:.1f} s of cleaning; peak RSS {job_rss / 2**20:.0f} MiB",
                flush=True,
            )
            print(f"    its steps: {'; '.join(job.timeline)}", flush=True)

            copy_rows, copy_seconds = plain_copy_seconds(engine)
            deal_clean_rate = report.extra["full_deals_clean_rate"]
            deal_load_rate = report.extra["full_deals_write_rate"]
            copy_rate = copy_rows / copy_seconds
            report.extra |= {"copy_rate": copy_rate, "load_rate": deal_load_rate}
            ceiling = "plain COPY" if db == "postgres" else "plain INSERT"
            print(f"  {ceiling} of the deals {copy_rows:>10,} rows   {copy_seconds:>8.2f} s {copy_rate:>11,.0f} rows/s")
            rates = (("deals load (bulk writes)", deal_load_rate), ("deals parse+clean+load", deal_clean_rate))
            for name, rate in rates:
                print(f"  {name:<24} {rate:>11,.0f} rows/s = {rate / copy_rate:.0%} of {ceiling}")
            orm_rows, orm_seconds = orm_row_by_row_seconds(engine)
            orm_rate = orm_rows / orm_seconds
            print(f"  ORM row by row (origin)  {orm_rows:>10,} rows   {orm_seconds:>8.2f} s {orm_rate:>11,.0f} rows/s")
            engine.dispose()

        for domain in configured_domains():
            touch(base, domain.entity, 0.01)
        rss.reset()
        started = time.perf_counter()
        resync_run = sync_as_the_job_runs(job_engine, base, full=False)
        resync = time.perf_counter() - started
        report.stages.append(Stage("re-sync (1%)", resync_run.fetched, resync, rss.peak))
        report.extra["resync_seconds"] = resync
        print(report.stages[-1].line(), flush=True)
        print(f"  re-sync after 1% changed {resync:.1f} s = {resync / full_seconds:.1%} of the full sync (target < 5%)")
        print(f"    its steps: {'; '.join(resync_run.timeline)}", flush=True)
        peak = max(job_rss, *(s.peak_rss for s in report.stages))
        print(f"  peak RSS of the run      {peak / 2**20:.0f} MiB (target < 1024)")
        print(f"  CRM requests             {job.requests:,} (full sync), {resync_run.requests:,} (re-sync)")
        job_engine.dispose()
    rss.stop()
    return report


def _fetched(run: JobRun) -> tuple[int, None]:
    return run.fetched, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--compare", help="comma-separated sizes, each run in its own process, e.g. 250000,1000000")
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres", help="the warehouse database")
    args = parser.parse_args()
    if not args.compare:
        run(args.deals, args.db)
        return
    peaks = {}
    for size in (int(s) for s in args.compare.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--deals", str(size), "--db", args.db],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(out, flush=True)
        peaks[size] = max(float(mib) for mib in re.findall(r"peak RSS\s+([\d.]+) MiB", out))
    sizes = sorted(peaks)
    print(
        f"peak RSS: {', '.join(f'{s:,} deals {peaks[s]:.0f} MiB' for s in sizes)}; "
        f"growth {peaks[sizes[-1]] / peaks[sizes[0]] - 1:.0%} (target < 25%)"
    )


if __name__ == "__main__":
    main()
