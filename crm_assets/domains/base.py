"""What a CRM domain is, declared as data.

A domain module (accounts.py, contacts.py, deals.py) builds one `Domain`. Everything else, from the raw
extract to the clean table, the asset checks and the write-back job, is derived from these declarations,
so adding a domain means adding one module and listing it in `crm_assets.domains.DEFAULT_DOMAINS`. The module also
declares the domain's `DemoRecipe`, from which the demo CRM serves the entity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from crm_assets.domains.demo import DemoRecipe

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ColumnType(StrEnum):
    TEXT = "text"
    BIGINT = "bigint"
    INTEGER = "integer"
    DECIMAL = "decimal"  # NUMERIC(18, 2), rounded half-even to cents
    DATE = "date"  # a timestamp fed to it takes its UTC date
    TIMESTAMP = "timestamp"  # stored in UTC, keeps its instant
    ENUM = "enum"  # canonical label from `choices`


@dataclass(frozen=True)
class Column:
    """A clean-table column and where its value lives in a Freshsales record."""

    name: str
    type: ColumnType
    source: str  # dotted path in the record: "name", "custom_field.cf_region"
    nullable: bool = False
    choices: tuple[str, ...] = ()  # canonical labels, for ENUM columns
    description: str = ""

    def __post_init__(self) -> None:
        # Source paths end up inside SQL JSON-path expressions: allow identifiers only.
        if not all(_FIELD_NAME.fullmatch(part) for part in self.source.split(".")):
            raise ValueError(f"column {self.name!r}: invalid Freshsales field path {self.source!r}")
        if (self.type is ColumnType.ENUM) != bool(self.choices):
            raise ValueError(f"column {self.name!r}: enum columns, and only they, list choices")

    @property
    def is_custom_field(self) -> bool:
        return self.source.startswith("custom_field.")

    @property
    def source_path(self) -> tuple[str, ...]:
        return tuple(self.source.split("."))

    @property
    def settings_name(self) -> str:
        """The name the CRM's field settings list the source under: the custom field, or the top-level key."""
        return self.source_path[-1] if self.is_custom_field else self.source_path[0]


@dataclass(frozen=True)
class ForeignKey:
    column: str
    domain: str  # the referenced domain's name (its table)
    target_column: str


@dataclass(frozen=True)
class Domain:
    """One CRM entity kept in the warehouse."""

    name: str  # clean table name and asset key: "accounts"
    entity: str  # Freshsales plural, used in URLs and list responses: "sales_accounts"
    singular: str  # Freshsales singular, used in single-record bodies: "sales_account"
    views: tuple[str, ...]  # views that together list every live record
    business_key: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    deleted_view: str = "Recycle Bin"
    description: str = ""
    # Columns a write-back may not change besides the business key.
    read_only: frozenset[str] = field(default_factory=frozenset)
    # How the demo CRM makes this entity's records (see crm_assets.domains.demo); None: not in the demo CRM.
    demo: DemoRecipe | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"domain {self.name!r} declares a column twice: {names}")
        if self.business_key not in names:
            raise ValueError(f"domain {self.name!r}: business key {self.business_key!r} is not a column")
        if unknown := [fk.column for fk in self.foreign_keys if fk.column not in names]:
            raise ValueError(f"domain {self.name!r}: foreign keys {unknown} are not columns")
        if self.column(self.business_key).nullable:  # a record without its key could be neither kept nor told apart
            raise ValueError(f"domain {self.name!r}: business key {self.business_key!r} must not be nullable")

    @property
    def raw_table(self) -> str:
        return f"raw_{self.name}"

    @property
    def raw_asset(self) -> str:
        return f"raw_{self.name}"

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no field {name!r}; fields: {', '.join(c.name for c in self.columns)}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def indexed_columns(self) -> frozenset[str]:
        """The columns the warehouse indexes in every table of the domain: the business key, the foreign keys."""
        return frozenset({self.business_key, *(fk.column for fk in self.foreign_keys)})

    @property
    def writable_columns(self) -> tuple[Column, ...]:
        """Columns the write-back job may change: all but the business key and read-only ones."""
        return tuple(c for c in self.columns if c.name != self.business_key and c.name not in self.read_only)

    def with_sources(self, overrides: Mapping[str, str]) -> Domain:
        """This domain with some columns read from other Freshsales fields (per-tenant custom fields)."""
        unknown = set(overrides) - set(self.column_names)
        if unknown:
            raise ValueError(f"field map for {self.name} names unknown columns: {sorted(unknown)}")
        columns = tuple(replace(c, source=overrides.get(c.name, c.source)) for c in self.columns)
        return replace(self, columns=columns)
