"""A write to a CRM dropdown must be one of its choices; the CRM's field settings list them.

The domain declares a column's type, not whether the CRM shows it as a dropdown (`probability_of_closure`
is TEXT here, a dropdown there), and the CRM may store any string it is sent: the settings decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmError
from crm_assets.write_back.model import UpdateRequestError, ValidatedUpdate

DROPDOWN = "dropdown"
MULTI_SELECT = "multi_select_dropdown"
MULTI_SELECT_SEPARATOR = ";"  # how Freshsales joins a multi-select field's choices


def check_crm_choices(client: FreshsalesClient, update: ValidatedUpdate) -> None:
    """Raise UpdateRequestError when the target is a CRM dropdown and the new value is none of its choices."""
    if update.new_value is None:  # clearing a field needs no choice
        return
    entity, name = update.domain.entity, update.target.settings_name
    try:
        fields = client.field_settings(entity)
    except CrmError as exc:
        raise UpdateRequestError(
            f"cannot read the CRM's field settings of {entity}, which say whether {update.target.name} takes only "
            f"certain values: {exc}"
        ) from None
    field = next((f for f in fields if isinstance(f, Mapping) and f.get("name") == name), None)
    if field is None or field.get("type") not in (DROPDOWN, MULTI_SELECT):
        return
    choices = _choices(field)
    value = str(update.new_wire_value)
    parts = value.split(MULTI_SELECT_SEPARATOR) if field.get("type") == MULTI_SELECT else [value]
    unknown = [p for p in parts if p not in choices]
    if unknown:
        label = field.get("label") or name
        raise UpdateRequestError(
            f"update_value {value!r} is not a choice of the CRM's dropdown {label!r} ({name}), which "
            f"{update.target.name} is written to{_suggestion(unknown[0], choices)}; choices: {', '.join(choices)}"
        )


def _choices(field: Mapping[str, Any]) -> list[str]:
    listed = field.get("choices")
    if not isinstance(listed, Sequence):
        return []
    return [str(c["value"]) for c in listed if isinstance(c, Mapping) and c.get("value") is not None]


def _suggestion(value: str, choices: list[str]) -> str:
    """`: did you mean 'Low'?` for a value that differs from a choice only in case or surrounding spaces."""
    close = [c for c in choices if c.strip().casefold() == value.strip().casefold()]
    return f" (did you mean {close[0]!r}?)" if close else ""
