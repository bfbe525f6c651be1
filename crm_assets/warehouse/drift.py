"""Schema drift: a mapped CRM field that has disappeared, told apart from records that merely lack a value.

When someone deletes or renames a custom field in the CRM, every record touched afterwards arrives
without it. Cleaning those records would reject them as `<column>: missing` and take them, and every
record that references them, out of the clean tables. A field that is absent (the key itself, not a null
value) from every changed record of a batch is therefore treated as a change of schema, not of data: the
clean step refuses to write and says how to map the field again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from crm_assets.domains import Domain
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.schema import RAW_TABLES

# Below this many changed live records, a field missing from all of them may be chance (a few records
# created through an import that skipped it), not drift.
DRIFT_MIN_RECORDS = 10

# Record attributes every entity has that the CRM's field settings do not list.
SYSTEM_FIELDS = frozenset({"id", "created_at", "updated_at", "is_deleted"})


class SchemaDriftError(RuntimeError):
    """Mapped fields are gone from every changed record; the message names them and the fix."""


@dataclass(frozen=True)
class MissingField:
    column: str  # the clean-table column
    source: str  # where the field map reads it: "custom_field.cf_region"


def drift_message(domain: Domain, missing: Sequence[MissingField], evidence: str) -> str:
    fields = ", ".join(f"{m.column} (CRM field {m.source})" for m in missing)
    return (
        f"schema drift in {domain.name}: {fields} {evidence}. The field was probably renamed or deleted in "
        f"the CRM; nothing was written to {domain.name}. Fix: map {_columns(missing)} to the field's new name in "
        f'the JSON file CRM_FIELD_MAP names (e.g. {{"{domain.name}": {{"{missing[0].column}": '
        f'"custom_field.<new name>"}}}}), then run the {domain.name} asset with config {{rebuild: true}}; '
        "or restore the field in the CRM."
    )


def _columns(missing: Sequence[MissingField]) -> str:
    return ", ".join(m.column for m in missing)


def _present(conn: sa.Connection, payload: sa.Column[Any], path: tuple[str, ...]) -> sa.ColumnElement[bool]:
    """True when the JSON key exists in the payload, whatever its value (a JSON null counts as present)."""
    if is_postgres(conn):
        return sa.literal_column(f"({payload.name} #> '{{{','.join(path)}}}')").is_not(None)
    # json_type gives SQL NULL for a missing path and 'null' for a JSON null (paths are validated identifiers).
    return sa.literal_column(f"json_type({payload.name}, '$.{'.'.join(path)}')").is_not(None)


def _changed(domain: Domain, after_seq: int, through_seq: int) -> sa.ColumnElement[bool]:
    table = RAW_TABLES[domain.name]
    return sa.and_(table.c.change_seq.between(after_seq + 1, through_seq), ~table.c.is_deleted)


def missing_in_changed_records(
    conn: sa.Connection, domain: Domain, after_seq: int, through_seq: int, minimum: int = DRIFT_MIN_RECORDS
) -> list[MissingField]:
    """Mapped fields absent from every live raw record with after_seq < change_seq <= through_seq.

    One statement, cheap when nothing drifted: per field an EXISTS that stops at the first changed
    record carrying it (a range of the change_seq index). Fewer than `minimum` changed records say nothing.
    """
    table, changed = RAW_TABLES[domain.name], _changed(domain, after_seq, through_seq)
    columns = list(domain.columns)
    up_to_minimum = sa.select(sa.literal(1)).where(changed).limit(minimum).subquery()
    query = sa.select(
        sa.select(sa.func.count()).select_from(up_to_minimum).scalar_subquery(),
        *(sa.exists().where(changed, _present(conn, table.c.payload, c.source_path)) for c in columns),
    )
    counted, *carried = conn.execute(query).one()
    if counted < minimum:
        return []
    return [MissingField(c.name, c.source) for c, found in zip(columns, carried, strict=True) if not found]


def guard_changed_records(
    conn: sa.Connection, domain: Domain, after_seq: int, through_seq: int, minimum: int = DRIFT_MIN_RECORDS
) -> None:
    """Raise SchemaDriftError, before anything is written, when a mapped field vanished from the changed records."""
    if missing := missing_in_changed_records(conn, domain, after_seq, through_seq, minimum):
        changed = _changed(domain, after_seq, through_seq)
        total = conn.execute(sa.select(sa.func.count()).select_from(RAW_TABLES[domain.name]).where(changed)).scalar()
        raise SchemaDriftError(drift_message(domain, missing, f"missing from all {total:,} changed records"))


def missing_in_field_settings(domain: Domain, settings: Iterable[Mapping[str, Any]]) -> list[MissingField]:
    """Mapped fields that `GET /api/settings/<entity>/fields` no longer lists (system fields aside)."""
    listed = {str(f["name"]) for f in settings if isinstance(f, Mapping) and "name" in f}
    return [
        MissingField(c.name, c.source)
        for c in domain.columns
        if c.settings_name not in listed and c.settings_name not in SYSTEM_FIELDS
    ]
