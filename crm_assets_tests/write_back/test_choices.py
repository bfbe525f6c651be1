"""A write to a CRM dropdown must be one of the choices the CRM's field settings list."""

from __future__ import annotations

from typing import Any

import pytest

from crm_assets.freshsales.errors import CrmPermissionError
from crm_assets.write_back import UpdateRequest, UpdateRequestError, check_crm_choices, validate_request

PROBABILITY = {
    "name": "cf_probability_of_closure",
    "label": "Probability of closure",
    "type": "dropdown",
    "choices": [{"id": 1, "value": "Low"}, {"id": 2, "value": "Medium"}, {"id": 3, "value": "High"}],
}


class SettingsOnly:
    """A client that answers only the field settings (or fails them)."""

    def __init__(self, fields: list[dict[str, Any]] | Exception) -> None:
        self.fields = fields

    def field_settings(self, entity: str) -> list[dict[str, Any]]:
        assert entity == "deals"
        if isinstance(self.fields, Exception):
            raise self.fields
        return self.fields


def _check(
    fields: list[dict[str, Any]] | Exception, update_value: str, key_to_update: str = "probability_of_closure"
) -> None:
    update = validate_request(UpdateRequest("deals", "deal_id", "1", key_to_update, update_value))
    check_crm_choices(SettingsOnly(fields), update)  # type: ignore[arg-type]  # duck-typed client


@pytest.mark.parametrize("value", ["Low", "High"])
def test_a_choice_passes(value: str) -> None:
    _check([PROBABILITY], value)


def test_another_spelling_is_refused_with_the_close_choice() -> None:
    with pytest.raises(
        UpdateRequestError, match=r"'low' is not a choice .* \(did you mean 'Low'\?\); choices: Low, Medium, High"
    ):
        _check([PROBABILITY], "low")


def test_a_field_the_crm_does_not_show_as_a_dropdown_takes_any_value() -> None:
    _check([PROBABILITY | {"type": "text"}], "Certain")
    _check([], "Certain")  # not listed at all: the sync's field check reports that


def test_each_part_of_a_multi_select_must_be_a_choice() -> None:
    multi = PROBABILITY | {"type": "multi_select_dropdown"}
    _check([multi], "Low;High")
    with pytest.raises(UpdateRequestError, match="'Low;Certain' is not a choice"):
        _check([multi], "Low;Certain")


def test_unreadable_field_settings_refuse_the_write() -> None:
    """Whether the value is allowed cannot be told: nothing is written rather than a value the CRM may not list."""
    with pytest.raises(UpdateRequestError, match=r"cannot read the CRM's field settings of deals, .*: no access"):
        _check(CrmPermissionError("no access"), "Low")


def test_a_column_that_is_not_a_dropdown_in_the_crm_is_checked_by_its_own_name() -> None:
    name = {"name": "name", "label": "Name", "type": "text"}
    _check([PROBABILITY, name], "Any deal name", key_to_update="deal_name")
