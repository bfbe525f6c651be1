"""A scan killed (-9) half way resumes from its last checkpoint and ends as if never interrupted.

The extraction runs in a subprocess against the demo CRM served over HTTP by this process, which counts
the page requests; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crm_assets.demo_crm import DEMO_API_KEY, DemoConfig, DemoCrm, Faults
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.warehouse.engine import create_warehouse_engine
from crm_assets.warehouse.schema import RAW_TABLES, raw_scan_records, raw_scan_views, rejected_records, sync_state
from crm_assets_tests.conftest import create_pg_database, drop_pg_database

CHECKPOINT_PAGES = 4
PER_PAGE = 10

EXTRACT = f"""
import logging, sys
from crm_assets.domains import DEALS
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.pipeline import ScanSettings, extract_domain
from crm_assets.warehouse.engine import create_warehouse_engine, migrate

logging.basicConfig(level=logging.INFO, format="%(message)s")
engine = create_warehouse_engine(sys.argv[2])
migrate(engine)
client = FreshsalesClient(
    sys.argv[1], {DEMO_API_KEY!r}, rate_limit_per_minute=0, rate_limit_per_hour=0, per_page={PER_PAGE},
    max_concurrency=1,
)
with client:
    settings = ScanSettings(checkpoint_pages={CHECKPOINT_PAGES})
    extract_domain(engine, DEALS, client, "run", full_refresh=True, settings=settings)
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_warehouses(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'straight.db'}", f"sqlite:///{tmp_path / 'resumed.db'}"
        return
    urls = create_pg_database(), create_pg_database()
    try:
        yield urls
    finally:
        for url in urls:
            drop_pg_database(url)


def start_extraction(crm_url: str, db_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", EXTRACT, crm_url, db_url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    return output


def page_requests(demo: DemoCrm) -> int:
    return sum(1 for r in demo.request_log if "/view/" in r.path)


def tables(url: str) -> dict[str, Any]:
    engine = create_warehouse_engine(url)
    raw = RAW_TABLES["deals"]
    try:
        with engine.connect() as conn:
            return {
                "raw": conn.execute(
                    sa.select(raw.c.crm_id, raw.c.payload, raw.c.updated_at, raw.c.is_deleted).order_by(raw.c.crm_id)
                ).all(),
                "rejected": conn.execute(
                    sa.select(rejected_records.c.crm_id, rejected_records.c.reason).order_by(rejected_records.c.id)
                ).all(),
                "cursor": conn.execute(sa.select(sync_state.c.cursor, sync_state.c.domain)).all(),
                "staged": conn.execute(sa.select(sa.func.count()).select_from(raw_scan_records)).scalar_one(),
                "pages_staged": conn.execute(sa.select(sa.func.sum(raw_scan_views.c.next_page - 1))).scalar(),
            }
    finally:
        engine.dispose()


def test_a_killed_scan_resumes_from_its_last_checkpoint(two_warehouses: tuple[str, str]) -> None:
    straight_url, resumed_url = two_warehouses
    demo = DemoCrm(DemoConfig(accounts=30, contacts=30, deals=700, seed=9))
    with serve_demo_crm(demo) as crm_url:
        finish(start_extraction(crm_url, straight_url))
        straight_pages = page_requests(demo)
        demo.clear_log()

        demo.faults = Faults(slow_seconds=0.03)  # slow enough to be caught half way
        process = start_extraction(crm_url, resumed_url)
        while page_requests(demo) < straight_pages // 2 + CHECKPOINT_PAGES // 2 and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        demo.faults = Faults()
        killed = tables(resumed_url)
        assert killed["raw"] == [], "the kill came after the merge: the test did not interrupt the scan"
        assert killed["staged"] > 0 and killed["pages_staged"] >= CHECKPOINT_PAGES

        output = finish(start_extraction(crm_url, resumed_url))
        spent_pages = page_requests(demo)

    assert "resuming the unfinished full scan" in output, output
    straight, resumed = tables(straight_url), tables(resumed_url)
    assert len(straight["raw"]) == 700
    assert resumed == straight
    assert resumed["staged"] == 0
    # Only pages read after the last checkpoint (buffered, lost to the kill) were requested twice.
    assert straight_pages <= spent_pages <= straight_pages + CHECKPOINT_PAGES
