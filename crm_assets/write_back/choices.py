"""A write to a CRM dropdown must be one of its choices; the CRM's field settings list them.

The domain declares a column's type, not whether the CRM shows it as a dropdown (`probability_of_closure`
is TEXT here, a dropdown there), and the CRM may store any string it is sent: the settings decide. A value
is sent as the CRM spells the choice it names: its label, or its id for a dropdown that holds ids (`*_id`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from crm_assets.domains import ColumnType
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.freshsales.errors import CrmError, CrmNotFoundError, CrmPermissionError
from crm_assets.transform.coerce import cast_value
from crm_assets.write_back.model import UpdateRequestError, ValidatedUpdate

DROPDOWN = "dropdown"
MULTI_SELECT = "multi_select_dropdown"
MULTI_SELECT_SEPARATOR = ";"  # how Freshsales joins a multi-select field's choices
ID_SUFFIX = "_id"  # Freshsales' own dropdowns that hold a choice's id are named so (deal_stage_id, territory_id)
_NUMERIC = (ColumnType.DECIMAL, ColumnType.INTEGER, ColumnType.BIGINT)


def check_crm_choices(client: FreshsalesClient, update: ValidatedUpdate, log: logging.Logger) -> ValidatedUpdate:
    """`update`, sending the CRM's own spelling of the choice when the target is a CRM dropdown; raises
    UpdateRequestError when the new value names none of its choices."""
    if update.new_value is None:  # clearing a field needs no choice
        return update
    field = _field(client, update, log)
    if field is None or field.get("type") not in (DROPDOWN, MULTI_SELECT):
        return update
    choices = _choices(field)
    value = str(update.new_wire_value)
    multi = field.get("type") == MULTI_SELECT
    parts = [p.strip() for p in value.split(MULTI_SELECT_SEPARATOR)] if multi else [value]
    by_id = not update.target.is_custom_field and update.target.settings_name.endswith(ID_SUFFIX)
    spelled = [_spelling(update, part, choices, by_id) for part in parts]
    unknown = [part for part, spelling in zip(parts, spelled, strict=True) if spelling is None]
    if unknown:
        name = update.target.settings_name
        labels = [label for label, _ in choices]
        listed = [f"{choice_id} ({label})" for label, choice_id in choices] if by_id else labels
        raise UpdateRequestError(
            f"update_value {update.request.update_value!r} is not a choice of the CRM's dropdown "
            f"{field.get('label') or name!r} ({name}), which {update.target.name} is written to"
            f"{_suggestion(unknown[0], labels)}; choices: {', '.join(listed)}"
        )
    wire = MULTI_SELECT_SEPARATOR.join(s for s in spelled if s is not None)
    if wire == value:
        return update
    # The value the CRM will hold, typed as a read of it is: "already set" and the applied check compare with it.
    return replace(update, new_value=cast_value(update.target, wire), crm_spelling=wire)


def _field(client: FreshsalesClient, update: ValidatedUpdate, log: logging.Logger) -> Mapping[str, Any] | None:
    """The target's entry in the CRM's field settings. Settings this API key may not read (or an account
    without them) cannot say: the write goes ahead, as before the check. Any other failure refuses it."""
    entity, name = update.domain.entity, update.target.settings_name
    try:
        fields = client.field_settings(entity)
    except (CrmPermissionError, CrmNotFoundError) as exc:
        log.warning(f"cannot read the CRM's field settings of {entity} ({exc}): {name} is written unchecked")
        return None
    except CrmError as exc:
        raise UpdateRequestError(
            f"cannot read the CRM's field settings of {entity}, which say whether {update.target.name} takes only "
            f"certain values: {exc}; try again"
        ) from None
    return next((f for f in fields if isinstance(f, Mapping) and f.get("name") == name), None)


def _choices(field: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(label, id) of each choice; the id None when the settings give none."""
    listed = field.get("choices")
    if not isinstance(listed, Sequence):
        return []
    return [
        (str(c["value"]), None if c.get("id") is None else str(c["id"]))
        for c in listed
        if isinstance(c, Mapping) and c.get("value") is not None
    ]


def _spelling(update: ValidatedUpdate, part: str, choices: list[tuple[str, str | None]], by_id: bool) -> str | None:
    """How the CRM spells the choice `part` names, or None when it names none.

    A dropdown that holds ids (`by_id`) takes a choice's id; any other a label: as is, for an enum column as
    the cleaning reads it (case and spaces aside), for a number column the same number (`10.00` names `10`).
    """
    if by_id:
        return part if any(part == choice_id for _, choice_id in choices) else None
    if any(part == label for label, _ in choices):
        return part
    if update.target.type is ColumnType.ENUM:
        same = [label for label, _ in choices if _folded(label) == _folded(part)]
        return same[0] if len(same) == 1 else None
    if update.target.type in _NUMERIC:
        number = _number(part)
        same = [label for label, _ in choices if number is not None and _number(label) == number]
        return same[0] if len(same) == 1 else None
    return None


def _folded(text: str) -> str:
    return " ".join(text.split()).casefold()


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        return None


def _suggestion(value: str, labels: list[str]) -> str:
    """` (did you mean 'Low'?)` for a value that differs from a choice only in case or spaces."""
    close = [label for label in labels if _folded(label) == _folded(value)]
    return f" (did you mean {close[0]!r}?)" if close else ""
