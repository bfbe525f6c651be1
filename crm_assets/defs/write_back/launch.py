"""`crm-assets update`: run `update_domain_value` on the configured Dagster instance and print the changes.

The run executes in this process (like `dg launch --job`) but is recorded in the $DAGSTER_HOME
instance, so it shows in the UI next to runs launched from the Launchpad.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from crm_assets.contracts import DRY_RUN_TAG, LAUNCHED_BY_TAG
from crm_assets.defs.write_back.job import JOB_NAME, update_domain_value
from crm_assets.resources import crm_resource_from_env, warehouse_resource_from_env
from crm_assets.write_back import ChangeOutcome, UpdatePlan, change_table, count_by_status, planned_outcomes

PLAN_STEP, APPLY_STEP = "plan_update", "apply_update"


def update_job() -> dg.JobDefinition:
    """The job with resources from the environment; module-level so `dg.reconstructable` can rebuild it."""
    defs = dg.Definitions(
        jobs=[update_domain_value],
        resources={"crm": crm_resource_from_env(), "warehouse": warehouse_resource_from_env()},
    )
    return defs.resolve_job_def(JOB_NAME)


@contextmanager
def _instance() -> Iterator[dg.DagsterInstance]:
    if os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:
            yield instance
        return
    print(
        "note: DAGSTER_HOME is not set, so this run goes to a temporary Dagster instance and will not show "
        "in the UI; set DAGSTER_HOME to the folder your Dagster webserver uses to keep it.",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as tmp, dg.DagsterInstance.local_temp(tmp) as instance:
        yield instance


def _output(result: dg.ExecuteJobResult, step: str) -> Any:
    return result.output_for_node(step) if result.is_node_success(step) else None


def _failure(result: dg.ExecuteJobResult) -> tuple[str, str | None]:
    """Why the run failed, and the outcome table if the apply step attached one."""
    for step in (PLAN_STEP, APPLY_STEP):
        data = result.failure_data_for_node(step)
        if data is None:
            continue
        if data.user_failure_data is not None:
            entry = data.user_failure_data.metadata.get("outcome")
            table = str(entry.value).strip("`\n") if entry is not None else None
            return data.user_failure_data.description or "the step failed", table
        if data.error is not None:
            return data.error.message.strip(), None
    return "the run failed before any step ran; see its logs in the Dagster UI", None


def _print_changes(plan: UpdatePlan | None, outcomes: list[ChangeOutcome] | None, failed_table: str | None) -> None:
    """The one table of the run: what was done, else what the failed step attached, else what was planned."""
    title = plan.update.description if plan is not None else "the write-back"
    if outcomes is not None:
        print(f"{'Planned' if plan is not None and plan.dry_run else 'Done'}: {title}\n{change_table(outcomes)}")
        counts = count_by_status(outcomes)
        if plan is None or not plan.dry_run:
            print(", ".join(f"{n} {status}" for status, n in counts.items()))
    elif failed_table:
        print(f"Outcome: {title}\n{failed_table}")
    elif plan is not None:
        print(f"Planned, not applied: {title}\n{change_table(planned_outcomes(plan))}")


def launch_update(domain: str, key: str, value: str, key_to_update: str, update_value: str, dry_run: bool) -> int:
    """Run the job; 0 when it succeeded (dry run included), 1 with the reason on stderr otherwise."""
    run_config = {
        "domain": domain,
        "key": key,
        "value": value,
        "key_to_update": key_to_update,
        "update_value": update_value,
        "dry_run": dry_run,
    }
    with (
        _instance() as instance,
        dg.execute_job(
            dg.reconstructable(update_job),
            instance=instance,
            run_config=run_config,
            tags={LAUNCHED_BY_TAG: "cli", DRY_RUN_TAG: str(dry_run).lower()},
        ) as result,
    ):
        print(f"Run {result.run_id} ({JOB_NAME}): {'success' if result.success else 'FAILED'}")
        plan: UpdatePlan | None = _output(result, PLAN_STEP)
        outcomes: list[ChangeOutcome] | None = _output(result, APPLY_STEP)
        reason, table = (None, None) if result.success else _failure(result)
        _print_changes(plan, outcomes, table)
        if result.success:
            if dry_run:
                print("Dry run: nothing was written to the CRM or the warehouse.")
            return 0
        print(f"error: {reason}", file=sys.stderr)
        return 1
