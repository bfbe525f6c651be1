"""Configuration mistakes fail at once, name the setting, say what is wrong and what is supported."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from crm_assets.defs.sync.assets import raw_assets
from crm_assets.resources import CrmResource, WarehouseResource, crm_resource_from_env
from crm_assets.warehouse.engine import WarehouseConfigError, validate_database_url

SUPPORTED = "crm-assets supports PostgreSQL (postgresql+psycopg://"


@pytest.mark.parametrize(
    ("url", "wrong"),
    [
        ("postgresql://crm:hunter2@db.internal:notaport/crm", "is malformed: its port is not a number"),
        ("db.internal/crm?password=hunter2", "is not a database URL"),
        ("", "is not a database URL"),
        ("mysql://crm:hunter2@db.internal/crm", "uses mysql://, which crm-assets does not support"),
        ("postgresql+psycopg2://crm:hunter2@db.internal/crm", "uses postgresql+psycopg2://"),
        ("postgresql://crm:hunter2@db.internal:70000/crm", "has port 70000, outside 1-65535"),
    ],
)
def test_a_bad_database_url_names_the_variable_the_fault_and_what_is_supported(url: str, wrong: str) -> None:
    with pytest.raises(WarehouseConfigError) as caught:
        validate_database_url(url)
    message = str(caught.value)
    assert message.startswith(f"DATABASE_URL {wrong}")
    assert SUPPORTED in message and "SQLite (sqlite:///" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url",
    ["postgresql://crm@db.internal:5432/crm", "postgres:///crm", "postgresql+psycopg://h/crm", "sqlite:////tmp/w.db"],
)
def test_supported_database_urls_pass(url: str) -> None:
    assert validate_database_url(url).database is not None


def test_the_warehouse_resource_fails_without_retry_on_an_unsupported_url() -> None:
    with pytest.raises(dg.Failure) as caught:
        WarehouseResource(url="mysql://crm:hunter2@localhost/crm").get_engine()
    assert caught.value.allow_retries is False
    assert "uses mysql://" in str(caught.value.description) and "hunter2" not in str(caught.value.description)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"api_key": None}, "CRM_BASE_URL is set but CRM_API_KEY is not"),
        ({"base_url": "acme.myfreshworks.com/crm/sales"}, "CRM_BASE_URL must be an http:// or https:// URL"),
        ({"api_key": "two words"}, "CRM_API_KEY contains spaces"),
        ({"rate_limit_per_minute": -5}, "CRM_RATE_LIMIT_PER_MINUTE is -5: it must be a whole number of requests"),
        ({"rate_limit_per_hour": -1}, "CRM_RATE_LIMIT_PER_HOUR is -1"),
    ],
)
def test_crm_settings_fail_without_retry_naming_the_variable(settings: dict[str, object], expected: str) -> None:
    options: dict[str, object] = {"base_url": "https://acme.myfreshworks.com/crm/sales", "api_key": "k-123"}
    options.update(settings)
    with pytest.raises(dg.Failure) as caught:
        CrmResource(**options).get_client()  # type: ignore[arg-type]
    assert caught.value.allow_retries is False
    assert expected in str(caught.value.description)


@pytest.mark.parametrize("raw", ["400/min", "-3", "1.5"])
def test_bad_rate_limit_variables_fail_before_any_run(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CRM_RATE_LIMIT_PER_HOUR", raw)
    with pytest.raises(ValueError, match=rf"CRM_RATE_LIMIT_PER_HOUR is '{raw}': it must be a whole number"):
        crm_resource_from_env()


def test_a_missing_api_key_fails_the_raw_step_at_once(tmp_path: Path) -> None:
    """Before: the step was retried after 30 s and ended 'Exceeded max_retries'."""
    crm = CrmResource(base_url="https://acme.myfreshworks.com/crm/sales", api_key=None)
    warehouse = WarehouseResource(url=f"sqlite:///{tmp_path / 'w.db'}")
    started = time.monotonic()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_assets()[0]], resources={"crm": crm, "warehouse": warehouse}, instance=instance, raise_on_error=False
        )
    assert not result.success
    assert time.monotonic() - started < 20
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "CRM_API_KEY is not" in str(failure.step_failure_data.user_failure_data.description)  # type: ignore[union-attr]
