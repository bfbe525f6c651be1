"""`crm-assets update` end to end: a real process, the demo CRM over HTTP, a DAGSTER_HOME instance."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import dagster as dg
import httpx
import pytest
from sqlalchemy.engine import Engine

from crm_assets.demo_crm import DEMO_API_KEY, DemoCrm
from crm_assets.demo_crm.crm import error_response
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.schema import CLEAN_TABLES, crm_update_audit
from crm_assets_tests.conftest import instance_at
from crm_assets_tests.write_back.conftest import rows, seed_warehouse
from crm_assets_tests.write_back.test_update_job import first_deal

CLI = [sys.executable, "-m", "crm_assets.cli", "update"]


@pytest.fixture
def env(tmp_path: Path, crm_url: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "DAGSTER_", "DATABASE_URL"))}
    return keep | {
        "CRM_BASE_URL": crm_url,
        "CRM_API_KEY": DEMO_API_KEY,
        "CRM_RATE_LIMIT_PER_MINUTE": "0",
        "CRM_RATE_LIMIT_PER_HOUR": "0",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
        "DAGSTER_HOME": str(home),
    }


@pytest.fixture
def engine(env: dict[str, str]) -> Engine:
    engine = create_warehouse_engine(env["DATABASE_URL"])
    migrate(engine)
    return engine


def _tables(output: str) -> int:
    """How many change tables the output holds (each starts with its header line)."""
    return sum(line.split()[:3] == ["crm_id", "old", "value"] for line in output.splitlines())


def update(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_update_runs_on_the_dagster_home_instance_and_prints_the_changes(
    demo: DemoCrm, env: dict[str, str], engine: Engine
) -> None:
    crm_id = first_deal(demo)
    seed_warehouse(engine, demo, [crm_id])
    deal_id = str((demo.get_record("deals", crm_id) or {})["custom_field"]["cf_deal_id"])
    args = [
        "--domain",
        "deals",
        "--key",
        "deal_id",
        "--value",
        deal_id,
        "--key-to-update",
        "deal_size",
        "--update-value",
        "24456",
    ]

    dry = update(env, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{crm_id}" in dry.stdout and "24456.00" in dry.stdout and "planned" in dry.stdout
    old = f"{Decimal(str((demo.get_record('deals', crm_id) or {})['amount'])):.2f}"
    assert re.search(rf"^{crm_id} +{old} +24456.00 +planned$", dry.stdout, re.M), (
        "the old value is formatted like the new one"
    )
    assert _tables(dry.stdout) == 1
    assert "Dry run: nothing was written" in dry.stdout
    assert demo.put_log == []

    done = update(env, *args)
    assert done.returncode == 0, done.stderr
    assert "1 applied, 0 skipped, 0 failed" in done.stdout
    assert _tables(done.stdout) == 1
    assert demo.put_log == [("deals", crm_id, {"deal": {"amount": "24456.00"}})]
    (row,) = rows(engine, CLEAN_TABLES["deals"], CLEAN_TABLES["deals"].c.crm_id == crm_id)
    assert str(row["deal_size"]) == "24456.00"
    assert [a["status"] for a in rows(engine, crm_update_audit)] == ["applied"]
    with instance_at(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="update_domain_value"))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
    assert DEMO_API_KEY not in done.stdout + done.stderr


def test_update_exits_non_zero_with_the_reason(demo: DemoCrm, env: dict[str, str], engine: Engine) -> None:
    failed = update(
        env,
        "--domain",
        "deals",
        "--key",
        "deal_id",
        "--value",
        "1",
        "--key-to-update",
        "deal_size",
        "--update-value",
        "abc",
    )

    assert failed.returncode == 1
    assert "FAILED" in failed.stdout
    assert "error: nothing was written: update_value 'abc' does not fit deal_size" in failed.stderr
    assert demo.put_log == []


def test_a_partial_failure_prints_what_was_and_was_not_updated(
    demo: DemoCrm, env: dict[str, str], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_warehouse(engine, demo)
    asia = [
        i
        for i in demo.crm_ids("sales_accounts")
        if (demo.get_record("sales_accounts", i) or {})["custom_field"]["cf_region"] == "Asia"
    ]
    original = demo.handle

    def refuse_one(request: httpx.Request, *, over_http: bool = False) -> httpx.Response:
        # A validation error is not retried, unlike the 500 fault, so the CLI process fails at once.
        if request.method == "PUT" and request.url.path.endswith(f"/{asia[0]}"):
            return error_response(422, "industry is locked for this account")
        return original(request, over_http=over_http)

    monkeypatch.setattr(demo, "handle", refuse_one)

    failed = update(
        env,
        "--domain",
        "accounts",
        "--key",
        "region",
        "--value",
        "Asia",
        "--key-to-update",
        "industry",
        "--update-value",
        "Energy",  # a choice of the CRM's industry dropdown that no Asian account of the seeded demo holds
    )

    assert failed.returncode == 1
    assert f"error: 1 of {len(asia)} record(s) were NOT updated ({asia[0]}: " in failed.stderr
    assert "industry is locked" in failed.stderr
    assert _tables(failed.stdout) == 1, "the outcome only, not the plan as well"
    outcome = {line.split()[0]: line.split()[3] for line in failed.stdout.splitlines() if line[:1].isdigit()}
    assert outcome == {str(i): "failed" if i == asia[0] else "applied" for i in asia}
