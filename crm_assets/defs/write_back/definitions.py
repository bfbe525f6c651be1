"""The write-back capability: the `update_domain_value` job (resources are bound in crm_assets.definitions)."""

import dagster as dg

from crm_assets.defs.write_back.job import update_domain_value


def build_defs() -> dg.Definitions:
    return dg.Definitions(jobs=[update_domain_value])
