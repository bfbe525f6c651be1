"""`crm-assets` refuses to start on a configuration mistake: one line on stderr naming what to fix, exit 2.

The README ("Retry a configuration mistake"): every setting a command's runs read is checked before any
run starts, so a mistake never shows as a failed run in the UI, and no message echoes a password or the key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from crm_assets_tests.conftest import PG_ADMIN_DSN, instance_at

CLI = Path(sys.executable).with_name("crm-assets")
SECRET = "s3cret-Key-42"  # in every variable that may hold a secret: never in the output
UPDATE = ("--domain", "deals", "--key", "deal_id", "--value", "1", "--key-to-update", "deal_size")
UPDATE_ARGS = ("update", *UPDATE, "--update-value", "5", "--dry-run")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "DAGSTER_", "DATABASE_URL"))}
    return keep | {"CRM_EXPORT_DIR": str(tmp_path / "exports"), "DAGSTER_HOME": str(tmp_path / "home")} | extra


def _refused(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    """The command's one line on stderr, once it exited with 2 and printed nothing else."""
    result = subprocess.run([CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert result.stdout == "", result.stdout[-3000:]
    assert SECRET not in output and "hunter2" not in output
    return lines[0]


def _no_run_in(home: Path) -> None:
    if (home / "dagster.yaml").exists():
        with instance_at(str(home)) as instance:
            assert instance.get_runs() == [], "no run was started"


@pytest.mark.parametrize("command", ["run", "update"])
@pytest.mark.parametrize(
    ("variables", "says"),
    [
        ({"CRM_BASE_URL": "http://127.0.0.1:18765/crm/sales"}, "CRM_BASE_URL is set but CRM_API_KEY is not"),
        ({"CRM_BASE_URL": "ht!tp:/x y", "CRM_API_KEY": SECRET}, "CRM_BASE_URL must be an http:// or https:// URL"),
        (
            {"CRM_BASE_URL": "https://acme.myfreshworks.com/crm/sales", "CRM_API_KEY": f"two {SECRET}"},
            "CRM_API_KEY contains spaces",
        ),
        ({"DATABASE_URL": "mysql://crm:hunter2@db.internal/crm"}, "DATABASE_URL uses mysql://"),
        ({"DATABASE_URL": "postgresql://crm:hunter2@db.internal:x/crm"}, "DATABASE_URL is malformed"),
        ({"CRM_RATE_LIMIT_PER_HOUR": "1.5"}, "CRM_RATE_LIMIT_PER_HOUR is '1.5': it must be a whole number"),
        ({"CRM_REPORTS_START_DATE": "2026-02-30"}, "CRM_REPORTS_START_DATE must be a date like 2023-01-01"),
        ({"CRM_FIELD_MAP": "/nowhere/map.json"}, "CRM_FIELD_MAP: cannot read /nowhere/map.json"),
    ],
    ids=["no-key", "bad-url", "bad-key", "mysql", "bad-port", "rate", "date", "field-map"],
)
def test_a_setting_the_runs_would_refuse_stops_the_command_before_any_run(
    tmp_path: Path, command: str, variables: dict[str, str], says: str
) -> None:
    args = UPDATE_ARGS if command == "update" else ("run",)
    line = _refused(tmp_path, _env(tmp_path, **variables), *args)
    assert says in line, line
    _no_run_in(tmp_path / "home")


@pytest.mark.parametrize("command", ["run", "update"])
@pytest.mark.parametrize(
    ("home", "says"),
    [
        ("{tmp}/a_file", "is a file, not a folder"),
        ("{tmp}/a_file/home", "Not a directory"),
        ("/proc/crm-assets-test/home", "No such file or directory"),
        ("/sys/crm-assets-test", "Operation not permitted"),
    ],
    ids=["file", "under-file", "proc", "sys"],
)
def test_a_dagster_home_that_cannot_be_a_folder_is_named_in_one_line(
    tmp_path: Path, command: str, home: str, says: str
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    path = home.format(tmp=tmp_path)
    line = _refused(tmp_path, _env(tmp_path, DAGSTER_HOME=path), *(UPDATE_ARGS if command == "update" else ("run",)))
    assert f"DAGSTER_HOME {path}" in line and says in line, line


def test_an_export_folder_that_cannot_be_written_stops_run_before_any_run(tmp_path: Path) -> None:
    """Not after a sync of hours, at its last step. `update` writes no export: it is not stopped."""
    blocker = tmp_path / "a_file"
    blocker.write_text("where the export folder should be")
    env = _env(tmp_path, CRM_EXPORT_DIR=str(blocker / "exports"))
    line = _refused(tmp_path, env, "run")
    assert line.startswith("error: CRM_EXPORT_DIR: cannot write .crm-assets-write-check."), line
    assert f" in the folder {blocker / 'exports'}: " in line, line
    assert "not a directory" in line and "Fix: point CRM_EXPORT_DIR at a folder" in line, line
    _no_run_in(tmp_path / "home")
    update = subprocess.run([CLI, *UPDATE_ARGS], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert update.returncode == 0, (update.stdout + update.stderr)[-3000:]


def test_a_dagster_yaml_that_is_not_yaml_is_named_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"# {SECRET}\nstorage: [\n  postgres: {{\n")
    line = _refused(tmp_path, _env(tmp_path), "run")
    assert f"{home / 'dagster.yaml'}" in line and "line 4" in line, line


def test_an_instance_database_that_cannot_be_reached_is_named_in_one_line(tmp_path: Path) -> None:
    """The repository's dagster.yaml (PostgreSQL storage, its password from DAGSTER_PG_PASSWORD), no server."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    pg = {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "1", "DAGSTER_PG_USER": "crm", "DAGSTER_PG_DB": "crm"}
    line = _refused(tmp_path, _env(tmp_path, DAGSTER_PG_PASSWORD=SECRET, **pg), "run")
    assert f"{home / 'dagster.yaml'}" in line and "127.0.0.1" in line and "Connection refused" in line, line


@pytest.mark.postgres
def test_a_password_inside_the_instance_database_name_is_not_repeated(tmp_path: Path) -> None:
    """The server repeats a database name it does not know, a libpq connection string's password included."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    admin = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    pg = {
        "DAGSTER_PG_HOST": str(admin.get("host", "127.0.0.1")),
        "DAGSTER_PG_PORT": str(admin.get("port", "5432")),
        "DAGSTER_PG_USER": str(admin.get("user", "postgres")),
        "DAGSTER_PG_DB": "crm_absent password=hunter2",
    }
    line = _refused(tmp_path, _env(tmp_path, DAGSTER_PG_PASSWORD=SECRET, **pg), "run")
    assert "crm_absent password=***" in line and "does not exist" in line, line


@pytest.mark.parametrize(
    ("option", "value"), [("--port", "70000"), ("--port", "-1"), ("--accounts", "-5"), ("--deals", "many")]
)
def test_a_demo_crm_option_out_of_range_is_a_usage_error(option: str, value: str) -> None:
    result = subprocess.run([CLI, "demo-crm", option, value], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("crm-assets demo-crm: error: argument " + option), result.stderr
