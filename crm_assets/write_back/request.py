"""What a write-back asks for, checked and cast before anything is read or written."""

from __future__ import annotations

from typing import Any

from crm_assets.domains import Column, Domain, get_domain
from crm_assets.transform.coerce import cast_value
from crm_assets.write_back.model import UpdateRequest, UpdateRequestError, ValidatedUpdate

# Names people may try that are no domain column: the CRM's own record id.
_CRM_ID_NAMES = frozenset({"crm_id", "id"})


def _domain(name: str) -> Domain:
    try:
        return get_domain(name)
    except KeyError as exc:
        raise UpdateRequestError(str(exc.args[0])) from None


def _column(domain: Domain, name: str, role: str) -> Column:
    if name in _CRM_ID_NAMES:
        raise UpdateRequestError(
            f"{role} {name!r}: the CRM record id is not a field of {domain.name}; "
            f"use one of {', '.join(domain.column_names)}"
        )
    try:
        return domain.column(name)
    except KeyError as exc:
        raise UpdateRequestError(f"{role}: {exc.args[0]}") from None


def _writable(domain: Domain, name: str) -> Column:
    column = _column(domain, name, "key_to_update")
    if column.name == domain.business_key:
        raise UpdateRequestError(
            f"key_to_update {name!r} is the business key of {domain.name} and cannot be changed; "
            f"writable fields: {', '.join(c.name for c in domain.writable_columns)}"
        )
    if column not in domain.writable_columns:
        raise UpdateRequestError(
            f"key_to_update {name!r} is read-only in {domain.name}; "
            f"writable fields: {', '.join(c.name for c in domain.writable_columns)}"
        )
    return column


def _cast(column: Column, raw: str, role: str) -> Any:
    try:
        return cast_value(column, raw)
    except ValueError as exc:
        raise UpdateRequestError(f"{role} {raw!r} does not fit {column.name}: {_reason(column, str(exc))}") from None


def _reason(column: Column, message: str) -> str:
    """The cast's reason without repeating the column and the value: "expected one of ...", "missing (required)"."""
    _, found, expected = message.partition(", expected ")
    return f"expected {expected}" if found else message.removeprefix(f"{column.name}: ")


def _unstorable(text: str) -> str | None:
    """The first character PostgreSQL, SQLite's UTF-8 or the CRM's JSON refuses, described; None when all fit.

    PostgreSQL text and JSON hold no NUL, UTF-8 holds no lone surrogate, and the CRM rejects the other C0
    controls; tab, newline and carriage return are ordinary text.
    """
    for position, char in enumerate(text, start=1):
        code = ord(char)
        if code == 0:
            return f"a NUL character (U+0000) at position {position}"
        if 0xD800 <= code <= 0xDFFF:
            return f"a lone surrogate (U+{code:04X}) at position {position}"
        if (code < 0x20 and char not in "\t\n\r") or code == 0x7F:
            return f"the control character U+{code:04X} at position {position}"
    return None


def _check_storable(request: UpdateRequest) -> None:
    for role, text in (("value", request.value), ("update_value", request.update_value)):
        if (problem := _unstorable(text)) is not None:
            raise UpdateRequestError(
                f"{role} {text!r} contains {problem}, which neither the warehouse nor the CRM can store; "
                "remove it and run again"
            )


def validate_request(request: UpdateRequest) -> ValidatedUpdate:
    """Check every field and cast both values; raises UpdateRequestError naming the first problem."""
    _check_storable(request)
    domain = _domain(request.domain)
    key_column = _column(domain, request.key, "key")
    target = _writable(domain, request.key_to_update)
    key_value = _cast(key_column, request.value, "value")
    if key_value is None:
        raise UpdateRequestError(f"value is empty: give the {key_column.name} of the records to update")
    new_value = _cast(target, request.update_value, "update_value")
    return ValidatedUpdate(request, domain, key_column, key_value, target, new_value)
