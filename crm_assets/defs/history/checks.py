"""deal_history's current versions are exactly the `deals` table."""

from __future__ import annotations

from typing import Any

import dagster as dg

from crm_assets.defs.history.assets import deal_history_asset
from crm_assets.resources import WarehouseResource
from crm_assets.warehouse.history import current_version_mismatches


@dg.asset_check(
    asset=deal_history_asset,
    name="current_versions_equal_deals",
    description="Every row of `deals` has an open, live version with the same crm_id and tracked columns, "
    "and every open, live version has its row.",
)
def current_versions_equal_deals(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_engine().connect() as conn:
        count, sample = current_version_mismatches(conn)
    metadata: dict[str, Any] = {"mismatching_deals": count}
    if count:
        metadata["first_mismatching_deal_ids"] = dg.MetadataValue.json(sample)
        metadata["fix"] = dg.MetadataValue.md(
            "The history lost step with `deals` (rows changed outside the clean step or the write-back). "
            "Re-run the deals clean step with `rebuild: true`: it re-decides every deal and versions the differences."
        )
    return dg.AssetCheckResult(passed=count == 0, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)


HISTORY_CHECKS = [current_versions_equal_deals]
