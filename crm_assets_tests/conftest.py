"""Shared fixtures: throwaway warehouse databases on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from sqlalchemy.engine import Engine

from crm_assets.defs.instance import LOCAL_INSTANCE_CONFIG
from crm_assets.defs.reports.partitions import report_partitions
from crm_assets.domains import configured_domains
from crm_assets.warehouse.engine import create_warehouse_engine, migrate

PG_ADMIN_DSN = os.environ.get("CRM_ASSETS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_unavailable(reason: str) -> None:
    """In CI a test that needs PostgreSQL fails; on a laptop without it, it skips and says why."""
    message = f"PostgreSQL is not reachable at {PG_ADMIN_DSN} ({reason})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + "; CI requires it", pytrace=False)
    pytest.skip(message)


def create_pg_database(prefix: str = "crm_assets_test", options: str = "") -> str:
    """A fresh, empty database (`options`: what CREATE DATABASE takes after its name); returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}" {options}')
    except psycopg.OperationalError as exc:
        _pg_unavailable(str(exc).strip().splitlines()[0])
    admin = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    host, port, user = (
        admin.get("host", "127.0.0.1"),
        admin.get("port", "5432"),
        admin.get("user", "postgres"),
    )
    return f"postgresql+psycopg://{user}@{host}:{port}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def instance_at(home: Path | str) -> Iterator[dg.DagsterInstance]:
    """The Dagster instance of a home, opened as a Dagster process opens it: with DAGSTER_HOME naming it
    (the local instance's event log finds its folder there)."""
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved


def local_and_plain_homes(folder: Path) -> tuple[Path, Path]:
    """Two new Dagster homes in `folder`: one with the dagster.yaml crm-assets writes (its local event log),
    one without (Dagster's default SQLite storage)."""
    local, plain = folder / "local", folder / "plain"
    for home in (local, plain):
        home.mkdir()
    (local / "dagster.yaml").write_text(LOCAL_INSTANCE_CONFIG)
    return local, plain


def _forget_configuration() -> None:
    configured_domains.cache_clear()
    report_partitions.cache_clear()


@pytest.fixture
def configuration_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set variables on it and the configuration read once per process (the field map, the reports' start
    date) is read anew from them; forgotten again afterwards, so later tests read the real environment."""
    _forget_configuration()
    yield monkeypatch
    _forget_configuration()


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest) -> str:
    """The same test on both first-class databases."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def warehouse_engine(warehouse_url: str) -> Iterator[Engine]:
    engine = create_warehouse_engine(warehouse_url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance."""
    with dg.instance_for_test() as test_instance:
        yield test_instance
