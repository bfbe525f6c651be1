"""Per-tenant field maps: columns read from (and written back to) other Freshsales fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crm_assets.domains import configured_domains, load_field_map


def test_a_field_map_moves_a_column_to_another_custom_field(tmp_path: Path) -> None:
    path = tmp_path / "fields.json"
    path.write_text(json.dumps({"accounts": {"region": "custom_field.cf_territory"}}))
    accounts, contacts, _ = configured_domains(load_field_map(path))
    assert accounts.column("region").source == "custom_field.cf_territory"
    assert accounts.column("industry").source == "custom_field.cf_industry"
    assert contacts == configured_domains({})[1]


def test_the_environment_variable_applies_it_to_every_module(tmp_path: Path) -> None:
    path = tmp_path / "fields.json"
    path.write_text(json.dumps({"deals": {"deal_size": "custom_field.cf_amount_eur"}}))
    code = "from crm_assets.domains import get_domain; print(get_domain('deals').column('deal_size').source)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=os.environ | {"CRM_FIELD_MAP": str(path)}, capture_output=True, text=True
    )
    assert result.stdout.strip() == "custom_field.cf_amount_eur", result.stderr


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
        configured_domains(load_field_map(path))
