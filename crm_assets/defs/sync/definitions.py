"""The sync capability: raw and clean assets, their checks, the crm_sync job and its daily schedule."""

import dagster as dg

from crm_assets.defs.exports.assets import EXPORT_GROUP, crm_exports
from crm_assets.defs.sync.assets import CLEAN_ASSETS, CLEAN_GROUP, RAW_ASSETS, RAW_GROUP
from crm_assets.defs.sync.checks import CLEAN_CHECKS, CRM_FIELD_CHECKS

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

defs = dg.Definitions(
    assets=[*RAW_ASSETS, *CLEAN_ASSETS, crm_exports],
    asset_checks=[*CLEAN_CHECKS, *CRM_FIELD_CHECKS],
    jobs=[crm_sync],
    schedules=[crm_sync_daily],
)
