"""Loading clean tables incrementally: re-decide only the business keys that changed.

A clean run reads the raw rows changed since the last one (in bounded batches), coerces them into the
domain's candidates table, and collects the business keys they touch (old and new). For those keys alone
it reruns the contest (newest record wins, orphans out), diffs the winners with the clean table and writes
just the difference. Memory and time follow the size of the change, not of the table; a rebuild is the
same path with every raw row marked changed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from crm_assets.domains import ColumnType, Domain, ForeignKey, configured_domains, referencing
from crm_assets.transform.clean import coerce_records, output_schema, problems, resolve, tally_kinds
from crm_assets.warehouse.bulk import (
    analyze_after_bulk_change,
    analyze_if_never_analyzed,
    analyze_stage,
    create_stage,
    delete_staged_keys,
    drop_keys_while_empty,
    drop_stages,
    fill_stage,
    is_empty,
    probed_in,
    probing_joins,
    read_frame,
    restore_after_bulk_load,
    suspend_for_bulk_load,
    upsert_from_stage,
    upsert_insert,
)
from crm_assets.warehouse.clean_guard import (
    DEFAULT_CLEAN_GUARD,
    DELETED_IN_CRM,
    CleanGuard,
    Removal,
    cascade_counts,
    left_with_parent,
    removal_reasons,
    rows_before,
)
from crm_assets.warehouse.dialect import is_postgres, is_private_memory
from crm_assets.warehouse.drift import guard_changed_records
from crm_assets.warehouse.history import (
    HISTORY_DOMAIN,
    earliest,
    first_versions,
    record_versions,
    touches_history,
)
from crm_assets.warehouse.raw import (
    UNSTORABLE_PAYLOAD,
    latest_change_seq,
    lock_domain,
    mark_changed,
    read_changed_batches,
    read_cleaned_through,
    save_cleaned_through,
)
from crm_assets.warehouse.read_ahead import read_ahead
from crm_assets.warehouse.schema import CANDIDATE_TABLES, CLEAN_TABLES, RAW_TABLES, deal_history, rejected_records

CHANGE_BATCH = 100_000  # raw rows coerced at a time
CONTEST_CHUNK = 100_000  # business keys decided at a time
# A run that changes at least this many records, and BULK_LOAD_GROWTH times the clean table's rows, loads
# without per-row foreign-key checks and plain-index upkeep (PostgreSQL): rebuilding them once is cheaper.
BULK_LOAD_MIN_ROWS = 50_000
BULK_LOAD_GROWTH = 2
# A run that changes at most 1/SMALL_CHANGE_SHARE of the clean table's rows joins its stages with the
# tables by index probes (PostgreSQL): cheaper than reading the tables whole, up to a few percent of them.
SMALL_CHANGE_SHARE = 50
# Rejections at most 1/PAYLOAD_PROBE_SHARE of the raw rows in their id range take their payloads by index
# probes (PostgreSQL): a probe costs about what reading four rows of a range in sequence does.
PAYLOAD_PROBE_SHARE = 5
# How long the read-ahead connection waits for a lock on the raw table before the run fails (PostgreSQL;
# only DDL such as a migration conflicts with its reads): a retry beats a wait nothing would end.
READ_AHEAD_LOCK_TIMEOUT = "5min"


@dataclass
class TableChanges:
    """What a clean run did to its table; `before`/`after` keep only the tracked columns."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    records_read: int = 0
    keys_decided: int = 0
    rows: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    write_seconds: float = 0.0  # time in bulk writes of candidates and clean rows (the load stage)
    before: list[pl.DataFrame] = field(default_factory=list)  # previous versions of updated and deleted rows
    after: list[pl.DataFrame] = field(default_factory=list)  # new versions of inserted and updated rows
    history_from: datetime | None = None  # earliest valid_from of the deal_history versions written
    # Rows of referencing domains that this run's deletions removed with them (ON DELETE CASCADE), by domain.
    cascaded: dict[str, int] = field(default_factory=dict)
    # Rows of this table that such a cascade removed since its last clean run (their `track` columns are in `before`).
    left_with_parent: int = 0
    removed_ids: list[pl.DataFrame] = field(default_factory=list)  # crm_id of the deleted rows, for the guard

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated


def clean_changes(
    conn: sa.Connection,
    domain: Domain,
    run_id: str | None,
    *,
    rebuild: bool = False,
    track: Sequence[str] = (),
    batch_size: int = CHANGE_BATCH,
    chunk_size: int = CONTEST_CHUNK,
    log: logging.Logger | None = None,
    guard: CleanGuard = DEFAULT_CLEAN_GUARD,
    ahead: bool = False,
) -> TableChanges:
    """Bring the clean table and the domain's rejects up to date with its raw table, in the caller's transaction.

    Raises MassDeleteRefusedError (the caller rolls back) when `guard` finds the rows it removes too many.
    `ahead`: read and coerce the next batch of changed raw rows on a second connection while this one
    writes (see `read_ahead`). Only for a transaction that has not written the domain's raw table.
    """
    log = log or logging.getLogger(__name__)
    # Deleting keys here cascades into the domains that reference this one, and marks their records
    # changed: hold their locks from the start, in load order.
    dependents = {child.name for child, _ in referencing(domain)}
    for locked in configured_domains():  # in load order
        if locked.name == domain.name or locked.name in dependents:
            lock_domain(conn, locked)
    after = 0 if rebuild else read_cleaned_through(conn, domain)
    through = latest_change_seq(conn, domain)
    guard_changed_records(conn, domain, after, through)  # schema drift: refuse before writing anything
    changes = TableChanges()
    affected = _key_set(conn, domain)
    changed, bulk, small = _change_size(conn, domain, after, through)
    with probing_joins(conn, small):  # before the batches replace candidates
        _note_left_with_parent(conn, domain, after, through, track, changes)
    if small:  # the probes below need to know these tables are large (see the end of this function)
        analyze_if_never_analyzed(conn, rejected_records)
        analyze_if_never_analyzed(conn, deal_history)
    restore_table = suspend_for_bulk_load(conn, CLEAN_TABLES[domain.name]) if bulk else []
    restore_candidates = suspend_for_bulk_load(conn, CANDIDATE_TABLES[domain.name]) if bulk else []
    restore_history = _suspend_history(conn, domain, changed) if bulk else []
    # No version of any deal yet (a first load): every deal gets its first version once the contest is
    # over, in one statement (`first_versions`), rather than chunk by chunk.
    unversioned = is_empty(conn, deal_history)
    first_versions_after = unversioned and domain.name == HISTORY_DOMAIN
    # No candidates yet (a first load): the batches (disjoint ranges of crm_id) then replace nothing.
    fresh = is_empty(conn, CANDIDATE_TABLES[domain.name])
    if bulk and fresh:  # every batch only appends: build the candidates' keys once after, not row by row
        restore_candidates = drop_keys_while_empty(conn, CANDIDATE_TABLES[domain.name]) + restore_candidates
    on_server = fresh and _first_load_on_server(conn, domain, unversioned)
    fresh_keys: list[pl.Series] = []  # a fresh run's usable keys, batch by batch (PostgreSQL, see _add_fresh_keys)
    if fresh:
        _drop_changed_rejections(conn, domain, after, through)
    batches = _coerced_batches(conn, domain, after, through, batch_size, ahead=ahead)
    with probing_joins(conn, small), contextlib.closing(batches):
        for batch, coerced in batches:
            _take_changed_batch(conn, domain, batch, coerced, affected, run_id, changes, fresh=fresh, probing=small)
            if fresh and is_postgres(conn) and not on_server:
                fresh_keys.append(_usable_keys(domain, coerced))
            drop_stages(conn, keep=[affected])
            changes.records_read += batch.height
            log.info(f"{domain.name}: {changes.records_read:,} changed records coerced")
    _restore(conn, restore_candidates, changes)  # the contest looks candidates up by business key
    analyze_after_bulk_change(conn, CANDIDATE_TABLES[domain.name], changes.records_read)
    if on_server:
        _decide_first_load(conn, domain, run_id, changes, track, bulk=bulk)
        log.info(f"{domain.name}: {changes.keys_decided:,} business keys decided")
    else:
        if fresh:
            _add_fresh_keys(conn, domain, affected, fresh_keys)
        # Once, after the batches: while they add keys only the stage's primary key is used.
        analyze_stage(conn, affected)
        versions = not first_versions_after
        referenced = ReferencedKeys(domain)
        contest = _Contest(domain, affected, run_id, changes, track, referenced, fresh, versions, probing=small)
        with probing_joins(conn, small):
            for first, last in _key_ranges(conn, affected, chunk_size):
                _decide(conn, contest, first, last)
                drop_stages(conn, keep=[affected])
                log.info(f"{domain.name}: {changes.keys_decided:,} business keys decided")
    if first_versions_after:
        changes.history_from = first_versions(conn)
    _restore(conn, restore_table, changes)
    restore_after_bulk_load(conn, restore_history)  # part of keeping the history, not of the load
    written = changes.inserted + changes.updated + changes.deleted
    analyze_after_bulk_change(conn, CLEAN_TABLES[domain.name], written)
    # The next runs look open versions up by the few keys they change: without statistics (never analyzed
    # after a first load, autovacuum off or not yet there) PostgreSQL would read them all. Not the
    # rejections here: analyzed between the domains of a first load, they would tell the next domain's
    # batches that it has none, and its deletes of rejections would then scan the batch once per rejection.
    if domain.name == HISTORY_DOMAIN:
        analyze_after_bulk_change(conn, deal_history, written)
    save_cleaned_through(conn, domain, through)
    _count(conn, domain, changes)
    _guard(conn, domain, changes, guard)
    drop_stages(conn)
    return changes


def _note_left_with_parent(
    conn: sa.Connection, domain: Domain, after: int, through: int, track: Sequence[str], changes: TableChanges
) -> None:
    left = left_with_parent(conn, domain, after, through, track)
    changes.left_with_parent = left.height
    if track and not left.is_empty():
        changes.before.append(left.select(track))  # their windows changed too


def _guard(conn: sa.Connection, domain: Domain, changes: TableChanges, guard: CleanGuard) -> None:
    """Refuse (raise) when the rows this run removed, here or by cascade, look like an accident.

    Rows whose records were deleted in the CRM do not count here: the scan's guard judged those deletions
    (and a person allowed them there when they were many), so one override suffices."""
    removals = [Removal(domain.name, changes.deleted, changes.rows - changes.inserted + changes.deleted)]
    removals += [Removal(name, n, rows_before(conn, name, n)) for name, n in changes.cascaded.items() if n]
    if guard.allow or not any(guard.too_large(r) for r in removals):
        return
    reasons = removal_reasons(conn, domain, pl.concat(changes.removed_ids))
    own = removals[0]
    removals[0] = Removal(own.table, own.removed - reasons.get(DELETED_IN_CRM, 0), own.before)
    guard.check(domain, removals, reasons)


def _change_size(conn: sa.Connection, domain: Domain, after: int, through: int) -> tuple[int, bool, bool]:
    """(changed records, big, small): whether the change is large or small against the clean table.

    Big (a first sync, a reload): the clean and candidates tables' plain indexes (and on PostgreSQL their
    foreign keys, else checked row by row) are dropped while rows go in and rebuilt after (one sorted
    build, one validating join): see `suspend_for_bulk_load`. Small (a re-sync, on PostgreSQL): join by
    index probes, see `probing_joins`; SQLite has no hash join to avoid.
    """
    raw, table = RAW_TABLES[domain.name], CLEAN_TABLES[domain.name]
    changed = conn.execute(sa.select(sa.func.count()).where(raw.c.change_seq.between(after + 1, through))).scalar_one()
    rows = _row_count(conn, table)
    big = changed >= BULK_LOAD_MIN_ROWS and changed >= BULK_LOAD_GROWTH * rows
    return int(changed), bool(big), is_postgres(conn) and bool(changed * SMALL_CHANGE_SHARE <= rows)


def _suspend_history(conn: sa.Connection, domain: Domain, changed: int) -> list[str]:
    """Drop deal_history's plain indexes for a big load of deals (`changed` records) when the history is
    small against it, as in a first load.

    Every deal then gets a version: one index build after costs less than growing the indexes row by row.
    The open-version lookups of the run use the unique index, which stays unless the history is empty.
    """
    if domain.name != HISTORY_DOMAIN or _row_count(conn, deal_history) * BULK_LOAD_GROWTH > changed:
        return []
    # Empty (a first load), the history gets no lookup before its first versions go in at the end.
    return suspend_for_bulk_load(conn, deal_history, unique_when_empty=True)


def _restore(conn: sa.Connection, statements: list[str], changes: TableChanges) -> None:
    started = time.perf_counter()
    restore_after_bulk_load(conn, statements)
    changes.write_seconds += time.perf_counter() - started  # index builds and validation are part of the load


def _row_count(conn: sa.Connection, table: sa.Table) -> float:
    """About how many rows `table` holds. PostgreSQL: the planner's count (0 before the first ANALYZE), read from
    the catalog, so no lock is taken on the table before `suspend_for_bulk_load` locks it (and the tables it
    references) in a fixed order. SQLite, which keeps no such count, counts (the write lock is held already)."""
    if not is_postgres(conn):
        return float(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
    estimate = conn.execute(
        sa.text("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass(:table)"),
        {"table": conn.dialect.identifier_preparer.quote(table.name)},
    ).scalar()
    return float(estimate or 0)


def _key_set(conn: sa.Connection, domain: Domain) -> sa.Table:
    """The business keys this run must re-decide."""
    key = domain.business_key
    return create_stage(conn, CLEAN_TABLES[domain.name], [key], primary_key=[key])


def _add_keys(conn: sa.Connection, affected: sa.Table, keys: sa.Select[Any]) -> None:
    insert = upsert_insert(conn, affected)
    column = affected.primary_key.columns.values()[0].name
    conn.execute(insert.from_select([column], keys.where(sa.true())).on_conflict_do_nothing())


def _usable_keys(domain: Domain, coerced: pl.DataFrame) -> pl.Series:
    """The distinct business keys of a batch's usable candidates (`coerced`, no coercion error)."""
    return coerced.filter(pl.col("error").is_null())[domain.business_key].drop_nulls().unique()


def _add_fresh_keys(conn: sa.Connection, domain: Domain, affected: sa.Table, batch_keys: list[pl.Series]) -> None:
    """After a fresh run's batches, every candidate is new: its usable keys are the keys to decide.

    One sorted insert of the distinct keys costs far less than staging and merging each batch's keys. On
    PostgreSQL they come from the frames the batches wrote (`batch_keys`), in one COPY: half the time of a
    DISTINCT over every candidate. SQLite, which inserts row by row, walks the candidates' key index instead.
    """
    if is_postgres(conn):
        if batch_keys:
            fill_stage(conn, affected, pl.concat(batch_keys).unique().sort().to_frame())
        return
    candidates, key = CANDIDATE_TABLES[domain.name], domain.business_key
    usable = sa.select(candidates.c[key]).where(candidates.c.error.is_(None)).distinct().order_by(candidates.c[key])
    conn.execute(affected.insert().from_select([key], usable))


_CoercedBatches = Generator[tuple[pl.DataFrame, pl.DataFrame], None, None]


def _coerced_batches(
    conn: sa.Connection, domain: Domain, after: int, through: int, batch_size: int, *, ahead: bool
) -> _CoercedBatches:
    """The changed raw rows in batches, each with its live records coerced (`coerce_records`)."""

    def batches(reader: sa.Connection) -> _CoercedBatches:
        for batch in read_changed_batches(reader, domain, after, through, batch_size):
            yield batch, coerce_records(domain, batch.filter(~pl.col("is_deleted")))

    def batches_ahead(reader: sa.Connection) -> _CoercedBatches:
        if is_postgres(reader):
            # The run waits for this connection on a queue, which PostgreSQL's deadlock detector cannot
            # see: a lock this one waits for, held by a session that waits for the run, would hang both.
            reader.execute(sa.text(f"SET LOCAL lock_timeout = '{READ_AHEAD_LOCK_TIMEOUT}'"))
        yield from batches(reader)

    # `conn`'s lock on the domain (the write lock on SQLite) keeps its raw rows still while a second
    # connection reads them; that one takes no write lock: SQLite begins a transaction only to write.
    return read_ahead(conn.engine, batches_ahead) if ahead and _readable_alongside(conn) else batches(conn)


def _readable_alongside(conn: sa.Connection) -> bool:
    """Whether a second connection can read while `conn` writes: on PostgreSQL, and on an SQLite file in
    write-ahead-log mode (in another journal mode the writer locks readers out until it commits)."""
    if is_postgres(conn):
        return True
    if is_private_memory(conn.engine):
        return False
    return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal"


def _take_changed_batch(
    conn: sa.Connection,
    domain: Domain,
    batch: pl.DataFrame,
    coerced: pl.DataFrame,
    affected: sa.Table,
    run_id: str | None,
    changes: TableChanges,
    *,
    fresh: bool = False,
    probing: bool = False,
) -> None:
    """Replace the batch's candidates (`coerced`: its live records), note the keys they held and now hold,
    re-quarantine the unusable.

    `fresh`: the candidates table held no row when the run began, so none of the batch's records has one;
    the caller drops their rejections once before the batches (`_drop_changed_rejections`) and notes the
    keys once after them (`_add_fresh_keys`). `probing`: the batch runs inside `probing_joins`.
    """
    candidates, key = CANDIDATE_TABLES[domain.name], domain.business_key
    if not fresh:
        ids = create_stage(conn, RAW_TABLES[domain.name], ["crm_id"])
        fill_stage(conn, ids, batch.select("crm_id"))
        # IN, not a correlated EXISTS: SQLite then probes the candidates' primary key once per staged id
        # instead of scanning the stage once per candidate.
        in_batch = candidates.c.crm_id.in_(sa.select(ids.c.crm_id))
        _add_keys(conn, affected, sa.select(candidates.c[key]).where(in_batch, candidates.c[key].is_not(None)))
        conn.execute(sa.delete(candidates).where(in_batch))
    started = time.perf_counter()
    fill_stage(conn, candidates, coerced)  # every row is new: its old version was just deleted
    changes.write_seconds += time.perf_counter() - started
    if not fresh:
        _note_new_keys(conn, domain, affected, coerced, in_batch)
        _drop_rejections(conn, domain, sa.select(ids.c.crm_id), probing=probing)
    invalid = coerced.filter(pl.col("error").is_not_null()).select("crm_id", pl.col("error").alias("reason"))
    add_rejections(conn, domain, invalid, run_id)


def _note_new_keys(
    conn: sa.Connection, domain: Domain, affected: sa.Table, coerced: pl.DataFrame, in_batch: sa.ColumnElement[bool]
) -> None:
    """Add the usable keys the batch's candidates (`coerced`, just written) now hold to `affected`."""
    key = domain.business_key
    if is_postgres(conn):
        # From the frame just written: reading them back from the candidates table would scan all of it
        # (no statistics until the loop ends) once per batch.
        new_keys = create_stage(conn, CLEAN_TABLES[domain.name], [key])
        fill_stage(conn, new_keys, _usable_keys(domain, coerced).to_frame())
        # Distinct already: a plain insert of the keys not yet noted, cheaper than ON CONFLICT's per-row
        # speculative insertion.
        noted = sa.exists().where(affected.c[key] == new_keys.c[key])
        conn.execute(affected.insert().from_select([key], sa.select(new_keys.c[key]).where(~noted)))
    else:  # SQLite probes the candidates' primary key per id: cheaper than staging the keys row by row.
        candidates = CANDIDATE_TABLES[domain.name]
        _add_keys(conn, affected, sa.select(candidates.c[key]).where(in_batch, candidates.c.error.is_(None)))


def _key_ranges(conn: sa.Connection, affected: sa.Table, chunk_size: int) -> Iterator[tuple[Any, Any]]:
    """Consecutive [first, last] ranges of the affected keys, `chunk_size` keys each.

    Only the bounds cross the wire (an index walk with OFFSET), not every key of the chunk.
    """
    key = affected.primary_key.columns.values()[0]
    first = conn.execute(sa.select(sa.func.min(key))).scalar()
    while first is not None:
        bounds = sa.select(key).where(key >= first).order_by(key)
        last = conn.execute(bounds.offset(chunk_size - 1).limit(1)).scalar()
        if last is None:
            last = conn.execute(sa.select(sa.func.max(key))).scalar()
            yield first, last
            return
        yield first, last
        first = conn.execute(bounds.where(key > last).limit(1)).scalar()


@dataclass(frozen=True)
class _Contest:
    """What every chunk of a clean run's contest shares."""

    domain: Domain
    affected: sa.Table  # the business keys to re-decide
    run_id: str | None
    changes: TableChanges  # added to by each chunk
    track: Sequence[str]
    referenced: ReferencedKeys
    fresh: bool  # the run began with no candidates, so no contender has an old verdict to replace
    versions: bool  # keep deal_history up to date chunk by chunk (False: first versions are written once after)
    probing: bool  # the chunks run inside `probing_joins`


def _decide(conn: sa.Connection, contest: _Contest, first: Any, last: Any) -> None:
    """Rerun the contest for the affected keys in [first, last] and write the difference."""
    domain, affected, changes, track = contest.domain, contest.affected, contest.changes, contest.track
    key = domain.business_key
    candidates, table = CANDIDATE_TABLES[domain.name], CLEAN_TABLES[domain.name]
    schema = output_schema(domain)

    def chosen(t: sa.Table, *columns: sa.ColumnElement[Any]) -> sa.Select[Any]:
        """Rows of `t` whose key is affected and in [first, last]: driven by the (small) affected set.

        On PostgreSQL the range is stated on `t` too: it then reads only that range of `t`'s key index
        instead of hashing the whole table once per chunk (quadratic in a big first load). Not on SQLite,
        whose planner could then drive the join from `t` rather than from the affected keys.
        """
        joined = t.join(affected, affected.c[key] == t.c[key])
        in_range = [affected.c[key].between(first, last)]
        if is_postgres(conn):
            in_range.append(t.c[key].between(first, last))
        return sa.select(*columns).select_from(joined).where(*in_range)

    contenders_query = chosen(candidates, *(candidates.c[c] for c in schema)).where(candidates.c.error.is_(None))
    contenders = read_frame(conn, contenders_query, schema)
    winners, rejected = resolve(domain, contenders, contest.referenced.present(conn, contenders))
    if not contest.fresh:
        _drop_verdicts(conn, domain, contenders, chosen(candidates, candidates.c.crm_id), probing=contest.probing)
    add_rejections(conn, domain, rejected, contest.run_id)

    current = read_frame(conn, chosen(table, *(table.c[c] for c in schema)), schema)
    inserts, updates, previous, deleted = _diff(domain, current, winners)
    for name, n in cascade_counts(conn, domain, deleted).items():  # before the deletes remove them
        changes.cascaded[name] = changes.cascaded.get(name, 0) + n
    changes.removed_ids.append(deleted.select("crm_id"))
    started = time.perf_counter()
    _write(conn, domain, inserts, updates, deleted)
    changes.write_seconds += time.perf_counter() - started
    _mark_dependents(conn, domain, pl.concat([inserts.select(key), deleted.select(key)]))
    if contest.versions:
        written_from = record_versions(conn, domain, affected, first, last)
        changes.history_from = earliest(changes.history_from, written_from)

    changes.keys_decided += contenders[key].n_unique() if not contenders.is_empty() else 0
    changes.inserted += inserts.height
    changes.updated += updates.height
    changes.deleted += deleted.height
    if track:
        changes.before.append(pl.concat([previous.select(track), deleted.select(track)]))
        changes.after.append(pl.concat([inserts.select(track), updates.select(track)]))


# Key and foreign-key types whose text in SQL is the text polars gives them: the reasons read the same.
_SERVER_FORMATTED = frozenset({ColumnType.TEXT, ColumnType.BIGINT, ColumnType.INTEGER})


def _first_load_on_server(conn: sa.Connection, domain: Domain, unversioned: bool) -> bool:
    """Whether a fresh run (no candidates before it) can decide its contest in SQL (`_decide_first_load`).

    Only on PostgreSQL, into an empty clean table, when the run versions no deal chunk by chunk (the history
    is empty, or the domain does not touch it), and when the reasons' values print alike in SQL and polars.
    """
    formatted = [domain.business_key, *(fk.column for fk in domain.foreign_keys)]
    return (
        is_postgres(conn)
        and all(domain.column(name).type in _SERVER_FORMATTED for name in formatted)
        and (unversioned or not touches_history(domain))
        and is_empty(conn, CLEAN_TABLES[domain.name])
    )


def _decide_first_load(
    conn: sa.Connection, domain: Domain, run_id: str | None, changes: TableChanges, track: Sequence[str], *, bulk: bool
) -> None:
    """A first load's contest, on the server: the rules of `resolve`, in SQL, over every candidate at once.

    Newest record per business key wins (ties to the higher CRM id); a winner whose foreign key points at
    no loaded row is an orphan. The rejected (few) come back to be quarantined; the winners go from the
    candidates into the empty clean table without crossing the wire, which the chunked contest sends
    twice. A test holds both ways equal on the demo CRM's dirty records.
    """
    candidates, table, key = CANDIDATE_TABLES[domain.name], CLEAN_TABLES[domain.name], domain.business_key
    schema = output_schema(domain)
    rejected = read_frame(conn, _first_load_rejections(domain), {"crm_id": pl.Int64(), "reason": pl.String()})
    rejected_ids = create_stage(conn, candidates, ["crm_id"], primary_key=["crm_id"])
    fill_stage(conn, rejected_ids, rejected.select("crm_id"))
    # NOT EXISTS, an anti-join: NOT IN would hash the ids in work_mem or, past it, scan them once per candidate.
    not_rejected = ~sa.exists().where(rejected_ids.c.crm_id == candidates.c.crm_id)
    winners = sa.select(*(candidates.c[c] for c in schema)).where(candidates.c.error.is_(None), not_rejected)
    started = time.perf_counter()
    keys = drop_keys_while_empty(conn, table) if bulk else []  # the table is locked (suspend_for_bulk_load)
    # Sorted by key as polars sorts a chunk (text in byte order, not the database's collation): the surrogate
    # ids then follow the business keys alike.
    order = candidates.c[key].collate("C") if domain.column(key).type is ColumnType.TEXT else candidates.c[key]
    insert = table.insert().from_select(list(schema), winners.order_by(order))
    inserted = conn.execute(insert.execution_options(preserve_rowcount=True)).rowcount
    restore_after_bulk_load(conn, keys)
    changes.write_seconds += time.perf_counter() - started
    add_rejections(conn, domain, rejected, run_id)
    for child, fk in referencing(domain):  # every key is new here
        _mark_referencing(conn, child, fk, sa.select(table.c[fk.target_column]))
    orphans = rejected.filter(pl.col("reason").str.starts_with("orphan: ")).height
    changes.inserted += inserted
    changes.keys_decided += inserted + orphans  # the winners, loaded or orphaned
    if track:
        changes.after.append(read_frame(conn, sa.select(*(table.c[c] for c in track)), {c: schema[c] for c in track}))


def _first_load_rejections(domain: Domain) -> sa.Select[Any]:
    """(crm_id, reason) of every usable candidate `resolve` would reject: duplicates, then orphans."""
    candidates, key = CANDIDATE_TABLES[domain.name], domain.business_key
    newest_first = (candidates.c.updated_at.desc(), candidates.c.crm_id.desc())
    ranked = (
        sa.select(  # only the columns a verdict reads: the window sorts every column it is given
            candidates.c.crm_id,
            candidates.c[key],
            *(candidates.c[fk.column] for fk in domain.foreign_keys),
            sa.func.row_number().over(partition_by=candidates.c[key], order_by=newest_first).label("rank"),
            sa.func.first_value(candidates.c.crm_id)
            .over(partition_by=candidates.c[key], order_by=newest_first)
            .label("winner"),
        )
        .where(candidates.c.error.is_(None))
        .subquery("ranked")
    )

    def text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        return sa.cast(column, sa.Text)

    winner = text(ranked.c.winner)
    duplicate = sa.literal(f"duplicate {key} ") + text(ranked.c[key]) + ": CRM record " + winner + " is more recent"
    joined: sa.FromClause = ranked
    orphan_cases = []
    for n, fk in enumerate(domain.foreign_keys):  # the first dangling foreign key names the reason, as in `resolve`
        # An outer join (hashed once), not a NOT EXISTS per candidate; the target is unique, so no row doubles.
        target = CLEAN_TABLES[fk.domain].alias(f"referenced_{n}").c[fk.target_column]
        joined = joined.outerjoin(target.table, target == ranked.c[fk.column])
        reason = sa.literal(f"orphan: {fk.column} ") + text(ranked.c[fk.column]) + f" has no loaded {fk.domain} row"
        orphan_cases.append((ranked.c[fk.column].is_not(None) & target.is_(None), reason))
    verdict = sa.case((ranked.c.rank > 1, duplicate), *orphan_cases, else_=sa.null()).label("reason")
    verdicts = sa.select(ranked.c.crm_id, verdict).select_from(joined).subquery("verdicts")
    return sa.select(verdicts.c.crm_id, verdicts.c.reason).where(verdicts.c.reason.is_not(None))


def _drop_verdicts(
    conn: sa.Connection, domain: Domain, contenders: pl.DataFrame, chosen_ids: sa.Select[Any], *, probing: bool
) -> None:
    """Drop the contenders' old verdicts (duplicate, orphan); coercion rejects stay until their record changes.

    `chosen_ids`: the ids of the chunk's candidates, for SQLite.
    """
    candidates = CANDIDATE_TABLES[domain.name]
    if is_postgres(conn):
        # By the contenders' ids as read, staged: a join of the domain's rejections with the candidates
        # would probe the candidates once per rejection, every chunk (their statistics are stale in a big load).
        staged_ids = create_stage(conn, candidates, ["crm_id"], primary_key=["crm_id"])
        fill_stage(conn, staged_ids, contenders.select("crm_id"))
        contender_ids = sa.select(staged_ids.c.crm_id)
    else:  # SQLite: staging row by row costs more than the index probes
        contender_ids = chosen_ids.where(candidates.c.error.is_(None))
    _drop_rejections(conn, domain, contender_ids, probing=probing)


class ReferencedKeys:
    """For each foreign key of a domain, which values exist in the referenced clean table.

    A chunk that points to few values looks them up; one that points to many (a first load) reads the
    referenced column whole, once for the run, in one COPY: cheaper than sending and matching a long list
    of values every chunk.
    """

    WHOLE_COLUMN_FROM = 20_000  # distinct values a chunk points to

    def __init__(self, domain: Domain) -> None:
        self.domain = domain
        self._whole: dict[str, pl.Series] = {}

    def present(self, conn: sa.Connection, rows: pl.DataFrame) -> dict[str, pl.Series]:
        """By referenced domain: the values of `rows`' foreign keys found there (a superset may be given)."""
        found: dict[str, pl.Series] = {}
        for fk in self.domain.foreign_keys:
            wanted = rows[fk.column].drop_nulls().unique()
            if fk.domain in self._whole or len(wanted) >= self.WHOLE_COLUMN_FROM:
                found[fk.domain] = self._whole_column(conn, fk, wanted.dtype)  # every value: enough for any key
                continue
            values = pl.Series(fk.target_column, _look_up(conn, fk, wanted.to_list()), dtype=wanted.dtype)
            # Two foreign keys may point to one domain: the values either found (all exist there) count for both.
            found[fk.domain] = pl.concat([found[fk.domain], values]) if fk.domain in found else values
        return found

    def _whole_column(self, conn: sa.Connection, fk: ForeignKey, dtype: pl.DataType) -> pl.Series:
        if fk.domain not in self._whole:
            column = CLEAN_TABLES[fk.domain].c[fk.target_column]
            self._whole[fk.domain] = read_frame(conn, sa.select(column), {fk.target_column: dtype}).to_series()
        return self._whole[fk.domain]


def _look_up(conn: sa.Connection, fk: ForeignKey, wanted: list[Any]) -> list[Any]:
    target = CLEAN_TABLES[fk.domain].c[fk.target_column]
    if is_postgres(conn):
        # One array parameter, not thousands of bound values to render and send.
        values = sa.bindparam("wanted", wanted, type_=postgresql.ARRAY(target.type))
        return list(conn.execute(sa.select(target).where(target == sa.any_(values))).scalars())
    present: list[Any] = []
    for start in range(0, len(wanted), 10_000):
        present += conn.execute(sa.select(target).where(target.in_(wanted[start : start + 10_000]))).scalars()
    return present


def _diff(
    domain: Domain, current: pl.DataFrame, new: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(rows to insert, rows to update, previous versions of the updated rows, rows to delete)."""
    key = domain.business_key
    compared = [c for c in new.columns if c != key]
    joined = new.join(current, on=key, how="left", suffix="__old", coalesce=True)
    exists = pl.col("crm_id__old").is_not_null()
    differs = pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}__old")) for c in compared)
    inserts = joined.filter(~exists).select(new.columns)
    updates = joined.filter(exists & differs)
    previous = updates.select(key, *(pl.col(f"{c}__old").alias(c) for c in compared))
    deleted = current.join(new.select(key), on=key, how="anti")
    return inserts, updates.select(new.columns), previous, deleted


def _write(
    conn: sa.Connection, domain: Domain, inserts: pl.DataFrame, updates: pl.DataFrame, deleted: pl.DataFrame
) -> None:
    table, key = CLEAN_TABLES[domain.name], domain.business_key
    if not deleted.is_empty():
        stage = create_stage(conn, table, [key])
        fill_stage(conn, stage, deleted.select(key))
        delete_staged_keys(conn, table, stage, key)
    if not updates.is_empty():
        stage = create_stage(conn, table, updates.columns)
        fill_stage(conn, stage, updates)
        upsert_from_stage(conn, table, stage, [key])
    # The diff says these keys are new: they go straight in (COPY on PostgreSQL), no merge needed.
    fill_stage(conn, table, inserts)


def _mark_dependents(conn: sa.Connection, domain: Domain, changed_keys: pl.DataFrame) -> None:
    """Keys that appeared or vanished here change which records of other domains are orphans."""
    if changed_keys.is_empty():
        return
    dependents = referencing(domain)
    if not dependents:
        return
    key = domain.business_key  # every foreign key points to it (`in_load_order`)
    stage = create_stage(conn, CLEAN_TABLES[domain.name], [key])  # staged once, for every referencing key
    fill_stage(conn, stage, changed_keys.select(key))
    for child, fk in dependents:
        _mark_referencing(conn, child, fk, sa.select(stage.c[key]))


def _mark_referencing(conn: sa.Connection, child: Domain, fk: ForeignKey, keys: sa.Select[Any]) -> None:
    """Have the next clean run of `child` re-decide its records whose foreign key `fk` is one of `keys`."""
    child_candidates = CANDIDATE_TABLES[child.name]
    # IN: driven by the keys through the candidates' foreign-key index, on SQLite too.
    mark_changed(conn, child, sa.select(child_candidates.c.crm_id).where(child_candidates.c[fk.column].in_(keys)))


def add_rejections(conn: sa.Connection, domain: Domain, rejected: pl.DataFrame, run_id: str | None) -> None:
    """Quarantine records (crm_id, reason) with their raw payload."""
    if rejected.is_empty():
        return
    problem = problems(pl.col("reason"))
    stage = create_stage(conn, rejected_records, ["crm_id", "reason", "problem"])
    fill_stage(conn, stage, rejected.select("crm_id", "reason", problem.alias("problem")))
    raw = RAW_TABLES[domain.name]
    # On PostgreSQL the ids' range bounds the payload lookup: a merge join would otherwise read raw from
    # its first row. SQLite looks each id up.
    matched = raw.c.crm_id == stage.c.crm_id
    if is_postgres(conn):
        matched = sa.and_(matched, raw.c.crm_id.between(rejected["crm_id"].min(), rejected["crm_id"].max()))
    source = sa.select(
        sa.literal(domain.name),
        stage.c.crm_id,
        stage.c.reason,
        stage.c.problem,
        raw.c.payload,
        sa.literal(run_id, sa.String),
        sa.literal(datetime.now(UTC), rejected_records.c.rejected_at.type),
    ).select_from(stage.outerjoin(raw, matched))
    columns = ["domain", "crm_id", "reason", "problem", "payload", "run_id", "rejected_at"]
    # Few against the raw rows of their id range (a first load's duplicates and orphans, a batch's uncastable
    # records), each payload is cheaper to look up by id than the range is to read whole: one in nine deals
    # of the demo CRM is rejected, yet a merge join reads every payload of the range.
    id_span = rejected.select(pl.col("crm_id").max() - pl.col("crm_id").min() + 1).item()
    share = rejected.height * PAYLOAD_PROBE_SHARE
    few = is_postgres(conn) and share <= id_span and share <= _row_count(conn, raw)  # the catalog last
    with probing_joins(conn, few):
        conn.execute(rejected_records.insert().from_select(columns, source))


def _drop_changed_rejections(conn: sa.Connection, domain: Domain, after: int, through: int) -> None:
    """Delete the domain's rejections of every raw row changed in (after, through], in one statement.

    For a fresh run (no candidates: a first load, or a table new to the warehouse), whose records hold no
    rejection of a clean run except such a table's leftovers: one delete, usually of nothing, instead of
    staging each batch's ids to delete by.
    """
    raw = RAW_TABLES[domain.name]
    changed = sa.select(raw.c.crm_id).where(raw.c.change_seq.between(after + 1, through))
    _drop_rejections(conn, domain, changed, probing=False)


def _drop_rejections(conn: sa.Connection, domain: Domain, crm_ids: sa.Select[Any], *, probing: bool) -> None:
    """Delete the domain's rejections of `crm_ids`; `probing`: inside `probing_joins` (see `probed_in`).

    The raw step's quarantine of a copy it could not store goes only once a copy is stored with it or after
    it (a scan that listed both copies stores the newest storable one, as it did before): a record re-decided
    from a copy raw kept from before (a rebuild, a referenced key that changed) still has that one unstored.
    """
    r, raw = rejected_records.c, RAW_TABLES[domain.name].c
    among = probed_in(conn, r.crm_id, crm_ids) if probing else r.crm_id.in_(crm_ids)
    stored_since = sa.exists().where(raw.crm_id == r.crm_id, raw.synced_at >= r.rejected_at)
    settled = sa.or_(~r.reason.startswith(UNSTORABLE_PAYLOAD), stored_since)
    conn.execute(sa.delete(rejected_records).where(r.domain == domain.name, among, settled))


def _count(conn: sa.Connection, domain: Domain, changes: TableChanges) -> None:
    table = CLEAN_TABLES[domain.name]
    changes.rows = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
    changes.rejected, changes.rejected_by_reason = rejection_counts(conn, domain.name)


def rejection_counts(conn: sa.Connection, domain: str) -> tuple[int, dict[str, int]]:
    """(records quarantined for a domain, how many show each kind of problem)."""
    problems = conn.execute(
        sa.select(rejected_records.c.problem, sa.func.count())
        .where(rejected_records.c.domain == domain)
        .group_by(rejected_records.c.problem)
    ).all()
    return sum(n for _, n in problems), tally_kinds((problem.split("; "), n) for problem, n in problems)


def read_clean_rows(conn: sa.Connection, domain: Domain, limit: int | None = None) -> pl.DataFrame:
    table = CLEAN_TABLES[domain.name]
    schema = output_schema(domain)
    query = sa.select(*(table.c[c] for c in schema)).order_by(table.c[domain.business_key])
    return read_frame(conn, query if limit is None else query.limit(limit), schema)
