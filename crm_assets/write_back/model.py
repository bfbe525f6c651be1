"""The write-back's vocabulary: what is asked, what is planned, what happened; data only.

Every other write-back module imports these, and this module imports none of them, so the steps
(request -> plan -> apply -> store) depend on one another in one direction only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from crm_assets.domains import Column, Domain
from crm_assets.transform.coerce import to_crm_value
from crm_assets.values import value_text


class Action(StrEnum):
    """What the plan does to one record."""

    UPDATE = "update"
    SKIP = "skip"  # already at the new value


class Status(StrEnum):
    """What happened to one record; also its `crm_update_audit.status`."""

    PLANNED = "planned"  # dry run, or written before the first PUT (left so when it was never sent)
    SKIPPED = "skipped"
    APPLIED = "applied"
    FAILED = "failed"


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
    crm_spelling: str | None = None  # how the CRM's dropdown spells the choice new_value names (see choices.py)

    @property
    def new_wire_value(self) -> Any:
        return self.crm_spelling if self.crm_spelling is not None else to_crm_value(self.target, self.new_value)

    @property
    def new_text(self) -> str | None:
        return value_text(self.new_wire_value)

    @property
    def description(self) -> str:
        return (
            f"{self.domain.name} with {self.key_column.name} = {self.request.value!r}: "
            f"set {self.target.name} to {self.new_text!r}"
        )


@dataclass(frozen=True)
class PlannedChange:
    """One record's change as read from the CRM; `updated_at` is the CRM's, to detect later edits."""

    crm_id: int
    action: Action
    old_text: str | None
    new_text: str | None
    updated_at: str | None
    created_at: str | None


@dataclass(frozen=True)
class UpdatePlan:
    update: ValidatedUpdate
    changes: tuple[PlannedChange, ...]

    @property
    def dry_run(self) -> bool:
        return self.update.request.dry_run

    @property
    def to_apply(self) -> tuple[PlannedChange, ...]:
        return tuple(c for c in self.changes if c.action == Action.UPDATE)

    @property
    def skipped(self) -> tuple[PlannedChange, ...]:
        return tuple(c for c in self.changes if c.action == Action.SKIP)


@dataclass(frozen=True)
class ChangeOutcome:
    """What happened to one record. `in_sync`: the CRM now holds the new value."""

    crm_id: int
    status: Status
    old_text: str | None
    new_text: str | None
    error: str | None = None
    in_sync: bool = False
    updated_at: datetime | None = None  # the CRM's updated_at after our PUT
    created_date: str | None = None  # UTC date of the record's created_at
    replanned: bool = False
    warehouse_changed: bool = False
    crm_record: dict[str, Any] | None = field(default=None, repr=False)  # the record as the PUT returned it


def count_by_status(outcomes: list[ChangeOutcome]) -> dict[str, int]:
    """Applied, skipped and failed records, in that order (the job's metadata and the CLI's summary)."""
    return {s.value: sum(o.status == s for o in outcomes) for s in (Status.APPLIED, Status.SKIPPED, Status.FAILED)}
