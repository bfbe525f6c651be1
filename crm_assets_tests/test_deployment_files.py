"""The deployment files: Dockerfile lint, compose structure, dagster.yaml as a Dagster instance config.

No Docker engine runs here, so docker-compose.yml is checked as data: services, commands, health checks,
dependencies and that no secret is written into it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from crm_assets_tests.conftest import create_pg_database, drop_pg_database

REPO_ROOT = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).parent / "hadolint"
DAGSTER_SERVICES = {"code_server", "webserver", "daemon"}
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def _yaml(name: str) -> Any:
    return yaml.safe_load((REPO_ROOT / name).read_text())


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_shape() -> None:
    instructions = _instructions()
    kinds = [kind for kind, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim-bookworm")
    user = next(args for kind, args in instructions if kind == "USER")
    assert user.split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in kinds
    env = " ".join(args for kind, args in instructions if kind == "ENV")
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in env
    assert "DAGSTER_EVENT_BATCH_SIZE=100" in env
    assert "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true" in env
    copies = [args for kind, args in instructions if kind == "COPY"]
    assert "dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in copies
    # Cache-friendly: the pinned dependencies are installed before any source is copied.
    lock_install = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "requirements.lock" in a)
    first_source = next(i for i, (k, a) in enumerate(instructions) if k == "COPY" and "crm_assets" in a)
    assert lock_install < first_source
    project_install = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "--no-deps ." in a)
    assert project_install > first_source


def test_dockerignore_keeps_local_state_out() -> None:
    rules = [r.strip() for r in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "*", "allow-list: everything is excluded unless re-included"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = {"requirements.lock", "pyproject.toml", "README.md", "crm_assets", "dagster.yaml"}
    assert copied | {"workspace.yaml", "workspace.grpc.yaml"} <= included
    assert not included & {".env", ".venv", ".git", ".dagster_home", ".crm_assets", "output"}


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_requirements_lock_pins_every_project_dependency() -> None:
    """The image installs from the lock: each dependency of pyproject.toml is there, at a version it allows."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    problems = []
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name}=={pinned} does not satisfy {requirement.specifier}")
    assert not problems, "regenerate requirements.lock (see its header): " + "; ".join(problems)


# --- docker-compose.yml ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml("docker-compose.yml")
    return data


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "demo_crm", *DAGSTER_SERVICES}
    for name in ("demo_crm", *DAGSTER_SERVICES):
        service = compose["services"][name]
        assert service["build"] == ".", name
        assert service["image"] == "crm-assets:latest", name


def test_compose_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert _command(services["code_server"])[:11] == [
        "dagster", "code-server", "start", "-m", "crm_assets.definitions", "-a", "defs", "-h", "0.0.0.0", "-p", "4000",
    ]  # fmt: skip
    assert _command(services["webserver"])[:1] == ["dagster-webserver"]
    assert _command(services["daemon"])[:2] == ["dagster-daemon", "run"]
    for name in ("webserver", "daemon"):
        command = _command(services[name])
        workspace = command[command.index("-w") + 1]
        assert workspace == "workspace.grpc.yaml" and (REPO_ROOT / workspace).exists()
    assert _command(services["demo_crm"]) == [
        "crm-assets", "demo-crm", "--host", "0.0.0.0", "--port", "8765",
    ]  # fmt: skip


def test_compose_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    code_env = services["code_server"]["environment"]
    assert code_env["CRM_BASE_URL"].startswith("http://demo_crm:8765/")
    assert code_env["CRM_API_KEY"] == "demo-api-key"
    assert code_env["DATABASE_URL"].startswith("postgresql+psycopg://")
    for name in DAGSTER_SERVICES:
        env = services[name]["environment"]
        assert set(PG_ENV) <= set(env), name
        assert env["DAGSTER_PG_HOST"] == "postgres"
        assert env["DAGSTER_CODE_SERVER_HOST"] == "code_server"
        assert env["DAGSTER_CODE_SERVER_PORT"] == "4000"
        assert env["DAGSTER_EVENT_BATCH_SIZE"] == "100"
        assert env["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] == "true"
    assert "3000:3000" in services["webserver"]["ports"]


def test_compose_health_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    # The webserver inherits the image's HEALTHCHECK; every other service declares its own.
    for name in ("postgres", "demo_crm", "code_server", "daemon"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"
    assert services["webserver"]["depends_on"]["code_server"]["condition"] == "service_healthy"
    assert services["daemon"]["depends_on"]["code_server"]["condition"] == "service_healthy"
    assert services["code_server"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def _strings(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            for path, text in _strings(item):
                yield f"{key}.{path}" if path else str(key), text
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield "", value


def test_compose_keeps_passwords_out_of_the_file(compose: dict[str, Any]) -> None:
    for path, text in _strings(compose["services"]):
        if "PASSWORD" in path.upper():
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", text), f"{path} must come from the environment"
        if "://" in text and "@" in text:
            userinfo = text.split("://", 1)[1].split("@", 1)[0]
            password = userinfo.split(":", 1)[1] if ":" in userinfo else ""
            assert not password or password.startswith("${"), f"{path} holds a literal password"


def test_compose_parses_with_docker_compose_when_available(tmp_path: Path) -> None:
    """`docker compose config` is the authoritative check; this machine has no compose plugin."""
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True) if docker else None
    if probe is None or probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [docker or "docker", "compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "config", "--quiet"],
        env={"POSTGRES_PASSWORD": "compose-config-check", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


# --- workspaces ---------------------------------------------------------------------------------


def test_workspaces_name_the_same_location() -> None:
    local = _yaml("workspace.yaml")["load_from"]
    grpc = _yaml("workspace.grpc.yaml")["load_from"]
    assert local == [
        {"python_module": {"module_name": "crm_assets.definitions", "attribute": "defs", "location_name": "crm_assets"}}
    ]
    assert grpc == [
        {
            "grpc_server": {
                "host": {"env": "DAGSTER_CODE_SERVER_HOST"},
                "port": {"env": "DAGSTER_CODE_SERVER_PORT"},
                "location_name": "crm_assets",
            }
        }
    ]


# --- dagster.yaml ---------------------------------------------------------------------------------


@pytest.fixture
def pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in zip(PG_ENV, ("db.example", "5432", "dagster", "not-a-real-password", "dagster"), strict=True):
        monkeypatch.setenv(name, value)


def test_dagster_yaml_is_a_valid_instance_config(pg_env: None) -> None:
    config, instance_class = dagster_instance_config(str(REPO_ROOT))
    assert instance_class is None
    postgres = config["storage"]["postgres"]["postgres_db"]
    assert postgres["scheme"] == "postgresql+psycopg2"
    assert postgres["hostname"] == {"env": "DAGSTER_PG_HOST"}
    assert postgres["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "dagster/backfill", "limit": 2} in limits
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert config["run_retries"]["enabled"] is True
    assert config["telemetry"]["enabled"] is False


def test_dagster_yaml_holds_no_literal_secrets() -> None:
    text = (REPO_ROOT / "dagster.yaml").read_text()
    for line in text.splitlines():
        if re.match(r"\s*password:", line):
            assert "{env:" in line, line


@pytest.mark.postgres
def test_dagster_yaml_loads_an_instance_on_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real thing: an instance from the repository's dagster.yaml, storing in a throwaway database."""
    url = create_pg_database("crm_assets_instance")
    try:
        host_port, db_name = url.split("@", 1)[1].rsplit("/", 1)
        host, port = host_port.split(":")
        user = url.split("://", 1)[1].split("@", 1)[0]
        for name, value in zip(PG_ENV, (host, port, user, "", db_name), strict=True):
            monkeypatch.setenv(name, value)
        shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
        with DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            run_queue = instance.get_concurrency_config().run_queue_config
            assert run_queue is not None and run_queue.max_concurrent_runs == 4
            assert instance.get_concurrency_config().pool_config.default_pool_limit == 3
            assert instance.run_monitoring_enabled
            assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
            assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300
            assert instance.get_runs_count() == 0
            instance.event_log_storage.set_concurrency_slots("crm_api", 2)
            assert instance.event_log_storage.get_concurrency_info("crm_api").slot_count == 2
    finally:
        drop_pg_database(url)
