"""Dagster resources: the CRM client and the warehouse, configured from the environment."""

from __future__ import annotations

import logging
import uuid
from functools import cache
from pathlib import Path

import dagster as dg
import httpx
import sqlalchemy as sa
from alembic.util.exc import CommandError as AlembicCommandError
from pydantic import Field
from sqlalchemy.engine import Engine

from crm_assets import settings
from crm_assets.domains import configured_domains
from crm_assets.files import write_bytes_atomically
from crm_assets.freshsales.client import FreshsalesClient, validated_api_key, validated_base_url
from crm_assets.freshsales.errors import CrmError
from crm_assets.freshsales.ratelimit import BudgetStore
from crm_assets.warehouse.budget import shared_budget_store
from crm_assets.warehouse.engine import (
    WarehouseConfigError,
    WarehouseConnectionError,
    create_warehouse_engine,
    default_database_url,
    error_line,
    migrate,
    safe_url,
    validate_database_url,
)

DEFAULT_RATE_LIMIT_PER_MINUTE = 400  # Freshsales Growth plan
DEFAULT_RATE_LIMIT_PER_HOUR = 1000


class CrmResource(dg.ConfigurableResource):  # type: ignore[type-arg]  # Dagster's documented form
    """Freshsales API access; the embedded demo CRM when no base URL is configured."""

    base_url: str | None = Field(
        default=None,
        description="Freshsales base, e.g. https://acme.myfreshworks.com/crm/sales. Unset: the embedded demo CRM.",
    )
    api_key: str | None = Field(default=None, description="Freshsales API key (CRM_API_KEY). A secret.")
    rate_limit_per_minute: int = Field(default=DEFAULT_RATE_LIMIT_PER_MINUTE, description="0 turns it off")
    rate_limit_per_hour: int = Field(default=DEFAULT_RATE_LIMIT_PER_HOUR, description="0 turns it off")
    max_concurrency: int = Field(default=4, description="Page requests in flight at once")
    budget_database_url: str | None = Field(
        default=None,
        description="Where every process of the deployment shares the CRM request budget: a warehouse URL "
        "(PostgreSQL: table crm_rate_budget; SQLite: a locked file beside it). Unset: the warehouse (DATABASE_URL).",
    )

    @property
    def uses_demo(self) -> bool:
        return not self.base_url

    def get_client(self, log: logging.Logger | None = None) -> FreshsalesClient:
        """A client, or a non-retryable dg.Failure naming the setting that is wrong and how to fix it."""
        log = log or logging.getLogger("crm_assets.crm")
        if self.uses_demo:
            from crm_assets.demo_crm import DEMO_API_KEY, DEMO_BASE_URL, embedded_demo_crm

            log.warning(
                "CRM_BASE_URL is not set: reading the embedded demo CRM (synthetic data). "
                "Set CRM_BASE_URL and CRM_API_KEY to sync a real Freshsales account."
            )
            # No account budget to protect in process: the limiter would only slow large local runs.
            return self._client(DEMO_BASE_URL, DEMO_API_KEY, log, embedded_demo_crm().transport(), limited=False)
        self._check_settings()
        return self._client(self.base_url or "", self.api_key or "", log, None, limited=True)

    def settings_problem(self) -> str | None:
        """What makes these settings of a real CRM unusable, naming the setting (never quoting the key);
        None when they are usable, and for the demo CRM."""
        if self.uses_demo:
            return None
        if not self.api_key:
            return (
                "CRM_BASE_URL is set but CRM_API_KEY is not: set CRM_API_KEY to your Freshsales "
                "API key (Profile settings > API settings)."
            )
        for variable, value in (
            (settings.CRM_RATE_LIMIT_PER_MINUTE, self.rate_limit_per_minute),
            (settings.CRM_RATE_LIMIT_PER_HOUR, self.rate_limit_per_hour),
        ):
            if value < 0:
                return f"{variable} is {value}: {settings.RATE_LIMIT_RULE}."
        if self.max_concurrency < 1:
            return f"the crm resource's max_concurrency is {self.max_concurrency}: it must be 1 or more."
        try:
            validated_base_url(self.base_url or "")
            validated_api_key(self.api_key)
        except CrmError as exc:
            return str(exc)
        return None

    def _check_settings(self) -> None:
        if (problem := self.settings_problem()) is not None:
            raise _config_failure(problem)

    def _client(
        self, base_url: str, api_key: str, log: logging.Logger, transport: httpx.BaseTransport | None, limited: bool
    ) -> FreshsalesClient:
        per_minute = self.rate_limit_per_minute if limited else 0
        per_hour = self.rate_limit_per_hour if limited else 0
        try:
            store = self._budget_store(base_url) if per_minute or per_hour else None
            return FreshsalesClient(
                base_url,
                api_key,
                transport=transport,
                rate_limit_per_minute=per_minute,
                rate_limit_per_hour=per_hour,
                budget_store=store,
                max_concurrency=self.max_concurrency,
                log=log,
            )
        except (CrmError, WarehouseConfigError, WarehouseConnectionError) as exc:
            # A malformed CRM_BASE_URL or CRM_API_KEY, or a warehouse that cannot hold the budget.
            raise _config_failure(str(exc)) from None

    def _budget_store(self, base_url: str) -> BudgetStore:
        """The budget every step, job and code location on this warehouse shares for this CRM account."""
        url = self.budget_database_url or default_database_url()
        variable = "the crm resource's budget_database_url" if self.budget_database_url else settings.DATABASE_URL
        validate_database_url(url, variable)
        return shared_budget_store(_migrated_engine(url), base_url)


def _config_failure(message: str) -> dg.Failure:
    """A configuration mistake: the step fails at once, since a retry would fail the same way."""
    return dg.Failure(description=message, allow_retries=False)


@cache
def _migrated_engine(url: str) -> Engine:
    engine = create_warehouse_engine(url)
    migrate(engine)
    return engine


class WarehouseResource(dg.ConfigurableResource):  # type: ignore[type-arg]  # Dagster's documented form
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
        from_env = not self.url or self.url == default_database_url()
        variable = settings.DATABASE_URL if from_env else "the warehouse resource's url"
        try:
            validate_database_url(self.resolved_url, variable)
            return _migrated_engine(self.resolved_url)
        except (WarehouseConfigError, WarehouseConnectionError) as exc:
            raise _config_failure(str(exc)) from None


def crm_resource_from_env() -> CrmResource:
    """Secrets go through EnvVar so they never land in run config or metadata."""
    return CrmResource(
        base_url=dg.EnvVar(settings.CRM_BASE_URL) if settings.is_set(settings.CRM_BASE_URL) else None,
        api_key=dg.EnvVar(settings.CRM_API_KEY) if settings.is_set(settings.CRM_API_KEY) else None,
        rate_limit_per_minute=settings.rate_limit(settings.CRM_RATE_LIMIT_PER_MINUTE, DEFAULT_RATE_LIMIT_PER_MINUTE),
        rate_limit_per_hour=settings.rate_limit(settings.CRM_RATE_LIMIT_PER_HOUR, DEFAULT_RATE_LIMIT_PER_HOUR),
    )


def check_settings_from_env() -> None:
    """Every variable the runs of a command read, checked as their steps would check it: a SettingsError
    naming the first unusable one, before any run starts (which would otherwise fail, in the UI too)."""
    crm = CrmResource(
        base_url=settings.crm_base_url(),
        api_key=settings.crm_api_key(),
        rate_limit_per_minute=settings.rate_limit(settings.CRM_RATE_LIMIT_PER_MINUTE, DEFAULT_RATE_LIMIT_PER_MINUTE),
        rate_limit_per_hour=settings.rate_limit(settings.CRM_RATE_LIMIT_PER_HOUR, DEFAULT_RATE_LIMIT_PER_HOUR),
    )
    if (problem := crm.settings_problem()) is not None:
        raise settings.SettingsError(problem)
    if (url := settings.database_url()) is not None:
        validate_database_url(url)  # a WarehouseConfigError, which is a SettingsError
    configured_domains()  # CRM_FIELD_MAP
    settings.reports_start_date()


def check_warehouse_from_env() -> None:
    """The warehouse the runs will use can be opened (reached, its schema brought up to date): else a
    SettingsError naming it, before any run starts. The engine stays cached for the runs of this process."""
    warehouse = WarehouseResource()  # no url: DATABASE_URL, or the SQLite file, as in a run
    try:
        warehouse.get_engine()
    except dg.Failure as exc:
        raise settings.SettingsError(exc.description or "the warehouse cannot be opened") from None
    except (sa.exc.SQLAlchemyError, AlembicCommandError) as exc:  # e.g. a revision only a newer release knows
        cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
        raise settings.SettingsError(
            f"cannot bring the warehouse schema of {warehouse.display_url} up to date: {error_line(cause)}"
        ) from None


def warehouse_resource_from_env() -> WarehouseResource:
    return WarehouseResource(url=dg.EnvVar(settings.DATABASE_URL) if settings.is_set(settings.DATABASE_URL) else None)


class ExportDirectory(dg.ConfigurableResource):  # type: ignore[type-arg]  # Dagster's documented form
    """Where output files go (CRM_EXPORT_DIR): the dated JSON/CSV exports, and the charts under charts/."""

    path: str = Field(
        default=settings.DEFAULT_EXPORT_DIR, description="Folder for the dated JSON/CSV files; charts go to charts/"
    )

    @property
    def folder(self) -> Path:
        return Path(self.path).resolve()

    @property
    def charts_path(self) -> Path:
        return self.folder / "charts"


def check_export_dir_from_env() -> None:
    """CRM_EXPORT_DIR can be created and written: else a SettingsError, before a sync of hours that ends by
    writing there. A probe file is written and removed; the folder is left created, as the run would."""
    # Named per process: two commands starting together must not remove each other's probe.
    probe = ExportDirectory(path=settings.export_dir()).folder / f".crm-assets-write-check.{uuid.uuid4().hex}"
    try:
        write_bytes_atomically(probe, b"")
        probe.unlink(missing_ok=True)
    except OSError as exc:
        raise settings.SettingsError(f"{settings.CRM_EXPORT_DIR}: {exc}") from None


def export_directory_from_env() -> ExportDirectory:
    # Through EnvVar when set, so the job snapshots (and a UI started with the variable set to another
    # folder) do not depend on its value.
    if settings.is_set(settings.CRM_EXPORT_DIR):
        return ExportDirectory(path=dg.EnvVar(settings.CRM_EXPORT_DIR))
    return ExportDirectory(path=settings.export_dir())
