"""No quadratic statement on SQLite: every set-based statement of a real sync uses an index or a join.

SQLite has no hash join: a correlated subquery that scans a table runs that scan once per outer row.
The plans are taken from the statements as a real sync, clean and report run issue them, on a
warehouse of a few thousand rows, so a new statement is covered without being listed here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from crm_assets.demo_crm import DEMO_API_KEY, DEMO_BASE_URL, DemoConfig, DemoCrm
from crm_assets.domains import configured_domains
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.pipeline import clean_domain, extract_domain
from crm_assets.reports.aggregate import replace_aggregations
from crm_assets.reports.reconcile import mismatches_with_days, mismatches_with_deals
from crm_assets.reports.windows import Cadence
from crm_assets.warehouse.bulk import create_stage, fill_stage_rows
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.schema import RAW_TABLES
from crm_assets_tests.warehouse.sqlite_plans import PlanRecorder, recording_plans

LARGE = 1_000  # rows: a table this big scanned once per outer row is the quadratic case
RAW_MERGE = "crm_assets/warehouse/raw.py:apply"  # the merge of a complete scan into raw_<domain>


def _sync(engine: sa.Engine, client: FreshsalesClient, *, full: bool) -> None:
    for domain in configured_domains():
        extract_domain(engine, domain, client, "plans", full_refresh=full)
        clean_domain(engine, domain, "plans")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlanRecorder]:
    """A first sync, an incremental one after changes and account deletions, a full reconciliation, reports."""
    engine = create_warehouse_engine(f"sqlite:///{tmp_path_factory.mktemp('plans') / 'warehouse.db'}")
    migrate(engine)
    demo = DemoCrm(DemoConfig(accounts=300, contacts=1_500, deals=4_000, seed=2))
    client = FreshsalesClient(
        DEMO_BASE_URL, DEMO_API_KEY, transport=demo.transport(), rate_limit_per_minute=0, rate_limit_per_hour=0
    )
    with recording_plans(engine) as recorder:
        _sync(engine, client, full=True)
        for entity in ("sales_accounts", "contacts", "deals"):
            demo.touch_fraction(entity, 0.1, seed=1)
        for crm_id in demo.crm_ids("sales_accounts")[:5]:  # their deals become orphans
            demo.delete_record("sales_accounts", crm_id)
        _sync(engine, client, full=False)
        _sync(engine, client, full=True)
        for cadence in Cadence:
            replace_aggregations(engine, cadence, date(2000, 1, 1), date(2100, 1, 1))  # fills the range
        demo.touch_fraction("deals", 0.1, seed=3)
        _sync(engine, client, full=False)
        for cadence in Cadence:
            replace_aggregations(engine, cadence, date(2000, 1, 1), date(2100, 1, 1))  # rewrites what differs
            with engine.connect() as conn:
                mismatches_with_deals(conn, cadence)
                if cadence is not Cadence.DAILY:
                    mismatches_with_days(conn, cadence)
    client.close()
    engine.dispose()
    yield recorder


def test_the_recording_covers_merge_contest_orphans_and_aggregations(recorded: PlanRecorder) -> None:
    issuers = {p.issued_by for p in recorded.plans}
    for expected in (
        RAW_MERGE,
        "crm_assets/warehouse/clean_load.py:_take_changed_batch",  # the candidates of a changed batch
        "crm_assets/warehouse/clean_load.py:_decide",  # the contest
        "crm_assets/warehouse/raw.py:mark_changed",  # dependents of vanished keys, re-decided as orphans
        "crm_assets/warehouse/drift.py:missing_in_changed_records",
        "crm_assets/reports/aggregate.py:_fill",
        "crm_assets/reports/aggregate.py:_rewrite_differences",
        "crm_assets/reports/reconcile.py:_compare",
    ):
        assert expected in issuers
    reconciliations = [p for p in recorded.issued_by(RAW_MERGE) if p.sql.lstrip().startswith("UPDATE")]
    assert reconciliations, "no full reconciliation was recorded"


def test_no_statement_scans_a_large_table_per_row(recorded: PlanRecorder) -> None:
    problems = [s for p in recorded.plans for s in p.correlated_scans(LARGE)]
    assert problems == []


def test_no_join_scans_its_inner_side_per_row(recorded: PlanRecorder) -> None:
    problems = [s for p in recorded.plans for s in p.nested_scans(LARGE)]
    assert problems == []


def test_a_full_join_of_two_subqueries_is_found(tmp_path: Path) -> None:
    """SQLite has no hash join: FULL JOIN of two grouped subqueries loops over one per row of the other."""
    engine = create_warehouse_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    migrate(engine)
    raw = RAW_TABLES["deals"]
    left = sa.select(raw.c.crm_id).group_by(raw.c.crm_id).subquery("left_side")
    right = sa.select(raw.c.crm_id).group_by(raw.c.crm_id).subquery("right_side")
    with engine.connect() as conn, recording_plans(engine) as recorder:
        conn.execute(sa.select(left.c.crm_id).select_from(left.join(right, left.c.crm_id == right.c.crm_id, full=True)))
    (plan,) = recorder.plans
    assert plan.nested_scans(LARGE), plan.rows
    engine.dispose()


def test_an_indexed_stage_turns_a_per_row_scan_into_a_lookup(tmp_path: Path) -> None:
    """The detector finds the quadratic plan, and `create_stage(indexed=...)` removes it."""
    engine = create_warehouse_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    migrate(engine)
    raw = RAW_TABLES["deals"]
    found = {}
    for indexed in ((), ("crm_id",)):
        with engine.begin() as conn, recording_plans(engine) as recorder:
            stage = create_stage(conn, raw, ["crm_id"], indexed=indexed)
            fill_stage_rows(conn, stage, ((i,) for i in range(LARGE + 1)))
            conn.execute(sa.delete(raw).where(~sa.exists().where(stage.c.crm_id == raw.c.crm_id)))
            (plan,) = [p for p in recorder.plans if p.sql.startswith("DELETE")]
            found[indexed] = plan.correlated_scans(LARGE)
    assert found[()] and "SCAN stage_raw_deals" in found[()][0], found
    assert found[("crm_id",)] == []
    engine.dispose()


def test_the_history_reads_only_the_open_versions_of_the_changed_deals(recorded: PlanRecorder) -> None:
    """A re-sync versions a few deals: reading every open version (an index's whole range) for them costs
    as much as the history is long (3.9 s of a 6 s re-sync at 1M deals before it looked them up)."""
    plans = recorded.issued_by("crm_assets/warehouse/history.py:_reconcile")
    assert plans, "no history reconciliation was recorded"
    whole = [
        f"{p.sql[:80]}: {row.detail}"
        for p in plans
        for row in p.rows
        if (scan := _SCAN_OF.match(row.detail)) and p.table_sizes.get(scan["table"], 0) >= LARGE
    ]
    assert whole == [], "\n".join(whole)


_SCAN_OF = re.compile(r"^SCAN (?P<table>\S+)")
