"""`crm-assets update` ends a failed run with its cause in plain words, never Dagster's wrapper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from crm_assets.demo_crm import DemoCrm

CLI = [sys.executable, "-m", "crm_assets.cli", "update"]
ARGS = ["--domain", "deals", "--key", "deal_id", "--value", "1", "--key-to-update", "deal_size", "--update-value", "5"]


def test_a_rejected_api_key_is_the_last_line(demo: DemoCrm, crm_url: str, tmp_path: Path) -> None:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "DAGSTER_", "DATABASE_URL"))}
    env = keep | {
        "CRM_BASE_URL": crm_url,
        "CRM_API_KEY": "wrong-key-never-print-me",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    result = subprocess.run(
        [*CLI, *ARGS, "--dry-run"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 1
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: ") and "CRM_API_KEY" in last, last
    assert "CrmAuthError" not in last, "the cause in words, not the exception's class"
    for noise in ("DagsterExecutionStepExecutionError", "Error occurred while executing", "Traceback"):
        assert noise not in result.stdout + result.stderr
    assert "wrong-key-never-print-me" not in result.stdout + result.stderr
