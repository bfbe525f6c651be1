"""The code location: every capability's definitions, with resources bound from the environment.

Data flow: CRM client (freshsales/, demo_crm/) -> domain declarations (domains/) -> cleaning (transform/)
-> warehouse (warehouse/) -> Dagster definitions (defs/: sync, exports, reports, write_back, history).

Importing this module reads no configuration: Dagster calls `defs` when it loads the code location, and
the field map (CRM_FIELD_MAP), the reports' start date and the resources' settings are read then.
"""

import dagster as dg

from crm_assets.defs.console import plain_console_logger
from crm_assets.defs.history import definitions as history
from crm_assets.defs.reports import definitions as reports
from crm_assets.defs.sync import definitions as sync
from crm_assets.defs.write_back import definitions as write_back
from crm_assets.resources import crm_resource_from_env, export_directory_from_env, warehouse_resource_from_env


@dg.definitions
def defs() -> dg.Definitions:
    resources = dg.Definitions(
        loggers={"console": plain_console_logger},
        resources={
            "crm": crm_resource_from_env(),
            "warehouse": warehouse_resource_from_env(),
            "exports": export_directory_from_env(),
        },
    )
    return dg.Definitions.merge(
        sync.build_defs(), reports.build_defs(), write_back.build_defs(), history.build_defs(), resources
    )
