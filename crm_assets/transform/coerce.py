"""Coercion of CRM values to column types: SPEC section 3, rule 1, written once for every caller.

Input values are strings (or null) as read from the raw JSON; each column yields a typed value and, where
the input could not be used, a reason. The cleaning pipeline applies `coerce_column` to whole frames; the
write-back job casts a single user-supplied string with `cast_value`, through the very same expressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import polars as pl

from crm_assets.domains import Column, ColumnType

MONEY = pl.Decimal(18, 2)
INT64_RANGE = 2.0**63
# The longest text an indexed column (a business or foreign key) may hold, in UTF-8 bytes: a PostgreSQL
# B-tree entry holds at most 2,704 bytes (a third of a page). A longer key would fail the whole load.
KEY_MAX_BYTES = 2_000
_WITH_OFFSET = "%Y-%m-%dT%H:%M:%S%.f%#z"
_NAIVE = "%Y-%m-%dT%H:%M:%S%.f"
_DATE = "%Y-%m-%d"
_CALENDAR_YEARS = (1, 9999)

POLARS_TYPES: dict[ColumnType, pl.DataType] = {
    ColumnType.TEXT: pl.String(),
    ColumnType.BIGINT: pl.Int64(),
    ColumnType.INTEGER: pl.Int32(),
    ColumnType.DECIMAL: MONEY,
    ColumnType.DATE: pl.Date(),
    ColumnType.TIMESTAMP: pl.Datetime("us", "UTC"),
    ColumnType.ENUM: pl.String(),
}


@dataclass(frozen=True)
class Coerced:
    """A column's typed value and, for unusable input, why (null when fine)."""

    value: pl.Expr
    error: pl.Expr


def missing(raw: pl.Expr) -> pl.Expr:
    """Null, empty or whitespace-only counts as missing."""
    return raw.is_null() | (raw.str.strip_chars() == "")


def _integer(raw: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    text = raw.str.strip_chars()
    as_int = text.cast(pl.Int64, strict=False)
    # Only what is no plain integer is read as a float (the coalesce below takes the integer first).
    as_float = pl.when(as_int.is_null()).then(text).cast(pl.Float64, strict=False)
    integral = as_float.is_finite() & (as_float == as_float.floor()) & (as_float.abs() < INT64_RANGE)
    from_float = pl.when(integral).then(as_float).otherwise(None).cast(pl.Int64, strict=False)
    value = pl.coalesce(as_int, from_float)
    if dtype != pl.Int64():
        value = value.cast(dtype, strict=False)
    return value


def _decimal(raw: pl.Expr) -> pl.Expr:
    # Polars' string -> Decimal cast rounds half-even to the target scale.
    return raw.str.strip_chars().cast(MONEY, strict=False)


def _timestamp(raw: pl.Expr) -> pl.Expr:
    text = raw.str.strip_chars()
    with_offset = text.str.to_datetime(_WITH_OFFSET, time_zone="UTC", strict=False, time_unit="us")
    # Only what has no offset is parsed again (the coalesce below takes the offset form first).
    without_offset = pl.when(with_offset.is_null()).then(text)
    naive = without_offset.str.to_datetime(_NAIVE, strict=False, time_unit="us").dt.replace_time_zone("UTC")
    return _in_calendar(pl.coalesce(with_offset, naive))


def _in_calendar(instants: pl.Expr) -> pl.Expr:
    """Null for a date or instant outside years 1 to 9999 in UTC: "0001-01-01T00:00:00+05:30" is in year 0.
    Neither database nor Python stores those: one such record would fail every load of its domain."""
    return pl.when(instants.dt.year().is_between(*_CALENDAR_YEARS)).then(instants)


def _date(raw: pl.Expr) -> pl.Expr:
    text = raw.str.strip_chars()
    plain = _in_calendar(text.str.to_date(_DATE, strict=False))
    longer = pl.when(text.str.len_chars() != 10).then(raw)  # only these are parsed as timestamps
    return pl.when(text.str.len_chars() == 10).then(plain).otherwise(_timestamp(longer).dt.date())


def normalize_label(raw: pl.Expr) -> pl.Expr:
    return raw.str.strip_chars().str.replace_all(r"\s+", " ").str.to_lowercase()


def _enum(raw: pl.Expr, choices: tuple[str, ...]) -> pl.Expr:
    canonical = {label.lower(): label for label in choices}
    return normalize_label(raw).replace_strict(canonical, default=None, return_dtype=pl.String)


def typed_value(column: Column, raw: pl.Expr) -> pl.Expr:
    """`raw` (a String expression) read as `column`'s type, null where it cannot be (missing or not)."""
    match column.type:
        case ColumnType.TEXT:
            return raw
        case ColumnType.BIGINT | ColumnType.INTEGER:
            return _integer(raw, POLARS_TYPES[column.type])
        case ColumnType.DECIMAL:
            return _decimal(raw)
        case ColumnType.TIMESTAMP:
            return _timestamp(raw)
        case ColumnType.DATE:
            return _date(raw)
        case ColumnType.ENUM:
            return _enum(raw, column.choices)
    raise AssertionError(f"unhandled column type {column.type}")


def _expected(column: Column) -> str:
    if column.type is ColumnType.ENUM:
        return "one of " + ", ".join(column.choices)
    return {
        ColumnType.BIGINT: "a whole number",
        ColumnType.INTEGER: "a whole number",
        ColumnType.DECIMAL: "a decimal number",
        ColumnType.TIMESTAMP: "an ISO-8601 timestamp",
        ColumnType.DATE: "a date (YYYY-MM-DD) or timestamp",
    }.get(column.type, "text")


def coerce_column(column: Column, raw: pl.Expr, typed: pl.Expr | None = None, *, indexed: bool = False) -> Coerced:
    """The typed value of `raw` (a String expression) for `column`, and why it is unusable if it is.

    `typed`: `typed_value(column, raw)` when the caller has it computed already (a column of the frame):
    eager polars would otherwise compute it twice, once for the value and once for the reason.
    `indexed`: the warehouse indexes the column (`Domain.indexed_columns`): text longer than KEY_MAX_BYTES is unusable.
    """
    is_missing = missing(raw)
    typed = typed_value(column, raw) if typed is None else typed
    uncastable = ~is_missing & typed.is_null()
    too_long = pl.lit(False)
    if indexed and column.type is ColumnType.TEXT:
        too_long = raw.str.len_bytes() > KEY_MAX_BYTES
    error = (
        pl.when(is_missing & pl.lit(not column.nullable))
        .then(pl.lit(f"{column.name}: missing (required)"))
        .when(uncastable)
        .then(pl.format(f"{column.name}: cannot use {{}}, expected {_expected(column)}", raw))
        .when(too_long)
        .then(
            pl.format(
                f"{column.name}: cannot use a key of {{}} bytes, expected at most {KEY_MAX_BYTES:,}",
                raw.str.len_bytes(),
            )
        )
        .otherwise(None)
    )
    value = pl.when(is_missing | too_long).then(None).otherwise(typed).cast(POLARS_TYPES[column.type])
    return Coerced(value=value, error=error)


def cast_value(column: Column, raw: str | None) -> Any:
    """One user-supplied string cast to `column`'s type, by the same rules as the cleaning pipeline."""
    frame = pl.DataFrame({"raw": [raw]}, schema={"raw": pl.String})
    coerced = coerce_column(column, pl.col("raw"))
    row = frame.select(coerced.value.alias("value"), coerced.error.alias("error")).row(0, named=True)
    if row["error"] is not None:
        raise ValueError(str(row["error"]))
    return row["value"]


def to_crm_value(column: Column, value: Any) -> Any:
    """A typed value in the form Freshsales takes on the wire (money as a decimal string, ISO dates)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value
