"""The sync capability: raw and clean assets, their checks, the crm_sync job and its daily schedule."""

import dagster as dg

from crm_assets.defs.exports.assets import EXPORT_GROUP, crm_exports
from crm_assets.defs.sync.assets import CLEAN_GROUP, RAW_GROUP, clean_assets, raw_assets
from crm_assets.defs.sync.checks import clean_checks, crm_field_checks

crm_sync = dg.define_asset_job(
    "crm_sync",
    selection=dg.AssetSelection.groups(RAW_GROUP, CLEAN_GROUP, EXPORT_GROUP),
    description="Extract accounts, contacts and deals from the CRM, clean and load them, export JSON/CSV.",
    tags={"dagster/max_retries": 1},
)

crm_sync_daily = dg.ScheduleDefinition(
    name="crm_sync_daily",
    job=crm_sync,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    description="Daily CRM sync at 06:00 UTC.",
)


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[*raw_assets(), *clean_assets(), crm_exports],
        asset_checks=[*clean_checks(), *crm_field_checks()],
        jobs=[crm_sync],
        schedules=[crm_sync_daily],
    )
