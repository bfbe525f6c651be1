"""Write-back of one field to the CRM and the warehouse, without Dagster: validate, find, plan, apply.

`crm_assets.defs.write_back` wraps these steps in the `update_domain_value` job.
"""

from crm_assets.write_back.apply import ChangeOutcome, apply_changes
from crm_assets.write_back.plan import PlannedChange, UpdatePlan, build_plan, find_matching_records
from crm_assets.write_back.request import UpdateRequest, UpdateRequestError, ValidatedUpdate, validate_request
from crm_assets.write_back.table import format_table

__all__ = [
    "ChangeOutcome",
    "PlannedChange",
    "UpdatePlan",
    "UpdateRequest",
    "UpdateRequestError",
    "ValidatedUpdate",
    "apply_changes",
    "build_plan",
    "find_matching_records",
    "format_table",
    "validate_request",
]
