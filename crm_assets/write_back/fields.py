"""Reading a domain field from a Freshsales record and writing it back, both through `Column.source`."""

from __future__ import annotations

from typing import Any

from crm_assets.domains import Column
from crm_assets.transform.coerce import cast_value, to_crm_value
from crm_assets.values import value_text

Record = dict[str, Any]


class _Unreadable:
    """A value that does not cast: equal to nothing, so it never matches and is always rewritten."""

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)


UNREADABLE: Any = _Unreadable()


def read_field(record: Record, column: Column) -> Any:
    """The field's value as the CRM holds it (None when absent)."""
    node: Any = record
    for part in column.source_path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def field_body(column: Column, wire_value: Any) -> dict[str, Any]:
    """The PUT fields that set just this one: {"custom_field": {"cf_region": "Asia"}} or {"name": "Acme"}."""
    body: Any = wire_value
    for part in reversed(column.source_path):
        body = {part: body}
    result: dict[str, Any] = body
    return result


def typed_field(record: Record, column: Column) -> Any:
    """The field cast by the domain's rules; UNREADABLE when the CRM holds something uncastable."""
    try:
        return cast_value(column, value_text(read_field(record, column)))
    except ValueError:
        return UNREADABLE


def field_text(record: Record, column: Column) -> str | None:
    """The field as tables and the audit show it: in the form the write-back sends, so an old value reads like
    the new one (302400.00 next to 24456.00); the CRM's own text when it does not cast."""
    return typed_text(record, column, typed_field(record, column))


def typed_text(record: Record, column: Column, typed: Any) -> str | None:
    """`field_text` when the caller already holds the typed value (`typed_field`)."""
    if typed is UNREADABLE:
        return value_text(read_field(record, column))
    return value_text(to_crm_value(column, typed))


def search_attribute(column: Column) -> str:
    """The filtered_search attribute of a field: its cf_ name for custom fields, else the field name."""
    return column.source_path[-1]
