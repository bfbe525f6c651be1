"""Each environment variable is read in crm_assets/settings.py, when the code that needs it runs."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from crm_assets import settings
from crm_assets.definitions import defs
from crm_assets.defs.reports.partitions import report_partitions
from crm_assets.reports.windows import Cadence

PACKAGE = Path(settings.__file__).parent
# A read of the environment: os.environ.get(...), os.getenv(...), or os.environ[...] not being assigned.
ENVIRONMENT_READ = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^\]]+\](?!\s*=)")


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "settings.py" and ENVIRONMENT_READ.search(path.read_text())
    ]
    assert readers == []


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (settings.DATABASE_URL, settings.CRM_EXPORT_DIR, settings.CRM_FIELD_MAP, settings.DAGSTER_HOME):
        monkeypatch.setenv(name, "")
    assert settings.database_url() is None
    assert settings.export_dir() == "output"
    assert settings.field_map_path() is None
    assert settings.dagster_home() == Path(".crm_assets/dagster_home")


def test_a_bad_start_date_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.CRM_REPORTS_START_DATE, "2024-13-01")
    with pytest.raises(ValueError, match=r"CRM_REPORTS_START_DATE must be a date like 2023-01-01, got '2024-13-01'"):
        settings.reports_start_date()


def test_the_definitions_read_the_start_date_when_built(configuration_env: pytest.MonkeyPatch) -> None:
    configuration_env.setenv(settings.CRM_REPORTS_START_DATE, " 2025-03-01 ")
    graph = defs().resolve_asset_graph()
    for name in ("deal_aggregations_daily", "pipeline_daily"):
        partitions = graph.get(dg.AssetKey(name)).partitions_def
        assert partitions is not None and partitions.get_first_partition_key() == "2025-03-01", name
    assert report_partitions()[Cadence.MONTHLY].get_first_partition_key() == "2025-03-01"
