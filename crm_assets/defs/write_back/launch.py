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
from crm_assets.defs.write_back.job import JOB_NAME, outcome_rows, update_domain_value
from crm_assets.resources import crm_resource_from_env, warehouse_resource_from_env
from crm_assets.write_back import ChangeOutcome, UpdatePlan, format_table

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


def _print_plan(plan: UpdatePlan) -> None:
    rows = [
        (c.crm_id, c.old_text, c.new_text, "planned" if c.action == "update" else "skipped (already set)", "")
        for c in plan.changes
    ]
    print(f"Planned: {plan.update.description}\n{format_table(rows)}")


def _print_outcomes(outcomes: list[ChangeOutcome]) -> None:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("applied", "skipped", "failed")}
    print(f"Applied:\n{format_table(outcome_rows(outcomes))}")
    print(f"{counts['applied']} applied, {counts['skipped']} skipped, {counts['failed']} failed")


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
        if plan is not None and (dry_run or outcomes is None):
            _print_plan(plan)
        if outcomes is not None and not dry_run:
            _print_outcomes(outcomes)
        if result.success:
            if dry_run:
                print("Dry run: nothing was written to the CRM or the warehouse.")
            return 0
        reason, table = _failure(result)
        if table:
            print(f"Outcome:\n{table}")
        print(f"error: {reason}", file=sys.stderr)
        return 1
