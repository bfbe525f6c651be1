"""The production deployment end to end: code server, webserver and daemon as real processes on PostgreSQL.

Drives everything through the webserver's GraphQL API (as the UI does), then looks at the UI in headless
Chromium. Screenshots and service logs land in crm_assets_tests/e2e_artifacts/ (git-ignored).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from sqlalchemy.engine import Engine

from crm_assets.warehouse.engine import create_warehouse_engine
from crm_assets.warehouse.schema import CLEAN_TABLES, RAW_TABLES, crm_update_audit, deal_aggregations
from crm_assets_tests.conftest import PG_ADMIN_DSN, create_pg_database, drop_pg_database
from crm_assets_tests.e2e.services import GraphQL, ServiceError, ServiceGroup, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "crm_assets_tests" / "e2e_artifacts"
CODE_MODULE = "crm_assets.definitions"
LOCATION = "crm_assets"
REPOSITORY = "__repository__"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
RUN_TIMEOUT_S = 300.0
# The backfill daemon wakes every 30 s; a short backfill still needs one or two of its ticks.
BACKFILL_TIMEOUT_S = 300.0
BIN = Path(sys.executable).parent
UI_TIMEOUT_MS = 60_000
# Two months of partitions: enough for the seven-day backfill, short for the CLI run's first aggregation.
REPORTS_START = (datetime.now(UTC).date() - timedelta(days=60)).isoformat()

REQUIRED_ASSETS = {"raw_accounts", "raw_contacts", "raw_deals", "accounts", "contacts", "deals", "crm_exports"}
AGGREGATION_ASSETS = {"deal_aggregations_daily", "deal_aggregations_weekly", "deal_aggregations_monthly"}
REQUIRED_JOBS = {"crm_sync", "update_domain_value"}
REQUIRED_SCHEDULES = {"crm_sync_daily"}
DAILY = "deal_aggregations_daily"

WORKSPACE_QUERY = """
query { workspaceOrError { __typename
  ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } }
  ... on PythonError { message } } }
"""
RELOAD_MUTATION = """
mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename } }
"""
REPOSITORIES_QUERY = """
query { repositoriesOrError { __typename
  ... on RepositoryConnection { nodes { name location { name }
      jobs { name } schedules { name } sensors { name } assetNodes { assetKey { path } groupName } } }
  ... on PythonError { message } } }
"""
PARTITION_KEYS_QUERY = """
query($key: AssetKeyInput!) { assetNodes(assetKeys: [$key]) { partitionKeys } }
"""
LAUNCH_BACKFILL_MUTATION = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) { __typename
  ... on LaunchBackfillSuccess { backfillId }
  ... on PythonError { message } ... on PartitionKeysNotFoundError { message }
  ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }
"""
BACKFILL_QUERY = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status numPartitions error { message } runs(limit: 100) { id status } }
  ... on PythonError { message } } }
"""
RUN_ERRORS_QUERY = """
query($id: ID!) { logsForRun(runId: $id) { __typename
  ... on EventConnection { events { __typename ... on MessageEvent { message level }
      ... on EngineEvent { error { message } } ... on RunFailureEvent { error { message } } } } } }
"""
RUN_COUNT_QUERY = """
query($job: String!) { runsOrError(filter: {pipelineName: $job}) { __typename ... on Runs { count } } }
"""
CLI_RUNS_QUERY = """
query { runsOrError(limit: 1,
    filter: {pipelineName: "crm_sync", tags: [{key: "crm_assets/launched_by", value: "cli"}]}) {
  __typename ... on Runs { results { runId } } } }
"""
DAEMON_HEALTH_QUERY = """
query { instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }
"""


@dataclass
class Stack:
    """The running deployment and what the test needs to talk to it."""

    graphql: GraphQL
    client: DagsterGraphQLClient
    services: ServiceGroup
    warehouse: Engine
    webserver_url: str


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + "; CI requires it", pytrace=False)
    pytest.skip(message)


def _service_env(storage_db: str, warehouse_url: str, home: Path, code_port: int) -> dict[str, str]:
    """The parent's environment minus any CRM or Dagster settings, plus the deployment's."""
    admin = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "DAGSTER_", "DATABASE_URL"))}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_HOST=str(admin.get("host") or "127.0.0.1"),
        DAGSTER_PG_PORT=str(admin.get("port") or "5432"),
        DAGSTER_PG_USER=str(admin.get("user") or "postgres"),
        DAGSTER_PG_PASSWORD=str(admin.get("password") or ""),
        DAGSTER_PG_DB=storage_db,
        DAGSTER_CODE_SERVER_HOST="127.0.0.1",
        DAGSTER_CODE_SERVER_PORT=str(code_port),
        DAGSTER_EVENT_BATCH_SIZE="100",
        DATABASE_URL=warehouse_url,
        CRM_EXPORT_DIR=str(home / "exports"),
        CRM_REPORTS_START_DATE=REPORTS_START,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


def _location_loaded(graphql: GraphQL, last_error: list[str]) -> bool | None:
    """True once the location is loaded; asks the webserver to reload it while the code server starts."""
    data = graphql(WORKSPACE_QUERY)["workspaceOrError"]
    if data["__typename"] != "Workspace":
        raise ServiceError(f"workspace failed to load: {data}")
    entry = next((e for e in data["locationEntries"] if e["name"] == LOCATION), None)
    if entry is None:
        raise ServiceError(f"location {LOCATION} is not in the workspace: {data}")
    loaded = entry["locationOrLoadError"]
    if loaded and loaded["__typename"] == "RepositoryLocation":
        return True
    if entry["loadStatus"] == "LOADED":
        last_error[:] = [str((loaded or {}).get("message", loaded))[-3000:]]
        graphql(RELOAD_MUTATION, {"name": LOCATION})
    return None


def _start_services(group: ServiceGroup, web_port: int, code_port: int) -> GraphQL:
    workspace = str(REPO_ROOT / "workspace.grpc.yaml")
    group.start(
        "code_server",
        [str(BIN / "dagster"), "code-server", "start", "-m", CODE_MODULE, "-a", "defs", "-h", "127.0.0.1",
         "-p", str(code_port), "--location-name", LOCATION],
    )  # fmt: skip
    group.start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", workspace])
    graphql = GraphQL(f"http://127.0.0.1:{web_port}")

    def alive_and(probe: Any) -> Any:
        group.check_alive()
        return probe()

    wait_for(lambda: alive_and(graphql.server_info), "the webserver's /server_info")
    load_error: list[str] = []
    try:
        wait_for(lambda: alive_and(lambda: _location_loaded(graphql, load_error)), "the code location", interval=2.0)
    except ServiceError as exc:
        raise ServiceError(f"{exc}\nlast load error of {LOCATION}: {load_error}") from None
    # The daemon loads the workspace once at start and then only every 60 s: start it on a ready location.
    group.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace])
    return graphql


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _require_chromium()
    storage_url = create_pg_database("crm_assets_e2e_dagster")
    warehouse_url = create_pg_database("crm_assets_e2e_warehouse")
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    log_dir = ARTIFACTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    web_port, code_port = free_port(), free_port()
    env = _service_env(storage_url.rsplit("/", 1)[1], warehouse_url, home, code_port)
    group = ServiceGroup(env=env, cwd=REPO_ROOT, log_dir=log_dir)
    warehouse = create_warehouse_engine(warehouse_url)
    graphql: GraphQL | None = None
    try:
        graphql = _start_services(group, web_port, code_port)
        client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)
        yield Stack(graphql, client, group, warehouse, graphql.base_url)
    except ServiceError as exc:
        raise ServiceError(f"{exc}\n{group.logs()}") from None
    finally:
        group.stop_all()
        if graphql is not None:
            graphql.close()
        warehouse.dispose()
        drop_pg_database(warehouse_url)
        drop_pg_database(storage_url)


def _expected_definitions() -> tuple[set[str], set[str], set[str], set[str]]:
    """Asset keys, jobs, schedules and sensors of the code location, read in this process."""
    defs = importlib.import_module(CODE_MODULE).defs()
    assert isinstance(defs, dg.Definitions)
    repo = defs.get_repository_def()
    assets = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    jobs = {job.name for job in repo.get_all_jobs()}
    return assets, jobs, {s.name for s in repo.schedule_defs}, {s.name for s in repo.sensor_defs}


def _loaded_definitions(graphql: GraphQL) -> tuple[set[str], set[str], set[str], set[str]]:
    data = graphql(REPOSITORIES_QUERY)["repositoriesOrError"]
    assert data["__typename"] == "RepositoryConnection", data
    repos = [r for r in data["nodes"] if r["location"]["name"] == LOCATION]
    assert [r["name"] for r in repos] == [REPOSITORY]
    repo = repos[0]
    assets = {"/".join(node["assetKey"]["path"]) for node in repo["assetNodes"]}
    return (
        assets,
        {j["name"] for j in repo["jobs"]},
        {s["name"] for s in repo["schedules"]},
        {s["name"] for s in repo["sensors"]},
    )


def _run_errors(stack: Stack, run_id: str) -> str:
    data = stack.graphql(RUN_ERRORS_QUERY, {"id": run_id})["logsForRun"]
    events = data.get("events", [])
    lines = [e["message"] for e in events if e.get("level") in ("ERROR", "CRITICAL")]
    lines += [e["error"]["message"] for e in events if e.get("error")]
    return "\n".join(lines)[-4000:]


def _wait_for_run(stack: Stack, run_id: str) -> dg.DagsterRunStatus:
    terminal = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

    def finished() -> dg.DagsterRunStatus | None:
        stack.services.check_alive()
        status = stack.client.get_run_status(run_id)
        return status if status in terminal else None

    return wait_for(finished, f"run {run_id}", timeout=RUN_TIMEOUT_S, interval=1.0)


def _launch_and_wait(stack: Stack, job: str, run_config: dict[str, Any] | None = None) -> str:
    run_id = stack.client.submit_job_execution(
        job, repository_location_name=LOCATION, repository_name=REPOSITORY, run_config=run_config
    )
    status = _wait_for_run(stack, run_id)
    assert status == dg.DagsterRunStatus.SUCCESS, f"{job} run {run_id}: {status}\n{_run_errors(stack, run_id)}"
    return run_id


def _row_count(engine: Engine, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(table).where(*where)) or 0)


def _backfill_window(stack: Stack) -> list[str]:
    """Seven consecutive daily partitions ending on the day of the newest deal (or the newest partition)."""
    nodes = stack.graphql(PARTITION_KEYS_QUERY, {"key": {"path": [DAILY]}})["assetNodes"]
    keys: list[str] = nodes[0]["partitionKeys"]
    assert len(keys) >= 7, f"{DAILY} has only {len(keys)} partitions"
    deals = CLEAN_TABLES["deals"]
    with stack.warehouse.connect() as conn:
        newest = conn.scalar(sa.select(sa.func.max(deals.c.created_at)))
    newest_day = _utc(newest).date().isoformat() if newest is not None else None
    last = keys.index(newest_day) if newest_day in keys else None
    end = (last if last is not None and last >= 6 else len(keys) - 1) + 1
    return keys[end - 7 : end]


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive UTC; PostgreSQL an aware value in the session's time zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _launch_backfill(stack: Stack, partitions: list[str]) -> str:
    params = {
        "partitionsByAssets": [
            {"assetKey": {"path": [DAILY]}, "partitions": {"range": {"start": partitions[0], "end": partitions[-1]}}}
        ],
        "title": "e2e: seven days of daily deal aggregations",
    }
    result = stack.graphql(LAUNCH_BACKFILL_MUTATION, {"params": params})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return str(result["backfillId"])


def _wait_for_backfill(stack: Stack, backfill_id: str) -> dict[str, Any]:
    terminal = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED", "COMPLETED"}

    def finished() -> dict[str, Any] | None:
        stack.services.check_alive()
        backfill = stack.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        return backfill if backfill["status"] in terminal else None

    backfill: dict[str, Any] = wait_for(finished, f"backfill {backfill_id}", timeout=BACKFILL_TIMEOUT_S, interval=2.0)
    return backfill


def _check_update_job(stack: Stack) -> None:
    """A dry run plans and writes nothing; config that does not fit the schema is refused at launch.

    The job takes the flat run config of SPEC section 5 (a config mapping feeds its ops).
    """
    deals = CLEAN_TABLES["deals"]
    with stack.warehouse.connect() as conn:
        deal_id, deal_size = conn.execute(sa.select(deals.c.deal_id, deals.c.deal_size).limit(1)).one()
    new_size = "24456.00" if str(deal_size) != "24456.00" else "24457.00"
    config = {
        "domain": "deals",
        "key": "deal_id",
        "value": str(deal_id),
        "key_to_update": "deal_size",
        "update_value": new_size,
        "dry_run": True,
    }
    _launch_and_wait(stack, "update_domain_value", config)
    with stack.warehouse.connect() as conn:
        assert conn.scalar(sa.select(deals.c.deal_size).where(deals.c.deal_id == deal_id)) == deal_size
    assert _row_count(stack.warehouse, crm_update_audit) == 0

    bad = {**config, "dry_run": "certainly", "no_such_field": 1}
    with pytest.raises(DagsterGraphQLClientError) as error:
        stack.client.submit_job_execution(
            "update_domain_value", repository_location_name=LOCATION, repository_name=REPOSITORY, run_config=bad
        )
    assert error.value.args[0] == "RunConfigValidationInvalid", error.value.args
    runs = stack.graphql(RUN_COUNT_QUERY, {"job": "update_domain_value"})["runsOrError"]
    assert runs["count"] == 1, "the refused launch must not create a run"


def _expect_texts(page: Any, names: list[str], screenshot: Path) -> None:
    """Every name is visible on the page; the screenshot is taken either way, for the CI artifacts."""
    from playwright.sync_api import expect

    try:
        for name in names:
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    finally:
        page.screenshot(path=str(screenshot), full_page=True)


def _asset_groups(graphql: GraphQL) -> dict[str, list[str]]:
    data = graphql(REPOSITORIES_QUERY)["repositoriesOrError"]
    groups: dict[str, list[str]] = {}
    for repo in data["nodes"]:
        for node in repo["assetNodes"]:
            groups.setdefault(node["groupName"], []).append("/".join(node["assetKey"]["path"]))
    return {group: sorted(names) for group, names in sorted(groups.items())}


def _cli_run(stack: Stack) -> str:
    """`crm-assets run` against the deployment's instance and warehouse; the id of its crm_sync run."""
    result = subprocess.run(
        [str(BIN / "crm-assets"), "run"],
        cwd=REPO_ROOT,
        env=dict(stack.services.env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    runs = stack.graphql(CLI_RUNS_QUERY)["runsOrError"]
    assert runs["__typename"] == "Runs" and runs["results"], f"the CLI's crm_sync run is not in the instance: {runs}"
    return str(runs["results"][0]["runId"])


def _check_ui(stack: Stack, cli_run_id: str) -> None:
    """The asset graph, one asset page and the crm_sync job page (with the CLI's run) render in a real
    browser; screenshots go to e2e_artifacts/."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            # One asset graph per group: the global lineage view collapses each group to a single box.
            for group, names in _asset_groups(stack.graphql).items():
                page.goto(f"{stack.webserver_url}/locations/{LOCATION}/asset-groups/{group}")
                _expect_texts(page, names, ARTIFACTS / f"asset_graph_{group}.png")
            page.goto(f"{stack.webserver_url}/assets/accounts")
            _expect_texts(
                page,
                ["accounts", "Latest materialization", "raw_accounts", "crm_sync"],
                ARTIFACTS / "asset_accounts.png",
            )
            page.goto(f"{stack.webserver_url}/locations/{LOCATION}/jobs/crm_sync/runs")
            _expect_texts(page, [cli_run_id[:8]], ARTIFACTS / "job_crm_sync_runs.png")
            # Each partition's own numbers, charted by the Overview's Metadata > Plots toggle.
            _expect_partition_plots(page, f"{stack.webserver_url}/assets/{DAILY}", ("total_deal_size", "deal_count"))
        finally:
            browser.close()


def _expect_partition_plots(page: Any, url: str, keys: tuple[str, ...]) -> None:
    """Metadata > Plots shows a plot titled with each key (beside the column of the same name).

    The partitions' metadata may still be arriving from a backfill the daemon just ran: reload until it is.
    """
    from playwright.sync_api import expect

    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while True:
        page.goto(url)
        page.get_by_text("Plots", exact=True).first.click()
        expect(page.get_by_text("Loading plots")).to_have_count(0, timeout=UI_TIMEOUT_MS)
        missing = [k for k in keys if not _plot_shown(page, k)]
        if not missing or time.monotonic() > deadline:
            break
    page.screenshot(path=str(ARTIFACTS / "asset_daily_plots.png"), full_page=True)
    assert not missing, f"no plot of {missing}"


def _plot_shown(page: Any, key: str) -> bool:
    """A second element titled `key` (the plot's, beside the column's) appears within a few seconds."""
    from playwright.sync_api import expect

    try:
        expect(page.get_by_text(key, exact=True).nth(1)).to_be_attached(timeout=5_000)
    except AssertionError:
        return False
    return True


def _check_daemons_healthy(stack: Stack) -> None:
    statuses = stack.graphql(DAEMON_HEALTH_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
    unhealthy = [s["daemonType"] for s in statuses if s["required"] and not s["healthy"]]
    assert not unhealthy, f"unhealthy daemons: {unhealthy}"


def test_deployment_end_to_end(stack: Stack) -> None:
    expected = _expected_definitions()
    loaded = _loaded_definitions(stack.graphql)
    for kind, want, got in zip(("assets", "jobs", "schedules", "sensors"), expected, loaded, strict=True):
        assert got == want, (
            f"{kind} in the running location differ from the code: missing {want - got}, extra {got - want}"
        )
    assets, jobs, schedules, _sensors = loaded
    assert assets >= REQUIRED_ASSETS and jobs >= REQUIRED_JOBS and schedules >= REQUIRED_SCHEDULES

    _launch_and_wait(stack, "crm_sync")
    cli_run_id = _cli_run(stack)  # the README's command, on the same instance: its run lists on the job page
    for domain in CLEAN_TABLES:
        assert _row_count(stack.warehouse, RAW_TABLES[domain]) > 0, f"raw {domain} is empty"
        assert _row_count(stack.warehouse, CLEAN_TABLES[domain]) > 0, f"{domain} is empty"

    # The aggregation layer is optional only while it is being built; once any of it exists, all of it must.
    backfill_id = None
    if assets & AGGREGATION_ASSETS:
        assert assets >= AGGREGATION_ASSETS, f"missing aggregation assets: {AGGREGATION_ASSETS - assets}"
        window = _backfill_window(stack)
        backfill_id = _launch_backfill(stack, window)

    # While the backfill daemon wakes up (every 30 s), exercise the update job and the UI.
    _check_update_job(stack)
    _check_ui(stack, cli_run_id)

    if backfill_id is not None:
        backfill = _wait_for_backfill(stack, backfill_id)
        errors = "\n".join(_run_errors(stack, run["id"]) for run in backfill["runs"] if run["status"] != "SUCCESS")
        assert backfill["status"] == "COMPLETED_SUCCESS", f"{backfill}\n{errors}"
        # A retried run would hide a failure behind dagster.yaml's run retries.
        assert [run["status"] for run in backfill["runs"]] == ["SUCCESS"], f"{backfill['runs']}\n{errors}"
        assert backfill["numPartitions"] == 7, backfill
        first, last = date.fromisoformat(window[0]), date.fromisoformat(window[-1])
        in_window = [
            deal_aggregations.c.aggregation_type == "daily",
            deal_aggregations.c.aggregation_date.between(first, last),
        ]
        deals = CLEAN_TABLES["deals"]
        with stack.warehouse.connect() as conn:
            deals_in_window = conn.scalar(
                sa.select(sa.func.count())
                .select_from(deals)
                .where(
                    deals.c.created_at >= _day_start(first),
                    deals.c.created_at < _day_start(last + timedelta(days=1)),
                )
            )
        assert (_row_count(stack.warehouse, deal_aggregations, *in_window) > 0) == bool(deals_in_window)

    _check_daemons_healthy(stack)
