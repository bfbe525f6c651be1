"""The one Dagster instance and code location every `crm-assets` command runs against.

Runs are created from the code location's remote job, as the UI's Launchpad creates them, so they carry
the location's origin: they list on their job's page, match its snapshot and can be re-executed from
the UI. They then execute in this process, in the foreground, like `dagster job execute`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
import yaml
from dagster import DagsterError, DagsterInvalidConfigError
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.errors import DagsterUserCodeLoadError
from dagster._core.execution.api import create_execution_plan
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.code_location import InProcessCodeLocation
from dagster._core.snap.execution_plan_snapshot import snapshot_from_execution_plan
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import make_new_run_id
from dagster_postgres.utils import DagsterPostgresException

from crm_assets import settings
from crm_assets.contracts import CODE_LOCATION_NAME, COMMAND_PROCESS_TAG
from crm_assets.defs.command_process import command_process_tag, execute_until_interrupted, fail_runs_of_ended_commands
from crm_assets.defs.local_storage import PooledSqliteEventLogStorage
from crm_assets.files import write_bytes_atomically
from crm_assets.settings import SettingsError
from crm_assets.warehouse.engine import error_line

DEFINITIONS_MODULE = "crm_assets.definitions"
REPOSITORY_NAME = "__repository__"  # what Dagster names the repository of a Definitions object
# Steps run in this process: a CLI command is one foreground run at a time, and SQLite prefers one writer.
IN_PROCESS: Mapping[str, Any] = {"execution": {"config": {"in_process": {}}}}
# The code location's plain console logger (defs/console.py): the steps' messages without Dagster's events.
PLAIN_CONSOLE: Mapping[str, Any] = {"loggers": {"console": {}}}


# The dagster.yaml a home without one gets: Dagster's SQLite storage in the home, its event log keeping
# the index file open and writing batches (defs/local_storage.py); no telemetry, no UI welcome popup. The
# event log finds the home from DAGSTER_HOME, as every Dagster process does: a copied or moved home keeps
# its events (an absolute path would send them back to the original folder).
LOCAL_INSTANCE_CONFIG = f"""\
telemetry:
  enabled: false
nux:
  enabled: false
event_log_storage:
  module: {PooledSqliteEventLogStorage.__module__}
  class: {PooledSqliteEventLogStorage.__name__}
  config:
    dagster_home:
      env: {settings.DAGSTER_HOME}
"""
# What earlier releases wrote there: upgraded in place. Any other content is the user's, and kept.
EARLIER_LOCAL_INSTANCE_CONFIG = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


class InstanceConfigError(SettingsError):
    """The Dagster home (DAGSTER_HOME) cannot be created or its dagster.yaml cannot be used: the message names
    the folder or the file and what is wrong, in one line, without quoting the file."""


def dagster_home() -> Path:
    """$DAGSTER_HOME, else ./.crm_assets/dagster_home: created, with LOCAL_INSTANCE_CONFIG unless it has a
    dagster.yaml of its own; exported for this process. An InstanceConfigError when that is impossible."""
    given = settings.dagster_home()
    home = given.absolute()
    try:
        home = home.resolve()
        if home.exists() and not home.is_dir():
            raise InstanceConfigError(f"{_named_home(given)} is a file, not a folder: point it at a folder")
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists() or config.read_bytes() == EARLIER_LOCAL_INSTANCE_CONFIG.encode():
            write_bytes_atomically(config, LOCAL_INSTANCE_CONFIG.encode())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename not in (None, str(home)) else ""
        raise InstanceConfigError(f"{_named_home(given)} cannot be used as the Dagster home: {reason}{where}") from None
    os.environ[settings.DAGSTER_HOME] = str(home)
    return home


def _named_home(home: Path) -> str:
    """The home as a message names it: by the variable, as given, when it is set; else as the default folder."""
    if settings.is_set(settings.DAGSTER_HOME):
        return f"{settings.DAGSTER_HOME} {home}"
    return f"the Dagster home {home.absolute()} (DAGSTER_HOME is not set)"


def quiet_dagster_warnings() -> None:
    """Dagster's beta/preview notices concern this project's code, not the person running a command."""
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", message=".*is superseded.*")


# A command runs several runs in one process: keep one storage connection open instead of the
# production default of a new PostgreSQL connection per stored event (a tenth of a re-run's CPU).
# No statement timeout (it replaces any the server sets for the role): a run's own writes must not be cut
# short. Recycled after 2 idle minutes, under the idle timeouts of cloud load balancers. No-op on SQLite.
_STORAGE_POOL: Mapping[str, int] = {"statement_timeout": 0, "pool_recycle": 120, "max_overflow": 4}


@contextmanager
def command_instance() -> Iterator[dg.DagsterInstance]:
    """The Dagster instance of $DAGSTER_HOME for one command, its storage connections pooled."""
    with _open_instance() as instance:
        instance.optimize_for_webserver(**_STORAGE_POOL)
        fail_runs_of_ended_commands(instance)
        yield instance


def _open_instance() -> dg.DagsterInstance:
    """The instance of the Dagster home dagster_home() prepared, or an InstanceConfigError naming its
    dagster.yaml and what is wrong: not YAML, not a Dagster instance's configuration, or storage that cannot
    be reached (after Dagster's own retries, whose warnings would bury the cause)."""
    config = settings.dagster_home().absolute() / "dagster.yaml"
    quiet = _WithoutStorageRetryWarnings()
    logging.getLogger().addFilter(quiet)
    try:
        return dg.DagsterInstance.get()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)  # the file's text is not quoted: it may hold a secret
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InstanceConfigError(f"{config} is not valid YAML{where}: {problem}") from None
    except (DagsterError, DagsterPostgresException, sa.exc.SQLAlchemyError, OSError, ImportError) as exc:
        raise InstanceConfigError(f"cannot open the Dagster instance {config} configures: {_reason(exc)}") from None
    finally:
        logging.getLogger().removeFilter(quiet)


# Dagster's instance config errors, shortened to what to fix: no stack trace, schema or value (a secret?).
_CONFIG_ERROR_NOISE = (
    (re.compile(r" ?Stack Trace:.*"), ""),
    (re.compile(r" of original value .*? failed: [\w.]*PostProcessingError: "), ": "),
    (re.compile(r" In order for this execution to succeed it must be set in this environment\."), ""),
    (re.compile(r"\. Expected: .*"), ""),
    (re.compile(r'Value ".*?" of type "[^"]*"'), "The value"),
)


def _config_error(message: str) -> str:
    message = " ".join(message.split())
    for noise, replacement in _CONFIG_ERROR_NOISE:
        message = noise.sub(replacement, message)
    return message.rstrip(". ")


class _WithoutStorageRetryWarnings(logging.Filter):
    """Drops dagster-postgres's "Retrying failed database connection" warnings (with their tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying failed database connection")


def _reason(exc: BaseException) -> str:
    """Dagster's config errors, or the first line of the innermost database error under `exc` (the driver's,
    which names the server), else of `exc` itself; never with a password."""
    if isinstance(exc, DagsterInvalidConfigError) and exc.errors:  # each error names its path in the file
        return "; ".join(_config_error(error.message) for error in exc.errors)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, sa.exc.DBAPIError) and cause.orig is not None:
            # The server repeats a database name it does not know, a libpq connection string's password included.
            return error_line(cause.orig)
        cause = cause.__cause__
    return error_line(exc)


@dataclass(frozen=True)
class LoadedCodeLocation:
    """The code location as the UI knows it (runs are created from it) and its definitions, loaded once:
    executing each run from the loaded jobs spares rebuilding every definition twice a run."""

    remote: InProcessCodeLocation
    repository: dg.RepositoryDefinition


@contextmanager
def code_location(instance: dg.DagsterInstance) -> Iterator[LoadedCodeLocation]:
    """The crm_assets code location, loaded in this process under the name the workspaces give it."""
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable, module_name=DEFINITIONS_MODULE, attribute="defs"
        ),
        location_name=CODE_LOCATION_NAME,
    )
    try:
        location = InProcessCodeLocation(origin, instance)
    except DagsterUserCodeLoadError as exc:
        if (unusable := _settings_error(exc)) is not None:
            raise unusable from None
        raise
    with location:
        # The job name plays no part in loading the repository.
        repository = location.get_reconstructable_job(REPOSITORY_NAME, "").get_repository_definition()
        if repository is None:
            raise RuntimeError(f"{DEFINITIONS_MODULE} defines no repository")
        yield LoadedCodeLocation(location, repository)


def _settings_error(exc: BaseException) -> SettingsError | None:
    """The unusable environment variable that failed loading the definitions, if that is what failed: its
    message names the variable and the rule, and Dagster's wrapping would bury it in a traceback."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, SettingsError):
        cause = cause.__cause__
    return cause


def execute_job_run(
    instance: dg.DagsterInstance,
    location: LoadedCodeLocation,
    job_name: str,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    asset_selection: Iterable[dg.AssetKey] | None = None,
    asset_check_selection: Iterable[dg.AssetCheckKey] | None = None,
) -> dg.JobExecutionResult:
    """Create a run of `job_name` (or of a subset of its assets and checks) with the location's origin,
    then execute it here and return its result. Use the result as a context manager to read step outputs.
    """
    assets = frozenset(asset_selection) if asset_selection is not None else None
    checks = frozenset(asset_check_selection) if asset_check_selection is not None else None
    remote_job = location.remote.get_job(
        JobSubsetSelector(
            location_name=location.remote.name,
            repository_name=REPOSITORY_NAME,
            job_name=job_name,
            op_selection=None,
            asset_selection=assets,
            asset_check_selection=checks,
        )
    )
    # Steps see no repository definition (`context.repository_def`), unlike in a code server.
    job = InMemoryJob(location.repository.get_job(job_name))
    subset = assets is not None or checks is not None
    plan = create_execution_plan(
        job.get_subset(asset_selection=assets, asset_check_selection=checks) if subset else job,
        run_config,
        instance_ref=instance.get_ref() if instance.is_persistent else None,
    )
    run_id = make_new_run_id()
    run = instance.create_run(
        job_name=job_name,
        run_id=run_id,
        run_config=run_config,
        resolved_op_selection=remote_job.resolved_op_selection,
        step_keys_to_execute=plan.step_keys_to_execute,
        op_selection=None,
        status=None,
        root_run_id=None,
        parent_run_id=None,
        tags={**remote_job.tags, **(tags or {}), COMMAND_PROCESS_TAG: command_process_tag(run_id)},
        job_snapshot=remote_job.job_snapshot,
        execution_plan_snapshot=snapshot_from_execution_plan(plan, remote_job.identifying_job_snapshot_id),
        parent_job_snapshot=remote_job.parent_job_snapshot,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        asset_selection=assets,
        asset_check_selection=checks,
        asset_graph=location.remote.get_repository(REPOSITORY_NAME).asset_graph,
    )
    return execute_until_interrupted(job, run, instance)
