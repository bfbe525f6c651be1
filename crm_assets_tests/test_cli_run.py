"""`crm-assets run` (the README's run command) on the embedded defaults: demo CRM, SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa


def test_run_materializes_everything_into_sqlite_and_says_where(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_BASE_URL", "CRM_API_KEY", "DATABASE_URL")}
    env |= {"DAGSTER_HOME": str(home), "CRM_EXPORT_DIR": str(tmp_path / "exports")}
    result = subprocess.run(
        [Path(sys.executable).with_name("crm-assets"), "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    warehouse = home / "warehouse.db"
    assert f"sqlite:///{warehouse}" in result.stdout
    assert str(tmp_path / "exports") in result.stdout
    assert "dagster dev" in result.stdout
    assert "rejected (" in result.stdout, "the summary says why records were rejected"
    assert "CRM_BASE_URL is not set" in output, "the demo CRM is announced in the logs"
    engine = sa.create_engine(f"sqlite:///{warehouse}")
    with engine.connect() as conn:
        for table in ("accounts", "contacts", "deals", "deal_aggregations"):
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() > 0, table
        types = set(conn.execute(sa.text("SELECT DISTINCT aggregation_type FROM deal_aggregations")).scalars())
    assert types == {"daily", "weekly", "monthly"}
    assert len(list((tmp_path / "exports").glob("*_deals.json"))) == 1
