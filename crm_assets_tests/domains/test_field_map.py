"""Per-tenant field maps: columns read from (and written back to) other Freshsales fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crm_assets.domains import apply_field_map, get_domain, load_field_map


def test_a_field_map_moves_a_column_to_another_custom_field(tmp_path: Path) -> None:
    path = tmp_path / "fields.json"
    path.write_text(json.dumps({"accounts": {"region": "custom_field.cf_territory"}}))
    accounts, contacts, _ = apply_field_map(load_field_map(path))
    assert accounts.column("region").source == "custom_field.cf_territory"
    assert accounts.column("industry").source == "custom_field.cf_industry"
    assert contacts == apply_field_map({})[1]


def test_the_environment_variable_applies_it_to_every_module(
    tmp_path: Path, configuration_env: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fields.json"
    path.write_text(json.dumps({"deals": {"deal_size": "custom_field.cf_amount_eur"}}))
    configuration_env.setenv("CRM_FIELD_MAP", str(path))
    assert get_domain("deals").column("deal_size").source == "custom_field.cf_amount_eur"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read .* as JSON"),
        ('{"orders": {"x": "y"}}', r"unknown domains \['orders'\]"),
        ('{"deals": {"deal_colour": "name"}}', r"unknown columns: \['deal_colour'\]"),
        ('{"deals": {"deal_size": "amount; DROP TABLE deals"}}', "invalid Freshsales field path"),
        ('["deals"]', "must look like"),
    ],
)
def test_a_bad_field_map_names_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "fields.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        apply_field_map(load_field_map(path))
