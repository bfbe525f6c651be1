"""The write-back job's config as the Launchpad shows it: `domain` is a choice, and dry runs are tagged."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._config import ConfigTypeKind

from crm_assets.contracts import DRY_RUN_TAG
from crm_assets.defs.write_back.job import update_domain_value
from crm_assets.demo_crm import DemoCrm
from crm_assets_tests.write_back.conftest import resources, run_update


def test_domain_is_an_enum_of_the_declared_domains() -> None:
    config_type = update_domain_value.run_config_schema.config_type
    domain = config_type.fields["domain"].config_type  # type: ignore[attr-defined]
    assert domain.kind == ConfigTypeKind.ENUM
    assert sorted(v.config_value for v in domain.enum_values) == ["accounts", "contacts", "deals"]


def test_an_unknown_domain_is_refused_by_the_config_before_the_run(crm_url: str, sqlite_url: str) -> None:
    with pytest.raises(dg.DagsterInvalidConfigError, match="domain"):
        run_update(crm_url, sqlite_url, domain="opportunities", key="deal_id", value="1", key_to_update="deal_size",
                   update_value="1")  # fmt: skip


def test_a_launchpad_dry_run_gets_the_dry_run_tag(demo: DemoCrm, crm_url: str, sqlite_url: str) -> None:
    with dg.instance_for_test() as instance:
        result = update_domain_value.execute_in_process(
            run_config={"domain": "deals", "key": "deal_id", "value": "999999", "key_to_update": "deal_size",
                        "update_value": "1", "dry_run": True},
            resources=resources(crm_url, sqlite_url),
            instance=instance,
            raise_on_error=False,
        )  # fmt: skip
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.tags[DRY_RUN_TAG] == "true"
