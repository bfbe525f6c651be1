"""Raw extract tables: CRM records as returned, one row per CRM id."""

from __future__ import annotations

import json
import reprlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl
import sqlalchemy as sa

from crm_assets.domains import Domain
from crm_assets.lenient_json import UnreadableValueError, refuse_unreadable
from crm_assets.timestamps import as_utc, parse_instant
from crm_assets.transform.clean import reason_kinds, tally_kinds
from crm_assets.warehouse.bulk import (
    RowStream,
    analyze_after_bulk_change,
    fill_stage_rows,
    read_frame,
    upsert_insert,
)
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.schema import RAW_TABLES, raw_scan_records, raw_scans, rejected_records, sync_state

RAW_STAGE_COLUMNS = ("crm_id", "payload", "updated_at", "is_deleted", "synced_at", "run_id")
SCAN_COLUMNS = ("scan_id", "crm_id", "kind", "payload", "updated_at", "is_deleted", "reason", "problem")

# Kinds of staged row: a listing's copy (live or not), a Recycle Bin copy, a fresh copy fetched to confirm
# a record a full listing missed, a 404 on that fetch, and a record the warehouse cannot store as it came.
LISTED, DELETED, CONFIRMED, GONE, REJECTED = "listed", "deleted", "confirmed", "gone", "rejected"
COPIES = (LISTED, DELETED, CONFIRMED)

BIGINT_RANGE = (-(2**63), 2**63 - 1)
# How the reason of a copy the warehouse cannot store (its payload is no JSON) begins. The raw row keeps the
# last copy it could store: only a copy stored by the quarantining merge or a later one releases the record.
UNSTORABLE_PAYLOAD = "payload: cannot be stored as JSON"
# A quarantined payload is kept for a person to read, not to load: past this many characters it is cut.
MAX_REJECTED_PAYLOAD_CHARS = 100_000
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 20, 50, 50, 1_000, 200


@dataclass
class RawLoadStats:
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    marked_deleted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    max_updated_at: datetime | None = None
    # Full reconciliation: live rows the listing did not show are re-read one by one, up to a cap.
    unlisted_checked: int = 0
    confirmed_deleted: int = 0
    still_live: int = 0
    unconfirmed: int = 0  # unlisted rows left alone (beyond the cap, or no way to check)


@dataclass(frozen=True)
class DeletionCounts:
    """What a merge would delete, known before any confirmation is spent."""

    live: int  # live rows of the raw table now
    deleted_by_crm: int  # live rows the CRM now lists as deleted (Recycle Bin, is_deleted)
    unlisted: int  # live rows a full listing did not show (deleted only once confirmed)

    @property
    def at_risk(self) -> int:
        return self.deleted_by_crm + self.unlisted


@dataclass(frozen=True)
class SyncCursor:
    cursor: datetime | None
    last_full_sync_at: datetime | None


@dataclass(frozen=True)
class Storable:
    crm_id: int
    record: dict[str, Any]
    text: str


@dataclass(frozen=True)
class Unstorable:
    crm_id: int | None
    reason: str
    payload: Any  # the record when it can be stored as JSON, else its text (cut when huge) as a JSON string


def _storable(record: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The record and its JSON text, with any NUL character (U+0000) replaced by U+FFFD.

    PostgreSQL's JSONB refuses NUL and SQLite's JSON functions cut text at it: replace it the same way on both.
    Raises orjson.JSONEncodeError when the record cannot be JSON (nested deeper than 255 levels, integers
    beyond 64 bits, strings with lone surrogates, values the CRM sent that no JSON can hold such as 1e400).
    """
    text = orjson.dumps(record, default=refuse_unreadable).decode()
    if "\\u0000" in text:
        record = _replace_nul(record)
        text = orjson.dumps(record, default=refuse_unreadable).decode()
    return record, text


def _replace_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_replace_nul(k): _replace_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_nul(v) for v in value]
    return value


def usable_id(value: Any) -> tuple[int | None, str | None]:
    """(the CRM id, None) when the warehouse can key a row by it, else (None, the reason)."""
    if value is None:
        return None, "id: missing"
    if not isinstance(value, int) or isinstance(value, bool):
        return None, f"id: not an integer ({_REPR.repr(value)})"
    if not BIGINT_RANGE[0] <= value <= BIGINT_RANGE[1]:
        return None, f"id: outside the 64-bit range the warehouse stores ({value})"
    return value, None


def check_record(record: Any) -> Storable | Unstorable:
    """Whether the warehouse can store a record as it came; if not, why, with a payload safe to keep."""
    if not isinstance(record, dict):
        return Unstorable(None, f"record: not a JSON object ({type(record).__name__})", _safe_text(record))
    crm_id, id_problem = usable_id(record.get("id"))
    try:
        stored, text = _storable(record)
    except (orjson.JSONEncodeError, TypeError, RecursionError) as exc:
        problems = [p for p in (id_problem, f"{UNSTORABLE_PAYLOAD} ({_encode_problem(exc)})") if p]
        return Unstorable(crm_id, "; ".join(problems), _safe_text(record))
    if crm_id is None:
        payload: Any = stored if len(text) <= MAX_REJECTED_PAYLOAD_CHARS else _cut(text)
        return Unstorable(None, id_problem or "id: missing", payload)
    return Storable(crm_id, stored, text)


def _encode_problem(exc: BaseException) -> str:
    if isinstance(exc.__cause__, UnreadableValueError):  # orjson wraps what its `default` raised
        return str(exc.__cause__)
    message = str(exc) or type(exc).__name__
    if "recursion" in message.lower() or isinstance(exc, RecursionError):
        return "nested deeper than 255 levels"
    return message[:200]


def _safe_text(value: Any) -> str:
    """Readable text of a value JSON cannot hold as it is: lone surrogates escaped, depth and length cut."""
    try:
        text = json.dumps(value, ensure_ascii=True, default=repr)
    except (RecursionError, ValueError, TypeError):
        text = _REPR.repr(value)
    return _cut(text.replace("\x00", "\ufffd"))


def _cut(text: str) -> str:
    if len(text) <= MAX_REJECTED_PAYLOAD_CHARS:
        return text
    return text[:MAX_REJECTED_PAYLOAD_CHARS] + f"... [cut: {len(text):,} characters in all]"


def _stage(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Append rows (in SCAN_COLUMNS order) to raw_scan_records: COPY on PostgreSQL, executemany on SQLite."""
    if rows:
        fill_stage_rows(conn, raw_scan_records, rows, SCAN_COLUMNS)


def new_scan_id() -> str:
    return uuid.uuid4().hex


class RawWriter:
    """Stages record batches (durably, in raw_scan_records), then merges the newest copy per id into raw_<domain>.

    A writer of its own (no `scan_id`) works inside the caller's transaction: nothing is visible until it
    commits. A resumable extraction stages a scan over many transactions (one writer per checkpoint, the
    same `scan_id`) and merges it once, when the scan is complete.
    """

    def __init__(self, conn: sa.Connection, domain: Domain, run_id: str | None, scan_id: str | None = None) -> None:
        self.conn = conn
        self.domain = domain
        self.table = RAW_TABLES[domain.name]
        self.run_id = run_id
        self.scan_id = scan_id or new_scan_id()
        self.synced_at = datetime.now(UTC)
        self.stats = RawLoadStats()
        self._mine = raw_scan_records.c.scan_id == self.scan_id
        self._stream: RowStream | None = None

    def open_stream(self) -> None:
        """Stage what `add` gets through one COPY kept open until `close_stream` (PostgreSQL).

        The connection runs nothing else meanwhile: close the stream before any other statement.
        """
        if self._is_postgres and self._stream is None:
            self._stream = RowStream(self.conn, raw_scan_records, SCAN_COLUMNS)

    def close_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def add(self, records: Iterable[Any], *, deleted: bool = False) -> int:
        """Stage a page of a listing (`deleted`: of the Recycle Bin); returns the records staged."""
        rows = [self._row(record, DELETED if deleted else LISTED, deleted) for record in records]
        if self._stream is not None:
            self._stream.write(rows)
        else:
            _stage(self.conn, rows)
        return len(rows)

    def add_confirmations(self, found: Mapping[int, dict[str, Any] | None]) -> None:
        """Stage what a GET of each unlisted id answered: its fresh copy, or None when it is gone (404)."""
        rows = [
            self._row(record, CONFIRMED, False)
            if record is not None
            else (self.scan_id, crm_id, GONE, None, None, True, None, None)
            for crm_id, record in found.items()
        ]
        _stage(self.conn, rows)

    def _row(self, record: Any, kind: str, deleted: bool) -> tuple[Any, ...]:
        checked = check_record(record)
        if isinstance(checked, Unstorable):
            payload = checked.payload if not self._is_postgres else orjson.dumps(checked.payload).decode()
            problem = "; ".join(reason_kinds(checked.reason))
            # A copy from the Recycle Bin (or flagged deleted) still says the record is gone, stored or not.
            gone = deleted or (isinstance(record, dict) and record.get("is_deleted") is True)
            return (self.scan_id, checked.crm_id, REJECTED, payload, None, gone, checked.reason, problem)
        updated_at = parse_instant(record.get("updated_at")) or parse_instant(record.get("created_at"))
        payload = checked.text if self._is_postgres else checked.record
        is_deleted = deleted or record.get("is_deleted") is True
        return (self.scan_id, checked.crm_id, kind, payload, updated_at or self.synced_at, is_deleted, None, None)

    @property
    def _is_postgres(self) -> bool:
        return is_postgres(self.conn)

    # -- before the merge --------------------------------------------------------------------------

    def _newest(self) -> sa.Subquery:
        """The newest staged copy of each id (a later updated_at wins; on a tie, the deleted copy).

        The copies are ranked on their narrow columns alone and the winners' payloads read after, by id:
        sorting the payloads along would spill the whole scan to disk.
        """
        stage = raw_scan_records
        ranked = (
            sa.select(
                stage.c.id,
                sa.func.row_number()
                .over(partition_by=stage.c.crm_id, order_by=(stage.c.updated_at.desc(), stage.c.is_deleted.desc()))
                .label("rank"),
            )
            .where(self._mine, stage.c.kind.in_(COPIES))
            .subquery()
        )
        return (
            sa.select(stage.c.crm_id, stage.c.payload, stage.c.updated_at, stage.c.is_deleted)
            .select_from(stage.join(ranked, ranked.c.id == stage.c.id))
            .where(ranked.c.rank == 1)
            .subquery()
        )

    def _deleted_unstored(self) -> sa.Select[Any]:
        """Ids whose deleted copy (Recycle Bin) this scan staged but could not store: gone all the same."""
        stage = raw_scan_records
        return sa.select(stage.c.crm_id).where(
            self._mine, stage.c.kind == REJECTED, stage.c.is_deleted, stage.c.crm_id.is_not(None)
        )

    def _unlisted(self) -> sa.ColumnElement[bool]:
        """Live raw rows of which this scan staged nothing (index lookups on (scan_id, crm_id))."""
        stage, table = raw_scan_records, self.table
        staged = sa.exists().where(self._mine, stage.c.crm_id == table.c.crm_id)
        return sa.and_(~table.c.is_deleted, ~staged)

    def deletion_counts(self, *, reconcile: bool) -> DeletionCounts:
        """How many live rows the merge would delete: cheap, and before any confirmation is spent."""
        table = self.table
        live = self.conn.execute(sa.select(sa.func.count()).where(~table.c.is_deleted)).scalar_one()
        newest = self._newest()
        by_crm = self.conn.execute(
            sa.select(sa.func.count())
            .select_from(newest.join(table, table.c.crm_id == newest.c.crm_id))
            .where(newest.c.is_deleted, ~table.c.is_deleted)
        ).scalar_one()
        by_crm += self.conn.execute(
            sa.select(sa.func.count()).where(
                ~table.c.is_deleted,
                table.c.crm_id.in_(self._deleted_unstored()),
                ~table.c.crm_id.in_(sa.select(newest.c.crm_id).where(newest.c.is_deleted)),
            )
        ).scalar_one()
        unlisted = 0
        if reconcile:
            unlisted = self.conn.execute(sa.select(sa.func.count()).where(self._unlisted())).scalar_one()
        return DeletionCounts(int(live), int(by_crm), int(unlisted))

    def unlisted_ids(self, limit: int) -> list[int]:
        """Up to `limit` live ids the listing did not show and no confirmation has answered yet."""
        if limit <= 0:
            return []
        query = sa.select(self.table.c.crm_id).where(self._unlisted()).order_by(self.table.c.crm_id).limit(limit)
        return [int(i) for i in self.conn.execute(query).scalars()]

    # -- the merge ---------------------------------------------------------------------------------

    def merge(
        self,
        *,
        reconcile: bool,
        confirm: Callable[[list[int]], Mapping[int, dict[str, Any] | None]] | None = None,
        max_checks: int = 1_000,
    ) -> RawLoadStats:
        """Stage confirmations of unlisted rows (with `reconcile` and `confirm`), then apply, in one go."""
        if reconcile and confirm is not None:
            self.add_confirmations(confirm(self.unlisted_ids(max_checks)))
        return self.apply(reconcile=reconcile)

    def apply(self, *, reconcile: bool, just_written: bool = False) -> RawLoadStats:
        """Upsert the newest staged copy of each id, delete what the CRM confirmed gone, quarantine the rest.

        A row a full listing merely did not show stays as it is (counted as unconfirmed): absence alone
        never deletes. The staged rows of the scan are removed. `just_written`: the copies are what the CRM
        answered a write-back's own write, so one whose payload differs replaces the stored copy even at the
        same updated_at (Freshsales counts seconds: two writes in one second share it).
        """
        payload_wins = reconcile or just_written
        # No ANALYZE of the staging table here: it would serialize every domain's merge on its lock, and
        # autovacuum has seen the rows, committed checkpoint by checkpoint.
        table, stage = self.table, raw_scan_records
        self._count_staged(reconcile)
        seq = next_change_seq(self.conn, self.domain)
        newest = self._newest()
        matched = newest.outerjoin(table, table.c.crm_id == newest.c.crm_id)
        read_since = self._read_since()
        changed = self._replaces(newest.c.updated_at, newest.c.is_deleted, newest.c.payload, payload_wins, read_since)
        counts = sa.select(
            sa.func.count().filter(table.c.crm_id.is_(None)),
            sa.func.count().filter(table.c.crm_id.is_not(None) & changed),
            sa.func.count().filter(newest.c.is_deleted & table.c.crm_id.is_not(None) & ~table.c.is_deleted),
        ).select_from(matched)
        self.stats.inserted, self.stats.updated, deleted_copies = self.conn.execute(counts).one()

        source = sa.select(
            newest.c.crm_id,
            newest.c.payload,
            newest.c.updated_at,
            newest.c.is_deleted,
            sa.literal(self.synced_at, table.c.synced_at.type),
            sa.literal(self.run_id, table.c.run_id.type),
            sa.literal(seq, table.c.change_seq.type),
        ).where(sa.true())  # WHERE: SQLite's parser needs it before ON CONFLICT
        insert = upsert_insert(self.conn, table).from_select([*RAW_STAGE_COLUMNS, "change_seq"], source)
        excluded = insert.excluded
        insert = insert.on_conflict_do_update(
            index_elements=["crm_id"],
            set_={c: excluded[c] for c in (*RAW_STAGE_COLUMNS, "change_seq") if c != "crm_id"},
            where=self._replaces(excluded.updated_at, excluded.is_deleted, excluded.payload, payload_wins, read_since),
        )
        self.conn.execute(insert)
        gone = sa.union(sa.select(stage.c.crm_id).where(self._mine, stage.c.kind == GONE), self._deleted_unstored())
        confirmed_gone = self.conn.execute(
            sa.update(table)
            .where(table.c.crm_id.in_(gone), ~table.c.is_deleted)
            .values(is_deleted=True, synced_at=self.synced_at, run_id=self.run_id, change_seq=seq)
        ).rowcount
        self.stats.marked_deleted = int(deleted_copies) + (confirmed_gone or 0)
        self._quarantine(full_listing=reconcile)
        analyze_after_bulk_change(self.conn, table, self.stats.inserted + self.stats.updated)
        self.conn.execute(sa.delete(stage).where(self._mine))
        return self.stats

    def _read_since(self) -> datetime:
        """When the reading of the staged copies began: their scan's start, or this writer's creation (the
        copy a write-back got back from the CRM, a test's records)."""
        started = self.conn.execute(sa.select(raw_scans.c.started_at).where(raw_scans.c.scan_id == self.scan_id))
        started_at = started.scalar()
        return as_utc(started_at) if started_at is not None else self.synced_at

    def _replaces(
        self,
        updated_at: sa.ColumnElement[Any],
        is_deleted: sa.ColumnElement[Any],
        payload: sa.ColumnElement[Any],
        payload_wins: bool,
        read_since: datetime,
    ) -> sa.ColumnElement[bool]:
        """Whether a copy (its updated_at, is_deleted and payload), read from `read_since` on, replaces the
        stored row of its id.

        A newer copy does. An older one only if it differs and was read after the stored copy was stored:
        the CRM's clock went back. One that may have been read before (a page of a scan begun before a
        write-back or another run stored a newer copy) would put the old values back, and the history would
        keep a change back and forth that never happened. At the same updated_at, a deletion (or restore)
        does, and with `payload_wins` (a full listing, a write-back's own copy) a different payload.
        """
        stored = self.table.c
        same_time = sa.and_(
            stored.updated_at == updated_at,
            sa.or_(stored.is_deleted.is_distinct_from(is_deleted), *self._payload_changed(payload, payload_wins)),
        )
        clock_went_back = sa.and_(
            stored.updated_at > updated_at,
            stored.synced_at < sa.literal(read_since, stored.synced_at.type),
            sa.or_(stored.is_deleted.is_distinct_from(is_deleted), stored.payload.is_distinct_from(payload)),
        )
        return sa.or_(stored.updated_at < updated_at, same_time, clock_went_back)

    def _payload_changed(self, payload: sa.ColumnElement[Any], payload_wins: bool) -> list[sa.ColumnElement[bool]]:
        """On a full listing (or a write-back's own copy), a different payload replaces the stored one even at the
        same updated_at.

        A CRM field restored (or renamed back) leaves updated_at as it was; a full refresh is how the warehouse
        takes the records as the CRM returns them now. Incremental runs keep the stored copy: a record re-read
        in the overlap during a field's outage must not replace a good copy the next incremental run won't
        read again.
        """
        return [self.table.c.payload.is_distinct_from(payload)] if payload_wins else []

    def _count_staged(self, reconcile: bool) -> None:
        stage = raw_scan_records
        by_kind = sa.select(stage.c.kind, sa.func.count()).where(self._mine).group_by(stage.c.kind)
        kinds: dict[str, int] = {str(k): int(n) for k, n in self.conn.execute(by_kind).all()}
        confirmed_deleted = self.conn.execute(
            sa.select(sa.func.count()).where(self._mine, stage.c.kind == CONFIRMED, stage.c.is_deleted)
        ).scalar_one()
        self.stats.fetched = sum(kinds.get(k, 0) for k in (LISTED, DELETED, REJECTED))
        self.stats.rejected = kinds.get(REJECTED, 0)
        self.stats.unlisted_checked = kinds.get(CONFIRMED, 0) + kinds.get(GONE, 0)
        self.stats.confirmed_deleted = kinds.get(GONE, 0) + int(confirmed_deleted)
        self.stats.still_live = kinds.get(CONFIRMED, 0) - int(confirmed_deleted)
        if reconcile:
            self.stats.unconfirmed = int(
                self.conn.execute(sa.select(sa.func.count()).where(self._unlisted())).scalar_one()
            )
        problems = self.conn.execute(
            sa.select(stage.c.problem, sa.func.count())
            .where(self._mine, stage.c.kind == REJECTED)
            .group_by(stage.c.problem)
        ).all()
        self.stats.rejected_by_reason = tally_kinds((str(p).split("; "), int(n)) for p, n in problems)
        self.stats.max_updated_at = _utc_or_none(
            self.conn.execute(
                sa.select(sa.func.max(stage.c.updated_at)).where(self._mine, stage.c.kind.in_((LISTED, DELETED)))
            ).scalar()
        )

    def _quarantine(self, *, full_listing: bool) -> None:
        """Staged records the warehouse cannot store go to rejected_records, replacing earlier copies of them.

        Only this step quarantines records without a usable id (a clean run's rejects all have one): after a
        full listing, the ones it no longer shows leave quarantine.
        """
        stage, rejected = raw_scan_records, rejected_records
        mine = sa.and_(self._mine, stage.c.kind == REJECTED)
        # Two statements, not one with OR: each correlated lookup then uses the (scan_id, crm_id) index.
        by_id = sa.exists().where(mine, stage.c.crm_id == rejected.c.crm_id, stage.c.problem == rejected.c.problem)
        without_id = sa.exists().where(
            mine,
            stage.c.crm_id.is_(None),
            stage.c.problem == rejected.c.problem,
            stage.c.reason == rejected.c.reason,
            stage.c.payload == rejected.c.payload,
        )
        domain = rejected.c.domain == self.domain.name
        self.conn.execute(sa.delete(rejected).where(domain, rejected.c.crm_id.is_not(None), by_id))
        stale = sa.true() if full_listing else without_id
        self.conn.execute(sa.delete(rejected).where(domain, rejected.c.crm_id.is_(None), stale))
        identity = sa.case((stage.c.crm_id.is_(None), stage.c.payload))
        ranked = (
            sa.select(
                stage.c.crm_id,
                stage.c.reason,
                stage.c.problem,
                stage.c.payload,
                sa.func.row_number()
                .over(partition_by=(stage.c.crm_id, stage.c.problem, identity), order_by=stage.c.id.desc())
                .label("rank"),
            )
            .where(mine)
            .subquery()
        )
        source = sa.select(
            sa.literal(self.domain.name, rejected.c.domain.type),
            ranked.c.crm_id,
            ranked.c.reason,
            ranked.c.problem,
            ranked.c.payload,
            sa.literal(self.run_id, rejected.c.run_id.type),
            # The time this merge stores its copies at: a copy stored with it or after releases the record.
            sa.literal(self.synced_at, rejected.c.rejected_at.type),
        ).where(ranked.c.rank == 1)
        columns = ["domain", "crm_id", "reason", "problem", "payload", "run_id", "rejected_at"]
        self.conn.execute(rejected.insert().from_select(columns, source))


def read_cursor(conn: sa.Connection, domain: Domain) -> SyncCursor:
    row = conn.execute(
        sa.select(sync_state.c.cursor, sync_state.c.last_full_sync_at).where(sync_state.c.domain == domain.name)
    ).first()
    if row is None:
        return SyncCursor(None, None)
    return SyncCursor(_utc_or_none(row.cursor), _utc_or_none(row.last_full_sync_at))


def _utc_or_none(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def save_cursor(conn: sa.Connection, domain: Domain, cursor: datetime | None, *, full: bool) -> None:
    now = datetime.now(UTC)
    values: dict[str, Any] = {"domain": domain.name, "cursor": cursor, "updated_at": now}
    if full:
        values["last_full_sync_at"] = now
    insert = upsert_insert(conn, sync_state).values(**values)
    update = {k: v for k, v in values.items() if k != "domain"}
    if cursor is None:
        update.pop("cursor")
    conn.execute(insert.on_conflict_do_update(index_elements=["domain"], set_=update))


def json_field_as_text(conn: sa.Connection, payload: sa.Column[Any], path: tuple[str, ...]) -> sa.ColumnElement[Any]:
    """A JSON field of the payload as text, the same on both dialects (paths are validated identifiers)."""
    if is_postgres(conn):
        return sa.literal_column(f"{payload.name} #>> '{{{','.join(path)}}}'")
    # Strings by json_extract (unquoted); the rest as their JSON text (`->`, SQLite 3.38+), as PostgreSQL
    # gives them: json_extract makes true/false 1/0, and an integer beyond 64 bits a REAL of 15 digits.
    json_path = f"'$.{'.'.join(path)}'"
    where = f"{payload.name}, {json_path}"
    return sa.literal_column(
        f"CASE json_type({where}) WHEN 'text' THEN json_extract({where}) WHEN 'null' THEN NULL "
        f"ELSE {payload.name} -> {json_path} END"
    )


def _field_schema(domain: Domain) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {
        "crm_id": pl.Int64(),
        "updated_at": pl.Datetime("us", "UTC"),
        "is_deleted": pl.Boolean(),
    }
    return schema | {c.name: pl.String() for c in domain.columns}


def _fields_query(conn: sa.Connection, domain: Domain) -> sa.Select[Any]:
    """What cleaning reads of a raw row: no more (each column costs the server its text, the client its parse)."""
    table = RAW_TABLES[domain.name]
    fields = [json_field_as_text(conn, table.c.payload, c.source_path).label(c.name) for c in domain.columns]
    return sa.select(table.c.crm_id, table.c.updated_at, table.c.is_deleted, *fields)


def lock_domain(conn: sa.Connection, domain: Domain) -> None:
    """Serialize writers of a domain's raw and clean tables until the transaction ends.

    Whoever needs several domains locks them in load order (referenced domains first), so no two wait
    on each other. SQLite has one lock for the whole file: it is taken here, by a statement that writes
    nothing (the driver begins the write transaction before any write), so that what the transaction
    reads from now on no other writer changes before it ends.
    """
    if is_postgres(conn):
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"crm_assets.{domain.name}"))))
    else:
        conn.execute(sa.update(sync_state).where(sa.false()).values(domain=sync_state.c.domain))


def next_change_seq(conn: sa.Connection, domain: Domain) -> int:
    """The change_seq for the rows a write changes now; takes the domain's lock."""
    lock_domain(conn, domain)
    table = RAW_TABLES[domain.name]
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.change_seq), 0) + 1)).scalar_one())


def latest_change_seq(conn: sa.Connection, domain: Domain) -> int:
    table = RAW_TABLES[domain.name]
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.change_seq), 0))).scalar_one())


def read_cleaned_through(conn: sa.Connection, domain: Domain) -> int:
    seq = conn.execute(sa.select(sync_state.c.cleaned_through).where(sync_state.c.domain == domain.name)).scalar()
    return int(seq or 0)


def save_cleaned_through(conn: sa.Connection, domain: Domain, seq: int) -> None:
    values = {"domain": domain.name, "cleaned_through": seq, "updated_at": datetime.now(UTC)}
    insert = upsert_insert(conn, sync_state).values(**values)
    conn.execute(insert.on_conflict_do_update(index_elements=["domain"], set_={"cleaned_through": seq}))


def read_changed_batches(
    conn: sa.Connection, domain: Domain, after_seq: int, through_seq: int, batch_size: int
) -> Iterator[pl.DataFrame]:
    """Raw rows with after_seq < change_seq <= through_seq, `batch_size` at a time, values as text.

    Pages by crm_id, so memory stays bounded whatever the table's size.
    """
    table = RAW_TABLES[domain.name]
    changed = table.c.change_seq.between(after_seq + 1, through_seq)
    query = _fields_query(conn, domain).where(changed).order_by(table.c.crm_id).limit(batch_size)
    last: int | None = None
    while True:
        page = query if last is None else query.where(table.c.crm_id > last)
        batch = read_frame(conn, page, _field_schema(domain))
        if batch.is_empty():
            return
        yield batch
        last = int(batch["crm_id"][-1])


def mark_changed(conn: sa.Connection, domain: Domain, crm_ids: sa.Select[Any]) -> None:
    """Have the next clean run of `domain` re-decide these records."""
    table = RAW_TABLES[domain.name]
    seq = next_change_seq(conn, domain)
    conn.execute(sa.update(table).where(table.c.crm_id.in_(crm_ids)).values(change_seq=seq))


def read_live_fields(conn: sa.Connection, domain: Domain) -> pl.DataFrame:
    """Every live record's crm_id, updated_at and each domain column's value as text."""
    table = RAW_TABLES[domain.name]
    return read_frame(conn, _fields_query(conn, domain).where(~table.c.is_deleted), _field_schema(domain))


def raw_summary(conn: sa.Connection, domain: Domain, preview_rows: int = 5) -> tuple[int, int, pl.DataFrame]:
    """(live records, deleted records, the most recently synced rows) of a raw table."""
    table = RAW_TABLES[domain.name]
    live, deleted = conn.execute(
        sa.select(sa.func.count().filter(~table.c.is_deleted), sa.func.count().filter(table.c.is_deleted))
    ).one()
    latest = sa.select(table.c.crm_id, table.c.updated_at, table.c.is_deleted).order_by(
        table.c.synced_at.desc(), table.c.updated_at.desc()
    )
    schema: dict[str, pl.DataType] = {
        "crm_id": pl.Int64(),
        "updated_at": pl.Datetime("us", "UTC"),
        "is_deleted": pl.Boolean(),
    }
    return int(live), int(deleted), read_frame(conn, latest.limit(preview_rows), schema)
