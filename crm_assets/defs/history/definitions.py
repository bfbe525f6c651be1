"""The history capability: deal_history, stage transitions, the open pipeline per day, their check and refresh.

Resources are bound by crm_assets.definitions (the key "warehouse").
"""

from __future__ import annotations

import dagster as dg

from crm_assets.defs.history.assets import history_assets
from crm_assets.defs.history.checks import HISTORY_CHECKS
from crm_assets.defs.history.sensors import (
    deal_history_job,
    deal_history_refresh,
    pipeline_daily_job,
    pipeline_daily_schedule,
)


def build_defs() -> dg.Definitions:
    return dg.Definitions(
        assets=history_assets(),
        asset_checks=HISTORY_CHECKS,
        jobs=[deal_history_job, pipeline_daily_job],
        schedules=[pipeline_daily_schedule],
        sensors=[deal_history_refresh],
    )
