"""The code location loads, and its graph is what we meant (a snapshot shows every change in review)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
from syrupy.assertion import SnapshotAssertion

from crm_assets.definitions import defs

REPO = Path(__file__).resolve().parents[1]


def describe(definitions: dg.Definitions) -> dict[str, Any]:
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "kinds": sorted(node.kinds),
            "pools": sorted(node.pools or []),
            "partitions": type(partitions).__name__ if partitions else None,
            "checks": sorted(c.name for c in node.check_keys),
            "owners": list(node.owners),
            "tags": dict(sorted(node.tags.items())),
        }
    repo = definitions.get_repository_def()
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": {s.name: (s.cron_schedule, s.execution_timezone) for s in repo.schedule_defs},
        "sensors": sorted(s.name for s in repo.sensor_defs),
        "resources": sorted(repo.get_top_level_resources()),
    }


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs())


def test_definitions_snapshot(snapshot: SnapshotAssertion) -> None:
    assert describe(defs()) == snapshot


def test_the_dagster_cli_validates_the_code_location(tmp_path: Path) -> None:
    env = os.environ | {"DAGSTER_HOME": str(tmp_path)}
    env.pop("CRM_BASE_URL", None)
    result = subprocess.run(
        [
            Path(sys.executable).with_name("dagster"),
            "definitions",
            "validate",
            "-m",
            "crm_assets.definitions",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_the_code_location_reads_no_configuration(tmp_path: Path) -> None:
    """Configuration is read when Dagster builds the definitions, so a bad setting fails there, not on import."""
    env = os.environ | {"DAGSTER_HOME": str(tmp_path), "CRM_FIELD_MAP": str(tmp_path / "missing.json")}
    code = (
        "import crm_assets.definitions as location, crm_assets.run_all\n"
        "try:\n    location.defs()\nexcept ValueError as exc:\n    print(exc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CRM_FIELD_MAP: cannot read"), result.stdout + result.stderr
