"""Write-back of one field to the CRM and the warehouse, without Dagster: validate, find, plan, apply.

`model` holds the vocabulary every step shares; `crm_assets.defs.write_back` wraps the steps in the
`update_domain_value` job.
"""

from crm_assets.write_back.apply import apply_changes, planned_outcomes
from crm_assets.write_back.choices import check_crm_choices
from crm_assets.write_back.model import (
    Action,
    ChangeOutcome,
    PlannedChange,
    Status,
    UpdatePlan,
    UpdateRequest,
    UpdateRequestError,
    ValidatedUpdate,
    count_by_status,
)
from crm_assets.write_back.plan import build_plan, find_matching_records
from crm_assets.write_back.request import validate_request
from crm_assets.write_back.table import change_table

__all__ = [
    "Action",
    "ChangeOutcome",
    "PlannedChange",
    "Status",
    "UpdatePlan",
    "UpdateRequest",
    "UpdateRequestError",
    "ValidatedUpdate",
    "apply_changes",
    "build_plan",
    "change_table",
    "check_crm_choices",
    "count_by_status",
    "find_matching_records",
    "planned_outcomes",
    "validate_request",
]
