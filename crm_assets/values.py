"""How a JSON value reads as text: one rule for every side that compares or shows field values.

The cleaning pipeline reads raw fields as JSON-path text, the write-back plans and audits with that text, and
the demo CRM answers `is` / lookup queries on it, so a value that matches on one side matches on all.
"""

from __future__ import annotations

from typing import Any

import orjson


def value_text(value: Any) -> str | None:
    """A JSON value as text: None stays None (so "cleared" differs from "empty"), booleans as JSON spells them,
    numbers as Python prints them, objects and lists as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()
