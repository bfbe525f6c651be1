"""`crm-assets update`: run `update_domain_value` on the one Dagster instance and print the changes.

The run is created from the crm_assets code location (like a Launchpad run, so it lists on the job's
page) in $DAGSTER_HOME, default ./.crm_assets/dagster_home, and executes in this process.
"""

from __future__ import annotations

import sys
from typing import Any

import dagster as dg

from crm_assets.contracts import DRY_RUN_TAG, LAUNCHED_BY_TAG
from crm_assets.defs.instance import code_location, command_instance, dagster_home, execute_job_run
from crm_assets.defs.outcome import plain_cause, step_failures
from crm_assets.defs.write_back.job import JOB_NAME
from crm_assets.write_back import ChangeOutcome, UpdatePlan, change_table, count_by_status, planned_outcomes

PLAN_STEP, APPLY_STEP = "plan_update", "apply_update"


def _output(result: dg.ExecuteJobResult, step: str) -> Any:
    return result.output_for_node(step) if result.is_node_success(step) else None


def _failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str, str | None]:
    """Why the run failed (the cause, in plain words), and the outcome table if the apply step attached one."""
    for _step, data in step_failures(instance, run_id):
        table = None
        if data.user_failure_data is not None:
            entry = data.user_failure_data.metadata.get("outcome")
            table = str(entry.value).strip("`\n") if entry is not None else None
        return plain_cause(data), table
    return "the run failed before any step ran; open it in the Dagster UI for its logs", None


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
    dagster_home()
    tags = {LAUNCHED_BY_TAG: "cli", DRY_RUN_TAG: str(dry_run).lower()}
    with (
        command_instance() as instance,
        code_location(instance) as location,
        execute_job_run(instance, location, JOB_NAME, run_config, tags) as result,
    ):
        print(f"Run {result.run_id} ({JOB_NAME}): {'success' if result.success else 'FAILED'}")
        plan: UpdatePlan | None = _output(result, PLAN_STEP)
        outcomes: list[ChangeOutcome] | None = _output(result, APPLY_STEP)
        reason, table = (None, None) if result.success else _failure(instance, result.run_id)
        _print_changes(plan, outcomes, table)
        if result.success:
            if dry_run:
                print("Dry run: nothing was written to the CRM or the warehouse.")
            return 0
        print(f"error: {reason}", file=sys.stderr)
        return 1
