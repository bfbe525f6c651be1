"""The real crm_sync job under Dagster's default multiprocess executor, on an SQLite warehouse.

Parallel step processes each migrate the same fresh file and write to it at the same time: they must
migrate once and wait for each other's write locks instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from crm_assets.definitions import defs
from crm_assets.demo_crm import DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.warehouse.schema import CLEAN_TABLES

API_KEY = "multiprocess-test-key"


def crm_sync_job() -> dg.JobDefinition:
    """Rebuilt in every step process, with resources from the environment the test sets."""
    return defs().resolve_job_def("crm_sync")


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    demo = DemoCrm(DemoConfig(accounts=60, contacts=300, deals=3000, seed=3, api_key=API_KEY))
    database = f"sqlite:///{tmp_path / 'warehouse.db'}"
    with serve_demo_crm(demo) as crm_url:
        for name, value in {
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "CRM_BASE_URL": crm_url,
            "CRM_API_KEY": API_KEY,
            "CRM_RATE_LIMIT_PER_MINUTE": "0",
            "CRM_RATE_LIMIT_PER_HOUR": "0",
            "DATABASE_URL": database,
            "CRM_EXPORT_DIR": str(tmp_path / "exports"),
        }.items():
            monkeypatch.setenv(name, value)
        (tmp_path / "dagster_home").mkdir()
        yield database


def failures(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Every step failure, retried ones too (a run that only succeeded on retry hides a lock error)."""
    kinds = {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY}
    return [
        f"{event.step_key}: {event.dagster_event.event_specific_data.error.message}"  # type: ignore[union-attr]
        for event in instance.all_logs(run_id, of_type=kinds)
    ]


def test_crm_sync_succeeds_under_the_multiprocess_executor_on_sqlite(environment: str) -> None:
    """One run on a fresh file: every step process migrates it, raw and clean steps write side by side."""
    database = environment
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(crm_sync_job), instance=instance)
        assert result.success
        assert failures(instance, result.run_id) == []
        step_events = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_START)
        assert len({e.dagster_event.pid for e in step_events if e.dagster_event}) > 1, "the steps ran in one process"
    engine = sa.create_engine(database)
    with engine.connect() as conn:
        for table in CLEAN_TABLES.values():
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() > 0
    engine.dispose()
