"""Every environment variable crm-assets reads, each read here and only here, when its function is called.

Nothing reads the environment at import: the code location reads it when Dagster builds the definitions
(crm_assets.definitions), a step when it runs. A variable set to the empty string counts as unset.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Final

from crm_assets.contracts import DEFAULT_DAGSTER_HOME

DATABASE_URL: Final = "DATABASE_URL"
DAGSTER_HOME: Final = "DAGSTER_HOME"
CRM_BASE_URL: Final = "CRM_BASE_URL"
CRM_API_KEY: Final = "CRM_API_KEY"
CRM_RATE_LIMIT_PER_MINUTE: Final = "CRM_RATE_LIMIT_PER_MINUTE"
CRM_RATE_LIMIT_PER_HOUR: Final = "CRM_RATE_LIMIT_PER_HOUR"
CRM_EXPORT_DIR: Final = "CRM_EXPORT_DIR"
CRM_FIELD_MAP: Final = "CRM_FIELD_MAP"
CRM_REPORTS_START_DATE: Final = "CRM_REPORTS_START_DATE"

DEFAULT_EXPORT_DIR: Final = "output"
# Early enough for the demo data (about three years back from late 2026); set the variable for real data.
DEFAULT_REPORTS_START_DATE: Final = "2023-01-01"
RATE_LIMIT_RULE: Final = (
    "it must be a whole number of requests, 0 to turn that limit off (Freshsales Growth: 400 a minute, 1000 an hour)"
)


class SettingsError(ValueError):
    """An environment variable's value is unusable: the message names the variable, the value and the rule."""


def _read(name: str) -> str | None:
    return os.environ.get(name) or None


def is_set(name: str) -> bool:
    """Whether the variable has a value: the resources then bind it through dg.EnvVar (secrets, the CRM and
    the warehouse), so its value stays out of run config and job snapshots."""
    return _read(name) is not None


def crm_base_url() -> str | None:
    """CRM_BASE_URL: the Freshsales account; None for the embedded demo CRM. The resources bind it through
    dg.EnvVar; this read is for checking it before a command starts any run."""
    return _read(CRM_BASE_URL)


def crm_api_key() -> str | None:
    """CRM_API_KEY, a secret: only for checking it before a command starts any run (see crm_base_url)."""
    return _read(CRM_API_KEY)


def database_url() -> str | None:
    """DATABASE_URL: the warehouse; None for the SQLite file under the Dagster home."""
    return _read(DATABASE_URL)


def dagster_home() -> Path:
    """$DAGSTER_HOME, else ./.crm_assets/dagster_home (relative to the working directory, not resolved)."""
    return Path(_read(DAGSTER_HOME) or DEFAULT_DAGSTER_HOME)


def rate_limit(name: str, default: int) -> int:
    """A CRM rate limit: a whole number >= 0; anything else is an error before any run starts."""
    raw = _read(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise SettingsError(f"{name} is {raw!r}: {RATE_LIMIT_RULE}")
    return value


def export_dir() -> str:
    """CRM_EXPORT_DIR, or ./output."""
    return _read(CRM_EXPORT_DIR) or DEFAULT_EXPORT_DIR


def field_map_path() -> str | None:
    """CRM_FIELD_MAP: the tenant's field-map JSON file (see crm_assets.domains); None for the declared fields."""
    return _read(CRM_FIELD_MAP)


def reports_start_date() -> str:
    """CRM_REPORTS_START_DATE (YYYY-MM-DD): the first partition of the reports; 2023-01-01 when unset."""
    raw = (_read(CRM_REPORTS_START_DATE) or "").strip() or DEFAULT_REPORTS_START_DATE
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        raise SettingsError(f"{CRM_REPORTS_START_DATE} must be a date like 2023-01-01, got {raw!r}") from None
