"""The `update_domain_value` job: write one field of every record with key == value to the CRM and warehouse.

Two ops, both in the `crm_api` pool: `plan_update` validates the config, finds the records and plans
each change (nothing is written, so every bad input fails here); `apply_update` writes the plan.
"""

from enum import Enum
from typing import Any

import dagster as dg
from pydantic import Field

from crm_assets.contracts import CRM_POOL, DRY_RUN_TAG, TOUCHED_DATES
from crm_assets.domains import DOMAIN_NAMES
from crm_assets.resources import CrmResource, WarehouseResource
from crm_assets.write_back import (
    ChangeOutcome,
    Status,
    UpdatePlan,
    UpdateRequest,
    UpdateRequestError,
    apply_changes,
    build_plan,
    change_table,
    check_crm_choices,
    count_by_status,
    find_matching_records,
    planned_outcomes,
    validate_request,
)
from crm_assets.write_back.store import check_foreign_keys

JOB_NAME = "update_domain_value"
# Changing these on a deal moves money between aggregation partitions.
AGGREGATED_FIELDS = {"deals": frozenset({"deal_size", "account_id"})}
# A choice, not free text, in the Launchpad.
DomainName = Enum("DomainName", {name: name for name in DOMAIN_NAMES})  # type: ignore[misc]


class UpdateDomainValueConfig(dg.Config):
    """Every value is a string; it is cast to the field's type from the domain model."""

    domain: DomainName = Field(description=f"Which records: {', '.join(DOMAIN_NAMES)}.")
    key: str = Field(description="Field that selects the records, e.g. deal_id (any field of the domain).")
    value: str = Field(description="Value of `key` to match, e.g. 203; every record with key == value is updated.")
    key_to_update: str = Field(
        description="Field to change, e.g. deal_size. Not the CRM id, the business key or created_at."
    )
    update_value: str = Field(
        description="New value, e.g. 24456; enums by label (case-insensitive), dates as YYYY-MM-DD. "
        "Empty clears a field that may be empty."
    )
    dry_run: bool = Field(default=False, description="Only show the planned changes; write nothing anywhere.")

    def to_request(self) -> UpdateRequest:
        domain = self.domain.value if isinstance(self.domain, Enum) else str(self.domain)
        return UpdateRequest(domain, self.key, self.value, self.key_to_update, self.update_value, dry_run=self.dry_run)


def _fail(message: str, **metadata: Any) -> dg.Failure:
    return dg.Failure(description=message, metadata=metadata, allow_retries=False)


@dg.op(pool=CRM_POOL, description="Validate the config, find every matching CRM record and plan each change.")
def plan_update(
    context: dg.OpExecutionContext, config: UpdateDomainValueConfig, crm: CrmResource, warehouse: WarehouseResource
) -> UpdatePlan:
    # Launchpad runs get the tag the CLI sets at launch, so dry runs filter alike in the UI.
    if DRY_RUN_TAG not in context.run.tags:
        context.instance.add_run_tags(context.run_id, {DRY_RUN_TAG: str(config.dry_run).lower()})
    try:
        update = validate_request(config.to_request())
    except UpdateRequestError as exc:
        raise _fail(f"nothing was written: {exc}") from None
    engine = warehouse.get_engine()
    with crm.get_client(context.log) as client:
        try:
            update = check_crm_choices(client, update, context.log)
        except UpdateRequestError as exc:
            raise _fail(f"nothing was written: {exc}") from None
        records = find_matching_records(client, engine, update, context.log)
    plan = build_plan(update, records)
    if not plan.changes:
        raise _fail(
            f"nothing was written: no {update.domain.name} record in the CRM has "
            f"{update.key_column.name} = {config.value!r}"
        )
    try:
        check_foreign_keys(engine, update, [c.crm_id for c in plan.changes])
    except UpdateRequestError as exc:
        raise _fail(f"nothing was written: {exc}") from None
    table = change_table(planned_outcomes(plan))
    context.log.info(
        f"Plan for {update.description}: {len(plan.to_apply)} to update, {len(plan.skipped)} already set"
        f"{' (dry run)' if plan.dry_run else ''}"
    )
    # The table itself is in the step's metadata and the CLI prints it: at INFO it would show twice there.
    context.log.debug(f"Plan:\n{table}")
    context.add_output_metadata(
        {"to_update": len(plan.to_apply), "already_set": len(plan.skipped), "plan": dg.MetadataValue.md(_md(table))}
    )
    return plan


def _md(table: str) -> str:
    return f"```\n{table}\n```"


def _log_touched_dates(context: dg.OpExecutionContext, plan: UpdatePlan, outcomes: list[ChangeOutcome]) -> None:
    """Tell the reports sensor which deal dates changed, so it refreshes just those partitions."""
    update = plan.update
    if update.target.name not in AGGREGATED_FIELDS.get(update.domain.name, frozenset()):
        return
    dates = sorted({o.created_date for o in outcomes if o.warehouse_changed and o.created_date})
    if not dates:
        return
    context.log_event(
        dg.AssetMaterialization(
            asset_key=update.domain.name,
            description=f"{update.target.name} written back by {JOB_NAME}",
            metadata={TOUCHED_DATES: dg.MetadataValue.json(dates), "written_back": len(dates)},
        )
    )


def _failure_message(outcomes: list[ChangeOutcome]) -> str:
    failed = [o for o in outcomes if o.status == Status.FAILED]
    done = [o.crm_id for o in outcomes if o.status != Status.FAILED]
    reasons = "; ".join(f"{o.crm_id}: {o.error}" for o in failed[:10])
    return (
        f"{len(failed)} of {len(outcomes)} record(s) were NOT updated ({reasons}). "
        f"Done (applied or already set): {done[:50]}{' ...' if len(done) > 50 else ''}. "
        "Run the same config again to finish the rest; records already done are skipped."
    )


@dg.op(pool=CRM_POOL, description="PUT each planned change (bounded concurrency), update the warehouse, audit.")
def apply_update(
    context: dg.OpExecutionContext, plan: UpdatePlan, crm: CrmResource, warehouse: WarehouseResource
) -> list[ChangeOutcome]:
    if plan.dry_run:
        outcomes = planned_outcomes(plan)
        context.log.info(f"Dry run: {len(plan.to_apply)} change(s) planned; nothing was written")
        return outcomes
    engine = warehouse.get_engine()
    with crm.get_client(context.log) as client:
        outcomes = apply_changes(client, engine, plan, context.run_id, context.log, max_workers=crm.max_concurrency)
    counts = count_by_status(outcomes)
    text = change_table(outcomes)
    context.log.info(f"Write-back of {plan.update.description}: {counts}")
    context.log.debug(f"Outcome:\n{text}")
    _log_touched_dates(context, plan, outcomes)
    table = dg.MetadataValue.md(_md(text))
    if counts[Status.FAILED]:
        raise _fail(_failure_message(outcomes), **counts, outcome=table)
    context.add_output_metadata({**counts, "outcome": table})
    return outcomes


def _flat_config(values: dict[str, Any]) -> dict[str, Any]:
    """Flat job config -> the plan op's config; the console shows the steps' messages, not Dagster's events."""
    return {
        "ops": {"plan_update": {"config": {**values, "dry_run": bool(values.get("dry_run", False))}}},
        "loggers": {"console": {}},
    }


@dg.job(
    name=JOB_NAME,
    description="Write one field (key_to_update = update_value) to every CRM record with key == value, then to "
    "the warehouse, with one crm_update_audit row per record. Bad input fails before any write; "
    "dry_run only plans. Safe to re-run: records already at the new value are skipped.",
    config=dg.ConfigMapping(config_fn=_flat_config, config_schema=UpdateDomainValueConfig.to_config_schema()),
    executor_def=dg.in_process_executor,
    tags={"crm_assets/kind": "write_back"},
)
def update_domain_value() -> None:
    apply_update(plan_update())
