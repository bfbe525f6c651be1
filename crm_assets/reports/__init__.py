"""Deal aggregations per UTC day, ISO week and month: window arithmetic and set-based SQL, no Dagster."""

from crm_assets.reports.aggregate import ReplaceStats, read_aggregations, replace_aggregations
from crm_assets.reports.windows import Cadence, contiguous_runs, next_window, window_start, windows_touched

__all__ = [
    "Cadence",
    "ReplaceStats",
    "contiguous_runs",
    "next_window",
    "read_aggregations",
    "replace_aggregations",
    "window_start",
    "windows_touched",
]
