"""Dagster resources: the CRM client and the warehouse, configured from the environment."""

from __future__ import annotations

import logging
import os
from functools import cache
from pathlib import Path

import dagster as dg
import httpx
from pydantic import Field
from sqlalchemy.engine import Engine

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.warehouse.engine import (
    WarehouseConnectionError,
    create_warehouse_engine,
    default_database_url,
    migrate,
    safe_url,
)

DEFAULT_RATE_LIMIT_PER_MINUTE = 400  # Freshsales Growth plan
DEFAULT_RATE_LIMIT_PER_HOUR = 1000


class CrmResource(dg.ConfigurableResource):
    """Freshsales API access; the embedded demo CRM when no base URL is configured."""

    base_url: str | None = Field(
        default=None,
        description="Freshsales base, e.g. https://acme.myfreshworks.com/crm/sales. Unset: the embedded demo CRM.",
    )
    api_key: str | None = Field(default=None, description="Freshsales API key (CRM_API_KEY). A secret.")
    rate_limit_per_minute: int = Field(default=DEFAULT_RATE_LIMIT_PER_MINUTE, description="0 turns it off")
    rate_limit_per_hour: int = Field(default=DEFAULT_RATE_LIMIT_PER_HOUR, description="0 turns it off")
    max_concurrency: int = Field(default=4, description="Page requests in flight at once")

    @property
    def uses_demo(self) -> bool:
        return not self.base_url

    def get_client(self, log: logging.Logger | None = None) -> FreshsalesClient:
        log = log or logging.getLogger("crm_assets.crm")
        if self.uses_demo:
            from crm_assets.demo_crm import DEMO_API_KEY, DEMO_BASE_URL, embedded_demo_crm

            log.warning(
                "CRM_BASE_URL is not set: reading the embedded demo CRM (synthetic data). "
                "Set CRM_BASE_URL and CRM_API_KEY to sync a real Freshsales account."
            )
            # No account budget to protect in process: the limiter would only slow large local runs.
            return self._client(DEMO_BASE_URL, DEMO_API_KEY, log, embedded_demo_crm().transport(), limited=False)
        if not self.api_key:
            raise dg.Failure(
                description="CRM_BASE_URL is set but CRM_API_KEY is not: set CRM_API_KEY to your Freshsales "
                "API key (Profile settings > API settings)."
            )
        return self._client(self.base_url or "", self.api_key, log, None, limited=True)

    def _client(
        self, base_url: str, api_key: str, log: logging.Logger, transport: httpx.BaseTransport | None, limited: bool
    ) -> FreshsalesClient:
        return FreshsalesClient(
            base_url,
            api_key,
            transport=transport,
            rate_limit_per_minute=self.rate_limit_per_minute if limited else 0,
            rate_limit_per_hour=self.rate_limit_per_hour if limited else 0,
            max_concurrency=self.max_concurrency,
            log=log,
        )


@cache
def _migrated_engine(url: str) -> Engine:
    engine = create_warehouse_engine(url)
    migrate(engine)
    return engine


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse database: PostgreSQL in production, an embedded SQLite file by default."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (DATABASE_URL). Unset: SQLite under $DAGSTER_HOME or ./.crm_assets/.",
    )

    @property
    def resolved_url(self) -> str:
        return self.url or default_database_url()

    @property
    def display_url(self) -> str:
        return safe_url(self.resolved_url)

    def get_engine(self) -> Engine:
        """An engine on a schema brought up to date once per process."""
        try:
            return _migrated_engine(self.resolved_url)
        except WarehouseConnectionError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def crm_resource_from_env() -> CrmResource:
    """Secrets go through EnvVar so they never land in run config or metadata."""
    configured = bool(os.environ.get("CRM_BASE_URL"))
    return CrmResource(
        base_url=dg.EnvVar("CRM_BASE_URL") if configured else None,
        api_key=dg.EnvVar("CRM_API_KEY") if os.environ.get("CRM_API_KEY") else None,
        rate_limit_per_minute=_env_int("CRM_RATE_LIMIT_PER_MINUTE", DEFAULT_RATE_LIMIT_PER_MINUTE),
        rate_limit_per_hour=_env_int("CRM_RATE_LIMIT_PER_HOUR", DEFAULT_RATE_LIMIT_PER_HOUR),
    )


def warehouse_resource_from_env() -> WarehouseResource:
    return WarehouseResource(url=dg.EnvVar("DATABASE_URL") if os.environ.get("DATABASE_URL") else None)


def export_dir_from_env() -> str:
    return os.environ.get("CRM_EXPORT_DIR") or "output"


class ExportDirectory(dg.ConfigurableResource):
    """Where output files go (CRM_EXPORT_DIR): the dated JSON/CSV exports, and the charts under charts/."""

    path: str = Field(default="output", description="Folder for the dated JSON/CSV files; charts go to charts/")

    @property
    def folder(self) -> Path:
        return Path(self.path).resolve()

    @property
    def charts_path(self) -> Path:
        return self.folder / "charts"
