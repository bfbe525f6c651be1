"""The names where capabilities meet: each is defined here once and imported by every side.

A sync writes metadata the reports sensor reads, runs carry tags the CLI and the UI agree on, and every
step that talks to the CRM shares one pool. Spelling any of these twice would let a rename silently
break the other side.
"""

from __future__ import annotations

from typing import Final

# Dagster pool shared by every step that spends the CRM account's request budget.
CRM_POOL: Final = "crm_api"

# Metadata key on a `deals` materialization (sync or write-back): the UTC dates (YYYY-MM-DD) of the
# period column of every row it inserted, changed or removed, old and new versions alike.
TOUCHED_DATES: Final = "touched_dates"

# The deal column that decides which aggregation windows a deal counts in.
PERIOD_COLUMN: Final = "created_at"

# Dagster's tags for a single run over a partition range (BackfillPolicy.single_run()).
RANGE_START_TAG: Final = "dagster/asset_partition_range_start"
RANGE_END_TAG: Final = "dagster/asset_partition_range_end"
# ... and for a run of one partition.
PARTITION_TAG: Final = "dagster/partition"

# Tags crm-assets puts on the runs it launches.
LAUNCHED_BY_TAG: Final = "crm_assets/launched_by"
DRY_RUN_TAG: Final = "crm_assets/dry_run"
# On a run a command executes itself: "<host>:<pid>" of that command, so that a later command can tell a
# run whose command was killed (it would otherwise show as started forever) from one still going.
COMMAND_PROCESS_TAG: Final = "crm_assets/command_process"

# Metadata key on a `deals` materialization from a clean run: the UTC date (YYYY-MM-DD) of the earliest
# deal_history version it wrote. The open pipeline at the end of that day and of every later day may
# have changed; earlier days have not.
HISTORY_CHANGED_FROM: Final = "history_changed_from"

# The Dagster instance (and, under it, the SQLite warehouse) every command and the UI use when
# DAGSTER_HOME is not set: relative to the directory the command runs in.
DEFAULT_DAGSTER_HOME: Final = ".crm_assets/dagster_home"

# The code location's name, in workspace.yaml, pyproject.toml's [tool.dg.project] and on every CLI run.
CODE_LOCATION_NAME: Final = "crm_assets"
