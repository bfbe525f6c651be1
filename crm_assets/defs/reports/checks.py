"""Checks on the stored aggregations: they match `deals`, and weeks and months add up to their days.

Only partitions this Dagster instance has materialized are judged: a window nobody computed yet is
missing, not wrong.
"""

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import dagster as dg

from crm_assets.defs.reports.assets import asset_key
from crm_assets.reports.reconcile import Mismatch, mismatches_with_days, mismatches_with_deals
from crm_assets.reports.windows import Cadence, next_window
from crm_assets.resources import WarehouseResource

_SHOWN = 10


def _mismatch_table(mismatches: Sequence[Mismatch]) -> str:
    lines = ["| window | account_id | expected total | expected count | stored total | stored count |"]
    lines.append("|---|---|---|---|---|---|")
    lines += [
        f"| {m.window} | {m.account_id} | {m.expected_total} | {m.expected_count} | {m.stored_total} | "
        f"{m.stored_count} |"
        for m in mismatches[:_SHOWN]
    ]
    if len(mismatches) > _SHOWN:
        lines.append(f"\n_{_SHOWN} of {len(mismatches):,} mismatching rows_")
    return "\n".join(lines)


def _result(
    mismatches: list[Mismatch], checked: int, severity: dg.AssetCheckSeverity, what: str
) -> dg.AssetCheckResult:
    windows = sorted({m.window.isoformat() for m in mismatches})
    metadata: dict[str, Any] = {
        "partitions_checked": checked,
        "mismatching_partitions": len(windows),
        "mismatching_rows": len(mismatches),
    }
    if mismatches:
        metadata["first_mismatching_partitions"] = dg.MetadataValue.json(windows[:50])
        metadata["mismatches"] = dg.MetadataValue.md(
            f"Stored rows differ from {what}. Re-materialize these partitions (the change-driven sensor "
            "does so after each deals sync).\n\n" + _mismatch_table(mismatches)
        )
    return dg.AssetCheckResult(passed=not mismatches, severity=severity, metadata=metadata)


def _days_of(window: date, cadence: Cadence) -> list[str]:
    days, day, end = [], window, next_window(window, cadence)
    while day < end:
        days.append(day.isoformat())
        day = next_window(day, Cadence.DAILY)
    return days


def build_reconcile_check(cadence: Cadence) -> dg.AssetChecksDefinition:
    asset = asset_key(cadence)

    @dg.asset_check(
        asset=asset,
        name="reconciles_with_deals",
        description="Every materialized partition holds, per account, exactly the sum and count of the deals "
        "created in its window, as `deals` is now.",
    )
    def reconcile(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        materialized = context.instance.get_materialized_partitions(asset)
        with warehouse.get_engine().connect() as conn:
            found = mismatches_with_deals(conn, cadence)
        relevant = [m for m in found if m.window.isoformat() in materialized]
        return _result(relevant, len(materialized), dg.AssetCheckSeverity.ERROR, "the deals in their window")

    return reconcile


def build_rollup_check(cadence: Cadence) -> dg.AssetChecksDefinition:
    asset, daily = asset_key(cadence), asset_key(Cadence.DAILY)
    period = "week" if cadence is Cadence.WEEKLY else "month"

    @dg.asset_check(
        asset=asset,
        name=f"{period}_equals_sum_of_days",
        additional_deps=[daily],
        description=f"Each materialized {period} equals, per account, the sum of its daily rows (judged only "
        f"where every day of the {period} is materialized too).",
    )
    def rollup(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        materialized = context.instance.get_materialized_partitions(asset)
        days = context.instance.get_materialized_partitions(daily)
        complete = {k for k in materialized if days.issuperset(_days_of(date.fromisoformat(k), cadence))}
        with warehouse.get_engine().connect() as conn:
            found = mismatches_with_days(conn, cadence)
        relevant = [m for m in found if m.window.isoformat() in complete]
        if len(complete) < len(materialized):
            context.log.info(
                f"{len(materialized) - len(complete):,} {period}(s) skipped: not all their days are materialized"
            )
        return _result(relevant, len(complete), dg.AssetCheckSeverity.WARN, "the sum of their daily rows")

    return rollup


_BUILDERS: list[tuple[Cadence, Callable[[Cadence], dg.AssetChecksDefinition]]] = [
    (Cadence.DAILY, build_reconcile_check),
    (Cadence.WEEKLY, build_reconcile_check),
    (Cadence.MONTHLY, build_reconcile_check),
    (Cadence.WEEKLY, build_rollup_check),
    (Cadence.MONTHLY, build_rollup_check),
]
REPORT_CHECKS: list[dg.AssetChecksDefinition] = [build(c) for c, build in _BUILDERS]
