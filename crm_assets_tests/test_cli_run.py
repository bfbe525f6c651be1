"""`crm-assets run` and the README's commands in the order a newcomer types them, as real processes.

Each run a command starts must land in the one Dagster instance (./.crm_assets/dagster_home unless
DAGSTER_HOME says otherwise), carry the crm_assets code location's origin (so it lists on its job's
page) and use one warehouse; a re-run recomputes only the aggregation partitions whose deals changed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from crm_assets.contracts import CODE_LOCATION_NAME
from crm_assets.defs.reports.partitions import build_partitions
from crm_assets.demo_crm import DEMO_API_KEY, DemoConfig, DemoCrm
from crm_assets.demo_crm.config import Faults
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.reports.reconcile import mismatches_with_deals
from crm_assets.reports.windows import Cadence
from crm_assets_tests.conftest import create_pg_database, drop_pg_database, instance_at

CLI = Path(sys.executable).with_name("crm-assets")
REPOSITORY_LABEL = f"__repository__@{CODE_LOCATION_NAME}"
SNAPSHOT_IDS = (
    "import json; from crm_assets.definitions import defs; "
    "print(json.dumps({j.name: j.get_job_snapshot_id() for j in defs().get_repository_def().get_all_jobs()}))"
)
REPORT_JOBS = {f"deal_aggregations_{c}_job" for c in ("daily", "weekly", "monthly")}
HISTORY_JOBS = {"deal_history_job", "pipeline_daily_job"}
UPDATE_DRY_RUN = (
    *("update", "--domain", "deals", "--key", "deal_id", "--value", "1"),
    *("--key-to-update", "deal_size", "--update-value", "5", "--dry-run"),
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "DAGSTER_", "DATABASE_URL"))}
    return keep | {"CRM_EXPORT_DIR": str(tmp_path / "exports")} | extra


def _cli(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return result


def _runs_by_job(home: Path) -> dict[str, list[dg.DagsterRun]]:
    with instance_at(str(home)) as instance:
        listed = instance.get_runs(dg.RunsFilter(tags={".dagster/repository": REPOSITORY_LABEL}))
        everything = instance.get_runs()
    assert {r.run_id for r in listed} == {r.run_id for r in everything}, "every run lists on its job's page"
    by_job: dict[str, list[dg.DagsterRun]] = {}
    for run in everything:
        by_job.setdefault(run.job_name, []).append(run)
    return by_job


def _compared_snapshot_id(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The snapshot the UI compares with the loaded job: a subset run's parent (the whole job)."""
    snapshot_id = run.job_snapshot_id
    if snapshot_id is None:
        return None
    lineage = instance.get_job_snapshot(snapshot_id).lineage_snapshot
    return lineage.parent_snapshot_id if lineage is not None else snapshot_id


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_the_readme_commands_in_order_share_one_instance_and_one_warehouse(tmp_path: Path) -> None:
    env = _env(tmp_path)  # no DAGSTER_HOME, no DATABASE_URL: the README's `make run`
    run = _cli(tmp_path, env, "run")
    home = tmp_path / ".crm_assets" / "dagster_home"
    warehouse = home / "warehouse.db"
    assert f"sqlite:///{warehouse}" in run.stdout
    assert str(tmp_path / "exports") in run.stdout
    assert f"DAGSTER_HOME={home} " in run.stdout and "dg dev" in run.stdout
    assert "rejected (" in run.stdout, "the summary says why records were rejected"
    assert (run.stdout + run.stderr).count("CRM_BASE_URL is not set") == 1, "the demo CRM is announced, once"
    assert "Warning" not in run.stderr and "DEBUG" not in run.stderr
    engine = sa.create_engine(f"sqlite:///{warehouse}")
    for table in ("accounts", "contacts", "deals", "deal_aggregations"):
        assert _count(engine, table) > 0, table
    with engine.connect() as conn:
        types = set(conn.execute(sa.text("SELECT DISTINCT aggregation_type FROM deal_aggregations")).scalars())
        deal_id = conn.execute(sa.text("SELECT deal_id FROM deals ORDER BY deal_id LIMIT 1")).scalar_one()
    assert types == {"daily", "weekly", "monthly"}
    assert len(list((tmp_path / "exports").glob("*_deals.json"))) == 1

    # The README's write-back example, typed next, still without DAGSTER_HOME.
    dry = _cli(
        tmp_path,
        env,
        *("update", "--domain", "deals", "--key", "deal_id", "--value", str(deal_id)),
        *("--key-to-update", "deal_size", "--update-value", "24456", "--dry-run"),
    )
    assert "Dry run: nothing was written" in dry.stdout
    found = re.search(r"(\d+) from the warehouse", dry.stderr)
    assert found is None or int(found.group(1)) >= 1, dry.stderr
    assert not (tmp_path / ".crm_assets" / "warehouse.db").exists(), "no second warehouse"

    runs = _runs_by_job(home)
    assert set(runs) == {"crm_sync", "update_domain_value", *REPORT_JOBS, *HISTORY_JOBS}, "no ephemeral asset job"
    assert runs["update_domain_value"][0].tags["crm_assets/dry_run"] == "true"
    # The UI flags a run whose job snapshot differs from the code it loaded ("may be a different version"):
    # load it as the README's UI command does, in the same environment.
    loaded = subprocess.run(
        [sys.executable, "-c", SNAPSHOT_IDS], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    current = json.loads(loaded.stdout)
    with instance_at(str(home)) as instance:
        for job, job_runs in runs.items():
            assert {_compared_snapshot_id(instance, r) for r in job_runs} == {current[job]}, job


@pytest.mark.postgres
def test_run_twice_against_postgresql_refreshes_only_what_changed(tmp_path: Path) -> None:
    url = create_pg_database("crm_assets_cli")
    try:
        # A later start date keeps the first run's aggregation (one event per partition) short.
        env = _env(tmp_path, DATABASE_URL=url, DAGSTER_HOME=str(tmp_path / "home"), CRM_REPORTS_START_DATE="2026-01-01")
        first = _cli(tmp_path, env, "run")
        assert f"warehouse:  {url}" in first.stdout
        assert "aggregation runs: 3" in first.stdout  # the whole range, one run per cadence
        engine = sa.create_engine(url)
        counts = {t: _count(engine, t) for t in ("accounts", "contacts", "deals", "deal_aggregations")}
        assert all(counts.values()), counts

        second = _cli(tmp_path, env, "run")
        assert "aggregations: up to date" in second.stdout
        assert "aggregation runs: 0" in second.stdout
        assert {t: _count(engine, t) for t in counts} == counts
        engine.dispose()
        runs = _runs_by_job(tmp_path / "home")
        # The first command: per cadence one range run, its checks included; the second: none.
        assert len(runs["crm_sync"]) == 2 and all(len(runs[j]) == 1 for j in REPORT_JOBS)
        # The history report after each sync; the open pipeline per day once (no version changed a day since).
        assert len(runs["deal_history_job"]) == 2 and len(runs["pipeline_daily_job"]) == 1
    finally:
        drop_pg_database(url)


def test_run_help_describes_the_command() -> None:
    result = subprocess.run([CLI, "run", "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "refresh the aggregation partitions whose deals changed" in " ".join(result.stdout.split())
    assert "--rebuild-reports" in result.stdout


def test_the_code_location_has_one_name_in_the_workspace_the_dg_project_and_cli_runs() -> None:
    import tomllib

    import yaml

    repo = Path(__file__).resolve().parents[1]
    (entry,) = yaml.safe_load((repo / "workspace.yaml").read_text())["load_from"]
    dg_project = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    assert entry["python_module"]["location_name"] == dg_project["code_location_name"] == CODE_LOCATION_NAME
    assert dg_project["code_location_target_module"] == entry["python_module"]["module_name"]


def _last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def test_a_failed_run_ends_with_its_cause_once_and_nothing_else(tmp_path: Path) -> None:
    """The export folder is usable when the command checks it, but a folder stands where today's accounts
    export goes (tomorrow's too, for a run across midnight UTC): the run's last step fails."""
    exports = tmp_path / "exports"
    today = datetime.now(UTC).date()
    for day in (today, today + timedelta(days=1)):
        (exports / f"{day.isoformat()}_accounts.json").mkdir(parents=True)
    env = _env(tmp_path, DAGSTER_HOME=str(tmp_path / "home"), CRM_REPORTS_START_DATE="2026-06-01")
    env["CRM_EXPORT_DIR"] = str(exports)
    result = subprocess.run([CLI, "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    last = _last_line(result.stderr)
    assert last.startswith("error: crm_sync failed: step crm_exports: cannot write "), last
    assert f"_accounts.json in the folder {exports}: " in last and "Fix: point CRM_EXPORT_DIR at a folder" in last
    assert output.count("cannot write ") == 1, "the cause is printed once"
    for noise in ("Traceback", "Not executing", "DagsterExecutionStepExecutionError", "see the error above"):
        assert noise not in output


@pytest.mark.parametrize("command", ["run", "update"])
def test_a_warehouse_a_newer_release_migrated_stops_the_command_in_one_line(tmp_path: Path, command: str) -> None:
    """Going back to an older crm-assets: its migrations do not know the schema's revision."""
    warehouse = tmp_path / "warehouse.db"
    with sa.create_engine(f"sqlite:///{warehouse}").begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('9999_from_a_newer_release')"))
    home = tmp_path / "home"
    env = _env(tmp_path, DAGSTER_HOME=str(home), DATABASE_URL=f"sqlite:///{warehouse}")
    args = ["run"] if command == "run" else [*UPDATE_DRY_RUN]
    result = subprocess.run([CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: cannot bring the warehouse schema of sqlite:///{warehouse} up to date: "
        "Can't locate revision identified by '9999_from_a_newer_release'"
    ], result.stderr[-3000:]


@pytest.mark.parametrize("command", ["run", "update"])
def test_an_unreachable_warehouse_fails_before_any_run_naming_it(tmp_path: Path, command: str) -> None:
    """Exit 2, as for a setting: nothing ran. `update` used to start a run that failed (exit 1)."""
    home = tmp_path / "home"
    env = _env(tmp_path, DAGSTER_HOME=str(home), DATABASE_URL="postgresql+psycopg://crm:s3cret@127.0.0.1:1/crm")
    args = ["run"] if command == "run" else [*UPDATE_DRY_RUN]
    result = subprocess.run([CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(
        "error: cannot connect to the warehouse database postgresql+psycopg://crm:***@127.0.0.1:1/crm"
    )
    assert "s3cret" not in result.stdout + result.stderr
    with instance_at(str(home)) as instance:
        assert instance.get_runs() == [], "no run was started"


@pytest.mark.parametrize(
    ("command", "variable", "value", "says"),
    [
        ("run", "CRM_RATE_LIMIT_PER_MINUTE", "-5", "CRM_RATE_LIMIT_PER_MINUTE is '-5': it must be a whole number"),
        ("run", "CRM_REPORTS_START_DATE", "2026-02-30", "CRM_REPORTS_START_DATE must be a date like 2023-01-01"),
        ("update", "CRM_FIELD_MAP", "/nowhere/map.json", "CRM_FIELD_MAP: cannot read /nowhere/map.json as JSON"),
        ("update", "CRM_FIELD_MAP", "{map}", "names unknown columns: ['deal_price']"),
    ],
)
def test_an_unusable_setting_ends_the_command_with_one_line_naming_it(
    tmp_path: Path, command: str, variable: str, value: str, says: str
) -> None:
    field_map = tmp_path / "map.json"
    field_map.write_text(json.dumps({"deals": {"deal_price": "amount"}}))
    env = _env(tmp_path, DAGSTER_HOME=str(tmp_path / "home"), **{variable: value.format(map=field_map)})
    update = ("--domain", "deals", "--key", "deal_id", "--value", "1", "--key-to-update", "deal_size")
    args = (command, *update, "--update-value", "5", "--dry-run") if command == "update" else (command,)
    result = subprocess.run([CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert _last_line(result.stderr).startswith("error: ") and says in _last_line(result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 2, result.stderr
    assert not (tmp_path / "home").exists(), "refused before the instance was even created: no run was started"


def _slow_crm_env(tmp_path: Path, url: str) -> dict[str, str]:
    return _env(
        tmp_path,
        DAGSTER_HOME=str(tmp_path / "home"),
        CRM_BASE_URL=url,
        CRM_API_KEY=DEMO_API_KEY,
        CRM_RATE_LIMIT_PER_MINUTE="0",
        CRM_RATE_LIMIT_PER_HOUR="0",
        CRM_REPORTS_START_DATE="2026-06-01",
    )


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_until_it_reads_the_crm(
    tmp_path: Path, env: dict[str, str], *, sigint_ignored: bool = False
) -> subprocess.Popen[str]:
    command = subprocess.Popen(
        [CLI, "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # As a script's `crm-assets run &` starts it: a shell without job control ignores SIGINT for it.
        preexec_fn=_ignore_sigint if sigint_ignored else None,
    )
    assert command.stdout is not None
    for line in command.stdout:
        if "raw_accounts" in line:
            break
    time.sleep(0.5)
    return command


def _run_statuses(home: Path) -> list[tuple[str, dg.DagsterRunStatus]]:
    with instance_at(str(home)) as instance:
        return [(r.job_name, r.status) for r in reversed(instance.get_runs())]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_stops_at_once_cancels_its_run_and_the_next_one_finishes(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """Dagster executing in the command's main thread held Ctrl-C back (or retried the step 30 s later) and
    the run went on; a supervisor's SIGTERM likewise."""
    demo = DemoCrm(DemoConfig(accounts=20, contacts=60, deals=200, seed=5, api_key=DEMO_API_KEY))
    with serve_demo_crm(demo) as url:
        env = _slow_crm_env(tmp_path, url)
        demo.faults = Faults(slow_seconds=20)  # the CRM hangs: the sync waits on its first answer
        command = _run_until_it_reads_the_crm(tmp_path, env)
        if stop is signal.SIGINT:  # a terminal's Ctrl-C: the whole group, Dagster's log-capture helpers too
            os.killpg(command.pid, stop)
        else:  # a supervisor stopping the command
            command.send_signal(stop)
        started = time.monotonic()
        rest = command.communicate(timeout=60)[0]
        assert command.returncode == 130, rest
        assert time.monotonic() - started < 10, "the command stops at once, not when the CRM answers"
        assert _last_line(rest).startswith("interrupted: run ") and "Traceback" not in rest, rest
        assert "running the same command again resumes" in _last_line(rest)
        assert _run_statuses(tmp_path / "home") == [("crm_sync", dg.DagsterRunStatus.CANCELED)]

        demo.faults = Faults()
        again = _cli(tmp_path, env, "run")
    assert "aggregation runs: 3" in again.stdout


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of the running processes that mention `text` (zombies have none)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if text in line:
            found.append(line)
    return found


def test_sigterm_stops_a_command_started_with_sigint_ignored_and_leaves_no_helper(tmp_path: Path) -> None:
    """Python keeps an inherited SIG_IGN for SIGINT, and Dagster gives SIGTERM SIGINT's handler while it
    executes: the command ignored a supervisor's SIGTERM, and the log-capture `tail`s it started could not
    be stopped either (each run then waited 2 x 30 s for them and left them behind)."""
    demo = DemoCrm(DemoConfig(accounts=20, contacts=60, deals=200, seed=5, api_key=DEMO_API_KEY))
    with serve_demo_crm(demo) as url:
        env = _slow_crm_env(tmp_path, url)
        demo.faults = Faults(slow_seconds=20)
        command = _run_until_it_reads_the_crm(tmp_path, env, sigint_ignored=True)
        command.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rest = command.communicate(timeout=60)[0]
        assert command.returncode == 130, rest
        assert time.monotonic() - started < 10, "the command stops at once, not when the CRM answers"
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(tmp_path)) == []


def test_a_run_whose_command_was_killed_is_marked_failed_by_the_next_command(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to say anything: the next command on the machine finds the run still
    "started" with its command gone, and says so, instead of the run showing as in progress forever."""
    demo = DemoCrm(DemoConfig(accounts=20, contacts=60, deals=200, seed=5, api_key=DEMO_API_KEY))
    with serve_demo_crm(demo) as url:
        env = _slow_crm_env(tmp_path, url)
        demo.faults = Faults(slow_seconds=20)
        command = _run_until_it_reads_the_crm(tmp_path, env)
        command.kill()
        command.communicate(timeout=60)
        assert _run_statuses(tmp_path / "home") == [("crm_sync", dg.DagsterRunStatus.STARTED)]

        demo.faults = Faults()
        _cli(tmp_path, env, "run")
    statuses = _run_statuses(tmp_path / "home")
    assert statuses[0] == ("crm_sync", dg.DagsterRunStatus.FAILURE)
    assert ("crm_sync", dg.DagsterRunStatus.SUCCESS) in statuses[1:]


def test_a_mass_deletion_is_refused_then_applied_with_one_flag(tmp_path: Path) -> None:
    """The README's path for the day a loss is real: the refusal names the flag, and the flag is enough."""
    demo = DemoCrm(DemoConfig(accounts=20, contacts=60, deals=200, seed=5, api_key=DEMO_API_KEY, dirty=False))
    with serve_demo_crm(demo) as url:
        env = _slow_crm_env(tmp_path, url)
        _cli(tmp_path, env, "run")
        warehouse = sa.create_engine(f"sqlite:///{tmp_path / 'home' / 'warehouse.db'}")
        before = _count(warehouse, "deals")
        for crm_id in demo.crm_ids("deals")[: before // 4]:
            demo.delete_record("deals", crm_id)
        refused = subprocess.run([CLI, "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 1 and "crm-assets run --allow-mass-delete" in _last_line(refused.stderr)
        assert _count(warehouse, "deals") == before, "nothing was deleted"
        _cli(tmp_path, env, "run", "--allow-mass-delete")
        assert _count(warehouse, "deals") == before - before // 4
        warehouse.dispose()


@pytest.mark.postgres
def test_pointing_one_instance_at_a_new_warehouse_fills_that_warehouse_completely(tmp_path: Path) -> None:
    """`make run` on SQLite, then the README's production recipe (DATABASE_URL) with the same Dagster home: the
    instance remembers the partitions it computed in the first warehouse, and the second must still get every
    aggregation, not only the partitions the instance has not seen."""
    url = create_pg_database("crm_assets_switch")
    try:
        env = _env(tmp_path, DAGSTER_HOME=str(tmp_path / "home"), CRM_REPORTS_START_DATE="2026-01-01")
        _cli(tmp_path, env, "run")
        _cli(tmp_path, env | {"DATABASE_URL": url}, "run")
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            for cadence in Cadence:
                partitions = set(build_partitions("2026-01-01")[cadence].get_partition_keys())  # open one excluded
                reported = [m for m in mismatches_with_deals(conn, cadence) if m.window.isoformat() in partitions]
                assert reported == [], (cadence, sorted({m.window for m in reported}), len(reported))
        assert _count(engine, "deal_aggregations") > 0
        engine.dispose()
    finally:
        drop_pg_database(url)
