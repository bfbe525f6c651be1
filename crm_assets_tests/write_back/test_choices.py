"""A write to a CRM dropdown must be one of the choices the CRM's field settings list, spelled as the CRM does."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from crm_assets.freshsales.errors import CrmPermissionError, CrmUnavailableError
from crm_assets.write_back import (
    Action,
    UpdateRequest,
    UpdateRequestError,
    ValidatedUpdate,
    check_crm_choices,
    validate_request,
)
from crm_assets.write_back.plan import plan_record

PROBABILITY = {
    "name": "cf_probability_of_closure",
    "label": "Probability of closure",
    "type": "dropdown",
    "choices": [{"id": 1, "value": "Low"}, {"id": 2, "value": "Medium"}, {"id": 3, "value": "High"}],
}
REGION = {
    "name": "cf_region",
    "label": "Region",
    "type": "dropdown",
    "choices": [{"id": 7, "value": "North america"}, {"id": 8, "value": "Europe"}, {"id": 9, "value": "Asia"}],
}
LOG = logging.getLogger(__name__)


class SettingsOnly:
    """A client that answers only the field settings (or fails them)."""

    def __init__(self, fields: list[dict[str, Any]] | Exception) -> None:
        self.fields = fields

    def field_settings(self, entity: str) -> list[dict[str, Any]]:
        if isinstance(self.fields, Exception):
            raise self.fields
        return self.fields


def _check(
    fields: list[dict[str, Any]] | Exception,
    update_value: str,
    key_to_update: str = "probability_of_closure",
    domain: str = "deals",
) -> ValidatedUpdate:
    key = {"deals": "deal_id", "accounts": "account_id"}[domain]
    update = validate_request(UpdateRequest(domain, key, "1", key_to_update, update_value))
    return check_crm_choices(SettingsOnly(fields), update, LOG)  # type: ignore[arg-type]  # duck-typed client


@pytest.mark.parametrize("value", ["Low", "High"])
def test_a_choice_passes_as_it_is(value: str) -> None:
    assert _check([PROBABILITY], value).new_wire_value == value


def test_another_spelling_of_a_text_column_is_refused_with_the_close_choice() -> None:
    close = r"' low ' is not a choice .* \(did you mean 'Low'\?\); choices: Low, Medium, High"
    with pytest.raises(UpdateRequestError, match=close):
        _check([PROBABILITY], " low ")


def test_an_enum_value_is_sent_as_the_crm_spells_the_choice() -> None:
    """The cleaning reads the CRM's `North america` as the domain's `North America`; a write sends it back
    in the CRM's own spelling, which a strict match would refuse for ever."""
    update = _check([REGION], "north AMERICA", key_to_update="region", domain="accounts")
    assert update.new_value == "North America"  # what the warehouse keeps, as the cleaning would
    assert update.new_wire_value == "North america"  # what the CRM is sent
    assert update.new_text == "North america"


def test_a_dropdown_that_holds_ids_takes_a_choice_id_and_only_it() -> None:
    """Freshsales' own `*_id` dropdowns (deal_stage_id) hold a choice's id; custom dropdowns hold its label."""
    stage = {"name": "deal_stage_id", "type": "dropdown", "choices": [{"id": 11, "value": "Won"}, {"id": 12}]}
    update = validate_request(UpdateRequest("deals", "deal_id", "1", "probability_of_closure", "11"))
    mapped = replace(update, target=replace(update.target, source="deal_stage_id"))  # as a CRM_FIELD_MAP may map it
    assert check_crm_choices(SettingsOnly([stage]), mapped, LOG).new_wire_value == "11"  # type: ignore[arg-type]
    refused = replace(mapped, new_value="Won", request=replace(update.request, update_value="Won"))
    with pytest.raises(UpdateRequestError, match=r"'Won' is not a choice .*; choices: 11 \(Won\)$"):
        check_crm_choices(SettingsOnly([stage]), refused, LOG)  # type: ignore[arg-type]
    with pytest.raises(UpdateRequestError, match="'2' is not a choice"):
        _check([PROBABILITY], "2")  # a custom dropdown: ids are no labels


def test_a_spelled_multi_select_value_is_what_already_set_compares_with() -> None:
    """Sent as `Low;High`, the value the CRM then holds: a record holding it is already set, not updated again."""
    multi = PROBABILITY | {"type": "multi_select_dropdown"}
    update = _check([multi], "Low; High")
    assert (update.new_value, update.new_wire_value) == ("Low;High", "Low;High")
    record = {"id": 5, "updated_at": "2024-01-01T00:00:00Z", "custom_field": {"cf_deal_id": 1}}
    record["custom_field"]["cf_probability_of_closure"] = "Low;High"  # type: ignore[index]
    planned = plan_record(update, record)
    assert planned is not None and planned.action is Action.SKIP


def test_a_number_column_names_a_choice_by_its_value() -> None:
    amount = {"name": "amount", "type": "dropdown", "choices": [{"id": 1, "value": "10"}, {"id": 2, "value": "20.5"}]}
    assert _check([amount], "10", key_to_update="deal_size").new_wire_value == "10"
    assert _check([amount], "20.50", key_to_update="deal_size").new_wire_value == "20.5"
    with pytest.raises(UpdateRequestError, match="'30' is not a choice"):
        _check([amount], "30", key_to_update="deal_size")


def test_a_field_the_crm_does_not_show_as_a_dropdown_takes_any_value() -> None:
    assert _check([PROBABILITY | {"type": "text"}], "Certain").new_wire_value == "Certain"
    assert _check([], "Certain").new_wire_value == "Certain"  # not listed at all: the sync's field check says so


def test_each_part_of_a_multi_select_must_be_a_choice() -> None:
    multi = PROBABILITY | {"type": "multi_select_dropdown"}
    assert _check([multi], "Low;High").new_wire_value == "Low;High"
    assert _check([multi], "Low; High").new_wire_value == "Low;High"
    with pytest.raises(UpdateRequestError, match="'Low;Certain' is not a choice"):
        _check([multi], "Low;Certain")


def test_field_settings_the_key_may_not_read_leave_the_value_unchecked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert _check(CrmPermissionError("no access"), "Certain").new_wire_value == "Certain"
    unchecked = "field settings of deals (no access): cf_probability_of_closure is written unchecked"
    assert unchecked in caplog.text


def test_field_settings_the_crm_fails_to_answer_refuse_the_write() -> None:
    with pytest.raises(UpdateRequestError, match=r"cannot read the CRM's field settings of deals, .*: down; try again"):
        _check(CrmUnavailableError("down"), "Low")


def test_clearing_a_dropdown_needs_no_choice() -> None:
    assert _check(CrmUnavailableError("never asked"), "", key_to_update="deal_size").new_value is None
