"""What a write-back asks for, checked and cast before anything is read or written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crm_assets.domains import Column, Domain, get_domain
from crm_assets.transform.coerce import cast_value, to_crm_value

# Names people may try that are no domain column: the CRM's own record id.
_CRM_ID_NAMES = frozenset({"crm_id", "id"})


class UpdateRequestError(ValueError):
    """Bad input: the message names the field or value at fault and what would be accepted."""


@dataclass(frozen=True)
class UpdateRequest:
    """The job's input exactly as given: every value is a string."""

    domain: str
    key: str
    value: str
    key_to_update: str
    update_value: str
    dry_run: bool = False


@dataclass(frozen=True)
class ValidatedUpdate:
    """A request whose domain and fields exist and whose values are cast to the fields' types."""

    request: UpdateRequest
    domain: Domain
    key_column: Column
    key_value: Any
    target: Column
    new_value: Any

    @property
    def new_wire_value(self) -> Any:
        return to_crm_value(self.target, self.new_value)

    @property
    def new_text(self) -> str | None:
        return display_text(self.new_wire_value)

    @property
    def description(self) -> str:
        return (
            f"{self.domain.name} with {self.key_column.name} = {self.request.value!r}: "
            f"set {self.target.name} to {self.new_text!r}"
        )


def display_text(value: Any) -> str | None:
    """A wire value as audit and table text (None stays None, so "cleared" differs from "empty")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
        raise UpdateRequestError(f"{role} {raw!r} does not fit {column.name}: {exc}") from None


def validate_request(request: UpdateRequest) -> ValidatedUpdate:
    """Check every field and cast both values; raises UpdateRequestError naming the first problem."""
    domain = _domain(request.domain)
    key_column = _column(domain, request.key, "key")
    target = _writable(domain, request.key_to_update)
    key_value = _cast(key_column, request.value, "value")
    if key_value is None:
        raise UpdateRequestError(f"value is empty: give the {key_column.name} of the records to update")
    new_value = _cast(target, request.update_value, "update_value")
    return ValidatedUpdate(request, domain, key_column, key_value, target, new_value)
