"""The cleaning pipeline every domain goes through (SPEC section 3): coerce, validate, dedup, foreign keys.

Input: one String column per domain column (the raw values), plus `crm_id` and `updated_at`.
Output: the rows to load, typed, and the rejected records with their reasons. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl

from crm_assets.domains import Domain
from crm_assets.transform.coerce import POLARS_TYPES, coerce_column, typed_value

REJECTED_SCHEMA: dict[str, pl.DataType] = {"crm_id": pl.Int64(), "reason": pl.String()}


@dataclass(frozen=True)
class CleanResult:
    rows: pl.DataFrame  # domain columns (typed) + crm_id + updated_at
    rejected: pl.DataFrame  # crm_id, reason

    def rejected_by_reason(self) -> dict[str, int]:
        """Counts per kind of problem: "deal_size: uncastable", "duplicate deal_id", "orphan account_id"."""
        return tally_kinds((reason_kinds(reason), 1) for reason in self.rejected["reason"])


def tally_kinds(groups: Iterable[tuple[Iterable[str], int]]) -> dict[str, int]:
    """Add up (kinds of problem, number of records) pairs; the most frequent kind first."""
    counts: dict[str, int] = {}
    for kinds, n in groups:
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + n
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def reason_kinds(reason: str) -> list[str]:
    """The kinds of problem a rejection reason names, without the values."""
    kinds = []
    for part in reason.split("; "):
        if part.startswith("duplicate "):
            kinds.append(" ".join(part.split()[:2]))
        elif part.startswith("orphan: "):
            kinds.append("orphan " + part.split()[1])
        else:
            field, _, rest = part.partition(": ")
            kinds.append(f"{field}: {'missing' if rest.startswith('missing') else 'uncastable'}")
    return kinds


def problems(reason: pl.Expr) -> pl.Expr:
    """`reason_kinds` of each reason joined with "; ", as one vectorized expression (no Python per row)."""
    part = pl.element()
    separator = part.str.find(": ", literal=True)
    field = pl.when(separator.is_null()).then(part).otherwise(part.str.slice(0, separator))
    rest = pl.when(separator.is_null()).then(pl.lit("")).otherwise(part.str.slice(separator + 2))
    kind = (
        pl.when(part.str.starts_with("duplicate "))
        .then(part.str.split(" ").list.head(2).list.join(" "))
        .when(part.str.starts_with("orphan: "))
        .then(pl.lit("orphan ") + part.str.split(" ").list.get(1, null_on_oob=True))
        .when(rest.str.starts_with("missing"))
        .then(field + pl.lit(": missing"))
        .otherwise(field + pl.lit(": uncastable"))
    )
    return reason.str.split("; ").list.eval(kind).list.join("; ")


def output_schema(domain: Domain) -> dict[str, pl.DataType]:
    schema = {c.name: POLARS_TYPES[c.type] for c in domain.columns}
    return schema | {"crm_id": pl.Int64(), "updated_at": pl.Datetime("us", "UTC")}


def clean(domain: Domain, raw: pl.DataFrame, loaded_keys: Mapping[str, pl.Series] | None = None) -> CleanResult:
    """Apply the cleaning rules in order; `loaded_keys[domain]` holds the keys foreign keys may point to."""
    coerced = coerce_records(domain, raw)
    invalid = coerced.filter(pl.col("error").is_not_null()).select("crm_id", pl.col("error").alias("reason"))
    loaded, rejected = resolve(domain, coerced.filter(pl.col("error").is_null()).drop("error"), loaded_keys or {})
    return CleanResult(rows=loaded, rejected=pl.concat([invalid, rejected], how="vertical").sort("crm_id"))


def coerce_records(domain: Domain, raw: pl.DataFrame) -> pl.DataFrame:
    """Rule 1 and 2: typed columns plus `error`, every reason a record cannot be loaded (null when it can)."""
    # Typed values first, as columns: the values and the reasons below both read them.
    typed = {c.name: f"__typed_{c.name}" for c in domain.columns}
    raw = raw.with_columns(typed_value(c, pl.col(c.name)).alias(typed[c.name]) for c in domain.columns)
    coerced = {
        c.name: coerce_column(c, pl.col(c.name), pl.col(typed[c.name]), indexed=c.name in domain.indexed_columns)
        for c in domain.columns
    }
    reason = pl.concat_str([r.error for r in coerced.values()], separator="; ", ignore_nulls=True)
    error = pl.col("error")
    return raw.select(
        pl.col("crm_id"),
        pl.col("updated_at"),
        *(result.value.alias(name) for name, result in coerced.items()),
        reason.alias("error"),
    ).with_columns(
        # concat_str of all-null inputs gives "" with ignore_nulls: that means "no reason". A second step, so
        # the reasons are computed once, not once per use.
        pl.when(error == "").then(None).otherwise(error).alias("error")
    )


def resolve(
    domain: Domain, valid: pl.DataFrame, loaded_keys: Mapping[str, pl.Series]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rules 3 and 4 among coerced, valid records: (rows to load, rejected duplicates and orphans)."""
    winners, duplicates = _deduplicate(domain, valid.select(list(output_schema(domain))))
    loaded, orphans = _check_foreign_keys(domain, winners, loaded_keys)
    return loaded.sort(domain.business_key), pl.concat([duplicates, orphans], how="vertical")


def _deduplicate(domain: Domain, typed: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Most recently updated wins (instants compared in UTC); ties go to the higher CRM id."""
    key = domain.business_key
    ordered = typed.sort([key, "updated_at", "crm_id"], descending=[False, True, True])
    first = pl.col(key).is_first_distinct()
    winners = ordered.filter(first)
    losers = ordered.filter(~first).join(winners.select(key, pl.col("crm_id").alias("winner")), on=key, how="left")
    duplicates = losers.select(
        "crm_id",
        pl.format(f"duplicate {key} {{}}: CRM record {{}} is more recent", pl.col(key), "winner").alias("reason"),
    )
    return winners, duplicates


def _check_foreign_keys(
    domain: Domain, rows: pl.DataFrame, loaded_keys: Mapping[str, pl.Series]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    orphans = [pl.DataFrame(schema=REJECTED_SCHEMA)]
    for fk in domain.foreign_keys:
        if fk.domain not in loaded_keys:
            raise ValueError(f"cleaning {domain.name} needs the loaded {fk.domain} keys for {fk.column}")
        known = loaded_keys[fk.domain].cast(rows.schema[fk.column]).implode()
        # NULL points nowhere, as in SQL (an optional reference). Spelled out: is_in gives NULL for it, and a
        # filter keeps neither NULL nor its negation, so the record would vanish from both outputs.
        dangling = pl.col(fk.column).is_not_null() & ~pl.col(fk.column).is_in(known)
        orphans.append(
            rows.filter(dangling).select(
                "crm_id",
                pl.format(f"orphan: {fk.column} {{}} has no loaded {fk.domain} row", pl.col(fk.column)).alias("reason"),
            )
        )
        rows = rows.filter(~dangling)
    return rows, pl.concat(orphans, how="vertical")
