"""Bulk writes: one path per dialect, both ending in a set-based upsert from a staging table.

PostgreSQL stages with COPY (the fastest way in); SQLite stages with executemany. Either way the merge
into the target is a single `INSERT ... SELECT ... ON CONFLICT DO UPDATE` inside the caller's transaction.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import re
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

import polars as pl
import sqlalchemy as sa
from pgpq import ArrowToPostgresBinaryEncoder
from sqlalchemy.dialects import postgresql, sqlite

from crm_assets.warehouse.dialect import is_postgres

_SQLITE_CHUNK = 20_000
_log = logging.getLogger(__name__)
# A pyformat placeholder, or an escaped % (matched first, so `%%(x)s` stays literal text).
_PLACEHOLDER_OR_PERCENT = re.compile(r"%%|%\([^)]*\)s")
_STAGES = "crm_assets.stages"
_ANALYZE_AFTER_ROWS = 50_000


def upsert_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that supports ON CONFLICT, in the connection's dialect."""
    return (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)


def create_stage(
    conn: sa.Connection,
    like: sa.Table,
    columns: Sequence[str],
    primary_key: Sequence[str] = (),
    indexed: Sequence[str] = (),
) -> sa.Table:
    """A temporary table with `columns` typed as in `like`, dropped at the end of the transaction.

    `indexed` columns get an index: a statement that looks rows of the stage up by a column (a correlated
    EXISTS, a join driven by another table) needs one on SQLite, which has no hash join and would scan
    the stage once per outer row.
    """
    name = f"stage_{like.name}_{uuid.uuid4().hex[:8]}"
    stage = sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c, like.c[c].type, primary_key=c in primary_key) for c in columns),
        *(sa.Index(f"ix_{name}_{c}", c) for c in indexed),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",  # ignored by SQLite, whose temporary tables live as long as the connection
    )
    stage.create(conn)
    conn.info.setdefault(_STAGES, []).append(stage)
    return stage


def drop_stages(conn: sa.Connection, keep: Collection[sa.Table] = ()) -> None:
    """Drop this connection's staging tables now, but `keep` (a long transaction would pile them up)."""
    stages = conn.info.pop(_STAGES, [])
    for stage in stages:
        if stage not in keep:
            stage.drop(conn, checkfirst=True)
    conn.info[_STAGES] = [s for s in stages if s in keep]


@contextlib.contextmanager
def stages_dropped(conn: sa.Connection) -> Iterator[None]:
    """Drop the staging tables created inside the block when it ends, on SQLite, where a temporary table
    lives as long as the pooled connection. PostgreSQL drops them at commit or rollback itself, and a DROP
    in a failed transaction would only hide its error."""
    try:
        yield
    finally:
        if not is_postgres(conn):
            drop_stages(conn)


def fill_stage(conn: sa.Connection, stage: sa.Table, frame: pl.DataFrame) -> None:
    """Append a frame to a table (a stage, or a target when every row is known to be new)."""
    if frame.is_empty():
        return
    if is_postgres(conn):
        _copy_frame(conn, stage, frame)
    else:
        _insert_frame(conn, stage, frame)
    analyze_stage(conn, stage)


def is_empty(conn: sa.Connection, table: sa.Table) -> bool:
    """Whether `table` holds no row (one row read at most)."""
    return conn.execute(sa.select(sa.true()).select_from(table).limit(1)).first() is None


def analyze_stage(conn: sa.Connection, table: sa.Table) -> None:
    """Temporary tables are never auto-analyzed: without statistics PostgreSQL plans joins on them badly."""
    if is_postgres(conn) and "TEMPORARY" in table._prefixes:
        conn.execute(sa.text(f'ANALYZE "{table.name}"'))


def analyze_after_bulk_change(conn: sa.Connection, table: sa.Table, changed_rows: int) -> None:
    """Refresh a table's statistics after a large change, so the next queries in the same run plan well.

    Autovacuum would get there too, but only after the run has planned its queries on stale numbers.
    """
    if is_postgres(conn) and changed_rows >= _ANALYZE_AFTER_ROWS:
        conn.execute(sa.text(f'ANALYZE "{table.name}"'))


@contextlib.contextmanager
def probing_joins(conn: sa.Connection, enabled: bool = True) -> Iterator[None]:
    """On PostgreSQL (and when `enabled`), join by index probes from the (small) staged side, for the statements inside.

    With hash and merge joins off, a join of a few thousand staged keys with a large table probes the
    table's index once per key instead of reading all of it: the planner's costs (random reads assumed
    four times dearer than sequential ones) prefer the full read up to several percent of the table, but
    a warm index probe costs about as much as reading 50 rows in sequence. Only for a stage that is small
    against the tables it meets: the probes cost more than the full read past a few percent of them.
    """
    if not enabled or not is_postgres(conn):
        yield
        return
    names = ("enable_hashjoin", "enable_mergejoin")
    saved = {n: conn.execute(sa.text(f"SELECT current_setting('{n}')")).scalar_one() for n in names}
    for name in names:
        conn.execute(sa.text(f"SET LOCAL {name} = off"))
    try:
        yield
    finally:
        for name, value in saved.items():
            conn.execute(sa.text(f"SET LOCAL {name} = {'on' if value == 'on' else 'off'}"))


def probed_in(conn: sa.Connection, column: sa.ColumnElement[Any], staged: sa.Select[Any]) -> sa.ColumnElement[bool]:
    """`column IN (staged)` for a statement inside `probing_joins`: on PostgreSQL as `= ANY(ARRAY(staged))`.

    With hash joins off, the planner may drive an IN's join from the big table when it misjudges its rows
    (no or stale statistics: a plain VACUUM gives a table its size but no column statistics) and scan the
    stage once per row, quadratic. An array of the staged values is an index condition, probed once per
    value whatever the estimates.
    """
    if not is_postgres(conn):
        return column.in_(staged)
    return column == sa.any_(sa.func.array(staged.scalar_subquery()))


def analyze_if_never_analyzed(conn: sa.Connection, table: sa.Table) -> None:
    """Give a table statistics if it has none yet (PostgreSQL): never analyzed, it looks nearly empty to
    the planner, which then drives joins from it however large it is. A table that VACUUM alone has seen
    knows its size but nothing of its columns' values: the planner guesses those, so it is analyzed too."""
    if not is_postgres(conn):
        return
    quoted = conn.dialect.identifier_preparer.quote(table.name)
    tuples, has_column_statistics = conn.execute(
        sa.text(
            "SELECT c.reltuples, EXISTS (SELECT FROM pg_stats s WHERE s.schemaname = n.nspname "
            "AND s.tablename = c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(:table)"
        ),
        {"table": quoted},
    ).one_or_none() or (None, False)
    if tuples is not None and (tuples < 0 or (tuples > 0 and not has_column_statistics)):
        conn.execute(sa.text(f"ANALYZE {quoted}"))


def fill_stage_rows(
    conn: sa.Connection, stage: sa.Table, rows: Iterable[Sequence[Any]], columns: Sequence[str] | None = None
) -> None:
    """Append Python row tuples in `columns` order (default: the table's), e.g. raw JSON payloads."""
    names = list(columns) if columns is not None else [c.name for c in stage.columns]
    if is_postgres(conn):
        with RowStream(conn, stage, names) as stream:
            stream.write(rows)
    else:
        _insert_rows(conn, stage, (dict(zip(names, row, strict=True)) for row in rows))


class RowStream:
    """Row tuples appended to a table over many calls through one COPY kept open (PostgreSQL only).

    The server takes the rows as they arrive, while the caller prepares the next ones: no round trip and
    no wait for the server per call. Nothing else can run on the connection until `close`; a stream that
    cannot be closed (an error half way) leaves a connection to invalidate, not to reuse.
    """

    def __init__(self, conn: sa.Connection, table: sa.Table, columns: Sequence[str]) -> None:
        names = ", ".join(f'"{n}"' for n in columns)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        self._stack = contextlib.ExitStack()
        self._copy = self._stack.enter_context(cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN'))

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            self._copy.write_row(row)

    def close(self) -> None:
        """End the COPY: the server has then checked and stored every row."""
        self._stack.close()

    def __enter__(self) -> RowStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)  # type: ignore[arg-type]


def _copy_frame(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    """COPY a frame into `table`: in PostgreSQL's binary format (pgpq encodes the Arrow columns) when each
    column holds the values of its column's type already, else as CSV, which the server parses by its rules.

    The server then parses no text: two and a half times the rows a second of the CSV COPY of a deals batch.
    """
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    binary = _binary_types(conn.dialect, table, frame.schema)
    options = "FORMAT csv, NULL ''" if binary is None else "FORMAT binary"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN WITH ({options})') as copy:
        if binary is None:
            buffer = io.BytesIO()
            frame.write_csv(buffer, include_header=False, null_value="", quote_style="non_numeric")
            copy.write(buffer.getbuffer())
            return
        batches = frame.cast(binary).to_arrow()
        encoder = ArrowToPostgresBinaryEncoder(batches.schema)
        copy.write(encoder.write_header())
        for batch in batches.to_batches():  # each encoded batch goes out before the next is encoded
            copy.write(encoder.write_batch(batch))
        copy.write(encoder.finish())


def _binary_types(dialect: sa.Dialect, table: sa.Table, schema: pl.Schema) -> pl.Schema | None:
    """For each column, the polars type whose Arrow form pgpq encodes as the column's binary form; None when
    a column has no such type here (JSON) or the frame holds other values (text for a number): binary
    values are taken as they come, while the server parses text by its own rules."""
    types: dict[str, pl.DataType] = {}
    for name, have in schema.items():
        want = _binary_type(table.c[name].type.dialect_impl(dialect))
        if want is None or not _holds(have, want):
            return None
        types[name] = want
    return pl.Schema(types)


def _holds(have: pl.DataType, want: pl.DataType) -> bool:
    """Whether a column of polars type `have` converts to `want` without a value changing."""
    return (
        have == want
        or have == pl.Null
        or _SIGNED_WIDTH.get(have, 99) <= _SIGNED_WIDTH.get(want, 0)  # widening
        or (isinstance(have, pl.Decimal) and isinstance(want, pl.Decimal) and have.scale == want.scale)
    )


def _binary_type(sql_type: sa.types.TypeEngine[Any]) -> pl.DataType | None:
    if isinstance(sql_type, sa.Numeric) and not isinstance(sql_type, sa.Float):
        return pl.Decimal(38, sql_type.scale) if sql_type.scale is not None else None  # each value carries its scale
    if isinstance(sql_type, sa.DateTime):
        return pl.Datetime("us", "UTC" if sql_type.timezone else None)
    return next((dtype for kind, dtype in _BINARY_TYPES if isinstance(sql_type, kind)), None)


_SIGNED_WIDTH: dict[pl.DataType, int] = {pl.Int8(): 8, pl.Int16(): 16, pl.Int32(): 32, pl.Int64(): 64}
# The first match wins: BigInteger is an Integer, Text a String.
_BINARY_TYPES: tuple[tuple[type[sa.types.TypeEngine[Any]], pl.DataType], ...] = (
    (sa.BigInteger, pl.Int64()),
    (sa.SmallInteger, pl.Int16()),
    (sa.Integer, pl.Int32()),
    (sa.Boolean, pl.Boolean()),
    (sa.Date, pl.Date()),
    (sa.String, pl.String()),
)


def _insert_frame(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    """SQLite: the frame's rows as plain tuples, one executemany per chunk.

    The values are converted by column first, in polars, to what SQLAlchemy's types would bind row by row
    (`_sqlite_values`): the rows read back the same, without SQLAlchemy's per-row, per-value processing.
    """
    names = ", ".join(f'"{c}"' for c in frame.columns)
    sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join("?" * frame.width)})'
    values = _sqlite_values(frame)
    for start in range(0, values.height, _SQLITE_CHUNK):
        conn.exec_driver_sql(sql, values.slice(start, _SQLITE_CHUNK).rows())


def _sqlite_values(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` as SQLAlchemy binds its values for SQLite: timestamps and dates in its text formats,
    money as a float (read from the exact decimal text, as Python's float() of a Decimal does)."""

    def bound(name: str, dtype: pl.DataType) -> pl.Expr:
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            return column.dt.strftime("%Y-%m-%d %H:%M:%S%.6f")  # the fields in the value's own time zone, as SQLAlchemy
        if dtype == pl.Date:
            return column.dt.strftime("%Y-%m-%d")
        if isinstance(dtype, pl.Decimal):
            return column.cast(pl.String).cast(pl.Float64)
        return column

    return frame.select(bound(name, dtype).alias(name) for name, dtype in frame.schema.items())


def _insert_rows(conn: sa.Connection, stage: sa.Table, rows: Iterable[dict[str, Any]]) -> None:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, _SQLITE_CHUNK)):
        conn.execute(stage.insert(), chunk)


def upsert_from_stage(conn: sa.Connection, target: sa.Table, stage: sa.Table, key: Sequence[str]) -> None:
    """Merge every staged row into `target` on `key` (INSERT ... SELECT ... ON CONFLICT DO UPDATE)."""
    columns = [c.name for c in stage.columns]
    source = sa.select(*(stage.c[c] for c in columns)).where(sa.true())  # WHERE: SQLite parser needs it
    statement = upsert_insert(conn, target).from_select(columns, source)
    statement = statement.on_conflict_do_update(
        index_elements=list(key), set_={c: statement.excluded[c] for c in columns if c not in key}
    )
    conn.execute(statement)


def delete_staged_keys(conn: sa.Connection, target: sa.Table, stage: sa.Table, key: str) -> int:
    result = conn.execute(sa.delete(target).where(target.c[key].in_(sa.select(stage.c[key]))))
    return result.rowcount or 0


def read_frame(conn: sa.Connection, query: sa.Select[Any], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Run a query into a polars frame with a fixed schema (COPY on PostgreSQL, a cursor on SQLite)."""
    if is_postgres(conn):
        # Bound by psycopg on the client (COPY takes no server-side parameters). SQLAlchemy doubles every
        # literal % for psycopg to undo as it merges the parameters; with none, psycopg merges nothing.
        compiled = query.compile(conn, compile_kwargs={"render_postcompile": True})
        params = dict(compiled.params)
        select = _parenthesized_placeholders(str(compiled)) if params else str(compiled).replace("%%", "%")
        # COPY prints values in the session's formats: pin the ones the parsing below expects.
        conn.execute(sa.text("SET LOCAL TimeZone = 'UTC'"))
        conn.execute(sa.text("SET LOCAL DateStyle = 'ISO'"))
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        buffer = io.BytesIO()
        statement = f"COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER false)"
        with cursor.copy(statement, params or None) as copy:
            for block in copy:
                buffer.write(block)
        if buffer.tell() == 0:
            return pl.DataFrame(schema=schema)
        buffer.seek(0)
        text_schema = {name: pl.String for name in schema}
        frame = pl.read_csv(buffer, has_header=False, new_columns=list(schema), schema=text_schema)
        return frame.with_columns(_from_text(name, dtype) for name, dtype in schema.items())
    return _read_sqlite_frame(conn, query, schema)


def _parenthesized_placeholders(statement: str) -> str:
    """Each `%(name)s` as `(%(name)s)`: merged on the client, a negative bound followed by SQLAlchemy's cast
    (`-9223372036854775808::BIGINT`) would be cast before it is negated, and overflow at the type's minimum."""
    return _PLACEHOLDER_OR_PERCENT.sub(lambda m: m[0] if m[0] == "%%" else f"({m[0]})", statement)


def _read_sqlite_frame(conn: sa.Connection, query: sa.Select[Any], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """SQLite: the values as stored, converted by column in polars to what SQLAlchemy's types would make of
    them value by value (a regular expression per timestamp). A value no warehouse writer stores there (a
    timestamp in another format, a flag as text: an outside tool's edit) fails that conversion; the query
    is then read again through SQLAlchemy's own, and a warning says so."""
    result = conn.execute(query)
    try:  # the driver's rows (with any SQLAlchemy buffered first), without its per-value result processing
        rows = result.cursor_strategy.fetchall(result, result.cursor)
    finally:
        result.close()
    try:
        return _converted(rows, schema)
    except (TypeError, pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        reason = str(exc).splitlines()[0]
        _log.warning(f"a value SQLite holds in an unexpected form ({reason}): reading the rows again value by value")
    del rows
    typed = conn.execute(query).all()
    return pl.DataFrame({name: [row[i] for row in typed] for i, name in enumerate(schema)}, schema, strict=False)


def _converted(rows: Sequence[Sequence[Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    stored = pl.DataFrame(
        [_sqlite_stored(name, dtype, values) for (name, dtype), values in zip(schema.items(), columns, strict=True)]
    )
    return stored.select(_from_sqlite(name, dtype) for name, dtype in schema.items())


def _sqlite_stored(name: str, dtype: pl.DataType, values: Sequence[Any]) -> pl.Series:
    """A column as SQLite hands it back: timestamps and dates as text, booleans as 0/1, money as a float,
    here written with the column's scale as SQLAlchemy does (the exact binary value, rounded: polars' own cast
    of a float above about 1e13 can be a cent off). Strict where a conversion follows: an unexpected value raises."""
    if isinstance(dtype, pl.Decimal):
        text = f"%.{dtype.scale}f"
        return pl.Series(name, [None if v is None else text % v for v in values], dtype=pl.String)
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return pl.Series(name, values, dtype=pl.String)
    if dtype == pl.Boolean:
        return pl.Series(name, values, dtype=pl.Int64)
    return pl.Series(name, values, dtype=dtype, strict=False)  # as SQLAlchemy's rows became a frame


def _from_sqlite(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime):  # text, with six fraction digits as SQLAlchemy binds it, none if SQL wrote it
        parsed = column.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us")
        return (parsed.dt.replace_time_zone(dtype.time_zone) if dtype.time_zone else parsed).alias(name)
    if dtype == pl.Date:
        return column.str.to_date("%Y-%m-%d").alias(name)
    return column.cast(dtype).alias(name)  # booleans: from 0/1, as bool() of each


def _from_text(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if dtype == pl.Boolean:
        return (column == "t").alias(name)
    if isinstance(dtype, pl.Datetime):
        return column.str.to_datetime("%Y-%m-%d %H:%M:%S%.f%#z", time_zone="UTC", time_unit="us").alias(name)
    if dtype == pl.Date:
        return column.str.to_date("%Y-%m-%d").alias(name)
    return column.cast(dtype).alias(name)


def suspend_for_bulk_load(conn: sa.Connection, table: sa.Table, *, unique_when_empty: bool = False) -> list[str]:
    """Drop a table's foreign keys and plain (non-unique) indexes before a big load.

    Checking a foreign key row by row (a trigger per row) and growing an index entry by entry cost far
    more than one validating join and one sorted index build afterwards. Unique indexes (which enforce
    keys) stay; with `unique_when_empty`, those backing no constraint are dropped too when the table holds
    no row (its rebuild then checks every key at once: a duplicate fails the transaction as an insert would
    have). Returns the
    statements that restore what was dropped: run them with `restore_after_bulk_load` in the same
    transaction (DDL is transactional, so a failure anywhere restores everything). Holds exclusive locks on the
    table and the tables it references until the transaction ends (readers wait): call it before the
    transaction reads any of them. On SQLite only indexes are dropped (see `_suspend_sqlite_indexes`).
    """
    if not is_postgres(conn):
        return _suspend_sqlite_indexes(conn, table, unique_when_empty)
    name = conn.dialect.identifier_preparer.quote(table.name)
    foreign_keys = conn.execute(
        sa.text(
            "SELECT conname, pg_get_constraintdef(oid), confrelid::regclass::text FROM pg_constraint "
            "WHERE conrelid = to_regclass(:table) AND contype = 'f' ORDER BY conname"
        ),
        {"table": name},
    ).all()
    # Dropping a foreign key locks the referenced table too. Take the locks up front, referenced tables
    # first: the order in which a delete cascading from them into this table takes them (no deadlock).
    referenced = sorted({str(target) for _, _, target in foreign_keys} - {name})
    conn.exec_driver_sql(f"LOCK TABLE {', '.join([*referenced, name])} IN ACCESS EXCLUSIVE MODE")
    unique = unique_when_empty and is_empty(conn, table)
    indexes = conn.execute(
        sa.text(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = to_regclass(:table) AND (:unique OR NOT x.indisunique) AND NOT x.indisprimary "
            "  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) ORDER BY i.relname"
        ),
        {"table": name, "unique": unique},
    ).all()
    restore: list[str] = []
    quote = conn.dialect.identifier_preparer.quote
    for index, definition in indexes:
        conn.exec_driver_sql(f"DROP INDEX {quote(index)}")
        restore.append(definition)
    for constraint, definition, _ in foreign_keys:
        conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {quote(constraint)}")
        restore.append(f"ALTER TABLE {name} ADD CONSTRAINT {quote(constraint)} {definition} NOT VALID")
        restore.append(f"ALTER TABLE {name} VALIDATE CONSTRAINT {quote(constraint)}")
    return restore


def drop_keys_while_empty(conn: sa.Connection, table: sa.Table) -> list[str]:
    """Drop an empty table's primary and unique keys before one big insert (PostgreSQL), unless a foreign key
    references the table; returns the statements that add them back, in the same transaction.

    Growing two B-trees entry by entry costs more than building each once after, in one sort that checks
    every key at once (a duplicate fails the transaction, as the insert would have). Call it only on a table
    `suspend_for_bulk_load` holds locked: the keys are missing until they are added back.
    """
    if not is_postgres(conn) or not is_empty(conn, table):
        return []
    name = conn.dialect.identifier_preparer.quote(table.name)
    referenced = conn.execute(
        sa.text("SELECT 1 FROM pg_constraint WHERE confrelid = to_regclass(:table) AND contype = 'f' LIMIT 1"),
        {"table": name},
    ).first()
    if referenced:
        return []
    keys = conn.execute(
        sa.text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass(:table) AND contype IN ('p', 'u') ORDER BY contype, conname"
        ),
        {"table": name},
    ).all()
    quote = conn.dialect.identifier_preparer.quote
    restore: list[str] = []
    for constraint, definition in keys:
        conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {quote(constraint)}")
        restore.append(f"ALTER TABLE {name} ADD CONSTRAINT {quote(constraint)} {definition}")
    return restore


def _suspend_sqlite_indexes(conn: sa.Connection, table: sa.Table, unique_when_empty: bool) -> list[str]:
    """SQLite's part of `suspend_for_bulk_load`: its indexes, not its foreign keys (dropping one rebuilds the
    table). Each index entry of a big load lands at a random place of a B-tree far larger than the page cache;
    a build sorts them once."""
    if not conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        # The driver begins a transaction only at the first write: a DROP INDEX before it would commit at
        # once, and a failed load could not bring the index back.
        raise RuntimeError(f"{table.name}: suspend_for_bulk_load on SQLite needs a transaction that has written")
    quote = conn.dialect.identifier_preparer.quote
    unique = unique_when_empty and is_empty(conn, table)
    restore: list[str] = []
    for _, index, is_unique, origin, _ in conn.exec_driver_sql(f"PRAGMA index_list({quote(table.name)})").all():
        if origin != "c" or (is_unique and not unique):  # "c": made by CREATE INDEX, not by a key of the table
            continue
        definition = conn.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :index"), {"index": index}
        ).scalar_one()
        conn.exec_driver_sql(f"DROP INDEX {quote(index)}")
        restore.append(definition)
    return sorted(restore)


def restore_after_bulk_load(conn: sa.Connection, statements: Sequence[str]) -> None:
    """Rebuild what `suspend_for_bulk_load` dropped; a row breaking a foreign key fails the transaction."""
    for statement in statements:
        conn.exec_driver_sql(statement)
