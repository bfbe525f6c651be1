"""The clean step's mass-removal guard, and the accounting of rows the foreign keys' cascade removes.

A clean run removes a row when its record is deleted, rejected (a renamed dropdown value makes every
record holding it uncastable) or loses its key; deleting a referenced row removes the rows that point
to it (ON DELETE CASCADE). Such a loss, large enough, looks like an accident in the CRM rather than a
change: the guard refuses it before the transaction commits, with the same thresholds as the scan's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from crm_assets.domains import Domain, referencing
from crm_assets.transform.clean import output_schema, tally_kinds
from crm_assets.warehouse.bulk import create_stage, fill_stage, is_empty, read_frame
from crm_assets.warehouse.scan import DEFAULT_MAX_DELETE_SHARE, DEFAULT_MIN_MASS_DELETE, MassDeleteRefusedError
from crm_assets.warehouse.schema import CANDIDATE_TABLES, CLEAN_TABLES, RAW_TABLES, rejected_records

# The kinds of removal that have no rejection behind them.
DELETED_IN_CRM = "deleted in the CRM"
KEY_CHANGED = "business key changed"


@dataclass(frozen=True)
class Removal:
    """Rows leaving one clean table in a clean run."""

    table: str
    removed: int
    before: int  # the table's rows before the run

    @property
    def share(self) -> float:
        return self.removed / self.before if self.before else 0.0


@dataclass(frozen=True)
class CleanGuard:
    """Refuses a clean run that removes a large share of its table or, by cascade, of a referencing table."""

    max_share: float = DEFAULT_MAX_DELETE_SHARE
    min_rows: int = DEFAULT_MIN_MASS_DELETE
    allow: bool = False

    def too_large(self, removal: Removal) -> bool:
        return removal.removed >= self.min_rows and removal.share > self.max_share

    def check(self, domain: Domain, removals: list[Removal], reasons: Mapping[str, int]) -> None:
        """Raise MassDeleteRefusedError when a removal is too large and not allowed."""
        if self.allow or not any(self.too_large(r) for r in removals):
            return
        own, *cascaded = removals
        why = ", ".join(f"{kind}: {n:,}" for kind, n in list(reasons.items())[:3])
        parts = [f"{own.removed:,} of {own.before:,} {own.table} rows ({own.share:.0%}; {why})"]
        parts += [f"by cascade {r.removed:,} of {r.before:,} {r.table} rows ({r.share:.0%})" for r in cascaded]
        raise MassDeleteRefusedError(
            f"{domain.name}: refusing to clean: it would remove {', and '.join(parts)}, more than the "
            f"{self.max_share:.0%} limit. Nothing was written. If the records changed by accident in the CRM "
            "(a renamed dropdown value, a field emptied in bulk), fix them there and run again; if the loss is "
            f"real, run {domain.name} once with allow_mass_delete: true in its config (from the command line: "
            "crm-assets run --allow-mass-delete)."
        )


# The guard a clean run applies when its caller names none.
DEFAULT_CLEAN_GUARD = CleanGuard()


def cascade_counts(conn: sa.Connection, domain: Domain, deleted: pl.DataFrame) -> dict[str, int]:
    """Rows of each referencing domain that deleting these rows (business keys) is about to remove."""
    counts: dict[str, int] = {}
    if deleted.is_empty():
        return counts
    for child, fk in referencing(domain):
        column, target = fk.column, fk.target_column
        stage = create_stage(conn, CLEAN_TABLES[domain.name], [target])
        fill_stage(conn, stage, deleted.select(pl.col(domain.business_key).alias(target)))
        table = CLEAN_TABLES[child.name]
        found = conn.execute(sa.select(sa.func.count()).where(table.c[column].in_(sa.select(stage.c[target]))))
        counts[child.name] = counts.get(child.name, 0) + int(found.scalar_one())
    return counts


def left_with_parent(
    conn: sa.Connection, domain: Domain, after: int, through: int, track: Sequence[str]
) -> pl.DataFrame:
    """The `track` columns of the rows that left this table by cascade since its last clean run.

    After a clean run every usable candidate is either the winner in the clean table or rejected; one that
    is neither lost its row when a referenced row was deleted (the parent's run then marked it changed).
    """
    candidates = CANDIDATE_TABLES[domain.name]
    columns = output_schema(domain)
    schema = {c: columns[c] for c in [*track, "crm_id"]}
    if not domain.foreign_keys or is_empty(conn, candidates):
        return pl.DataFrame(schema=schema)
    raw, table = RAW_TABLES[domain.name], CLEAN_TABLES[domain.name]
    rejected = rejected_records.c
    query = (
        sa.select(*(candidates.c[c] for c in track), candidates.c.crm_id)
        .select_from(raw.join(candidates, candidates.c.crm_id == raw.c.crm_id))
        .where(
            raw.c.change_seq.between(after + 1, through),
            candidates.c.error.is_(None),
            ~sa.exists().where(table.c.crm_id == candidates.c.crm_id),
            ~sa.exists().where(rejected.domain == domain.name, rejected.crm_id == candidates.c.crm_id),
        )
    )
    return read_frame(conn, query, schema)


def removal_reasons(conn: sa.Connection, domain: Domain, crm_ids: pl.DataFrame) -> dict[str, int]:
    """Why the records behind removed rows left: their rejection problems, a deletion, or a new key."""
    stage = create_stage(conn, rejected_records, ["crm_id"])
    fill_stage(conn, stage, crm_ids.select("crm_id").unique())
    r, raw = rejected_records.c, RAW_TABLES[domain.name]
    problems = conn.execute(
        sa.select(r.problem, sa.func.count())
        .where(r.domain == domain.name, r.crm_id.in_(sa.select(stage.c.crm_id)))
        .group_by(r.problem)
    ).all()
    unexplained = stage.c.crm_id.not_in(sa.select(r.crm_id).where(r.domain == domain.name, r.crm_id.is_not(None)))
    gone = sa.or_(raw.c.is_deleted, raw.c.crm_id.is_(None))
    rest = conn.execute(
        sa.select(sa.func.count().filter(gone), sa.func.count().filter(~gone))
        .select_from(stage.outerjoin(raw, raw.c.crm_id == stage.c.crm_id))
        .where(unexplained)
    ).one()
    groups = [(str(p).split("; "), int(n)) for p, n in problems]
    groups += [([DELETED_IN_CRM], int(rest[0] or 0)), ([KEY_CHANGED], int(rest[1] or 0))]
    return {k: n for k, n in tally_kinds(groups).items() if n}


def rows_before(conn: sa.Connection, table_name: str, removed: int) -> int:
    """A table's rows before this run removed `removed` of them (read inside the run's transaction)."""
    table = CLEAN_TABLES[table_name]
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()) + removed
