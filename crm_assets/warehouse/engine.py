"""Connecting to the warehouse and bringing its schema up to date."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Engine, make_url

from crm_assets import settings
from crm_assets.settings import SettingsError
from crm_assets.warehouse.dialect import is_postgres
from crm_assets.warehouse.locks import sqlite_file_lock

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same in every process that migrates this database.
_MIGRATION_LOCK_KEY = 7_305_118_402
# How long an SQLite statement waits for another process's write lock before failing with "database is
# locked". Generous: SQLite serializes writers, and a parallel step may hold the lock for a whole extract.
SQLITE_BUSY_TIMEOUT_SECONDS = 900
# Each SQLite connection's page cache, in KiB (SQLite's default is 2 MiB): a clean run's statements walk
# indexes of 1M-row tables, and a cache that small rereads their pages from the OS again and again.
SQLITE_CACHE_KIB = 32 * 1024
# The `->` JSON operator (numbers read as their JSON text, see raw.json_field_as_text).
MIN_SQLITE_VERSION = (3, 38, 0)


class WarehouseConnectionError(RuntimeError):
    """The warehouse database cannot be reached; the message says which one (without its password)."""


def default_database_url() -> str:
    """DATABASE_URL, or an SQLite file under $DAGSTER_HOME (or the default ./.crm_assets/dagster_home/)."""
    if url := settings.database_url():
        return url
    return f"sqlite:///{(settings.dagster_home() / 'warehouse.db').resolve()}"


class WarehouseConfigError(SettingsError):
    """The warehouse URL is malformed or names a database crm-assets does not support; retrying cannot help."""


# Spellings of the two supported databases; a bare postgresql:// means psycopg 3 (see normalize_url).
_SUPPORTED_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+psycopg", "sqlite", "sqlite+pysqlite"})
_SUPPORTED = (
    "crm-assets supports PostgreSQL (postgresql+psycopg://user@host:5432/db) and SQLite (sqlite:////path/to/file.db)"
)


def validate_database_url(url: str, variable: str = settings.DATABASE_URL) -> URL:
    """The parsed URL, or a WarehouseConfigError naming `variable`, what is wrong and what is supported.

    The message never quotes the URL itself, which may hold a password.
    """
    try:
        parsed = make_url(url.strip())
    except sa.exc.ArgumentError:
        raise WarehouseConfigError(
            f"{variable} is not a database URL (expected dialect://user@host:port/database). {_SUPPORTED}."
        ) from None
    except ValueError as exc:  # make_url reads the port with int()
        detail = "its port is not a number" if "int()" in str(exc) else str(exc)
        raise WarehouseConfigError(f"{variable} is malformed: {detail}. {_SUPPORTED}.") from None
    if parsed.drivername not in _SUPPORTED_DRIVERS:
        raise WarehouseConfigError(
            f"{variable} uses {parsed.drivername}://, which crm-assets does not support. {_SUPPORTED}."
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise WarehouseConfigError(f"{variable} has port {parsed.port}, outside 1-65535. {_SUPPORTED}.")
    return parsed


def normalize_url(url: str | URL) -> URL:
    """Spell the PostgreSQL driver: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, 2.0 to psycopg2."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL for messages and metadata: never with its password, neither in the user part nor as a
    connection parameter (libpq also reads `?password=` and `?sslpassword=`), nor inside a libpq connection
    string given as the database name or as a parameter's value (`dbname=crm password=...`)."""
    parsed = make_url(url)
    query = {k: _HIDDEN if "password" in k.lower() else _query_value(v) for k, v in parsed.query.items()}
    database = without_password(parsed.database) if parsed.database else parsed.database
    shown = parsed.set(database=database).update_query_dict(query).render_as_string(hide_password=True)
    return shown.replace(quote(_HIDDEN, safe=""), _HIDDEN)  # as the user part shows it, not %2A%2A%2A


_HIDDEN = "***"
# `password = value` in a libpq connection string; the value may be single-quoted, with backslash escapes.
_CONNINFO_PASSWORD = re.compile(r"(\w*password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.IGNORECASE)


def without_password(value: str) -> str:
    """`value` with any libpq connection string's password in it starred (a server repeats such a name)."""
    return _CONNINFO_PASSWORD.sub(rf"\g<1>{_HIDDEN}", value)


def error_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none), any connection string's password starred."""
    return without_password((str(error).strip().splitlines() or [type(error).__name__])[0])


def _query_value(value: str | tuple[str, ...]) -> str | tuple[str, ...]:
    """A URL parameter's value (several, when the parameter repeats) without a connection string's password."""
    return tuple(map(without_password, value)) if isinstance(value, tuple) else without_password(value)


def create_warehouse_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    parsed = normalize_url(url or default_database_url())
    if parsed.get_backend_name() == "sqlite":
        require_sqlite_json_arrow()
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "isolation_level": "IMMEDIATE"}
        engine = sa.create_engine(parsed, **{"connect_args": connect_args, **kwargs})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(parsed, **{"pool_pre_ping": True, **kwargs})


def require_sqlite_json_arrow() -> None:
    """The warehouse reads JSON numbers as their text with `->`, which SQLite has from 3.38 (2022) on."""
    version = sqlite3.sqlite_version_info
    if version < MIN_SQLITE_VERSION:
        have, need = ".".join(map(str, version)), ".".join(map(str, MIN_SQLITE_VERSION))
        raise WarehouseConnectionError(
            f"this Python's SQLite is {have}; the embedded warehouse needs {need} or newer. "
            "Use a Python build with a newer SQLite, or PostgreSQL (DATABASE_URL)."
        )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Wait for other writers instead of failing, in every process and on every connection.

    The driver begins each transaction with BEGIN IMMEDIATE (isolation_level above): the write lock is
    taken, or waited for, at the start. A deferred transaction that has read and then writes cannot wait
    for a lock upgrade: SQLite fails it at once with "database is locked" while another process writes.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")  # negative: in KiB, not pages
    cursor.close()


def check_connection(engine: Engine) -> None:
    """Fail with a plain message when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        # The server repeats the database name it did not find, a libpq connection string's password included.
        reason = error_line(exc.orig) if exc.orig else type(exc).__name__
        raise WarehouseConnectionError(
            f"cannot connect to the warehouse database {safe_url(engine.url)}: {reason}. "
            "Check DATABASE_URL and that the server is running."
        ) from None


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[sa.Connection]:
    """One migrator at a time: parallel steps creating tables on a fresh database race."""
    if not is_postgres(engine):
        # SQLite cannot hold its own lock over Alembic's several transactions; without a lock, parallel
        # steps each find an empty database and all create the tables (`table accounts already exists`).
        with sqlite_file_lock(engine, ".migrate.lock"), engine.connect() as conn:
            yield conn
        return
    with engine.connect() as conn:
        if is_postgres(engine):
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            conn.commit()
        try:
            yield conn
        finally:
            if is_postgres(engine):
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                conn.commit()


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; cheap when it already is."""
    check_connection(engine)
    with _migration_lock(engine) as conn:
        command.upgrade(alembic_config(conn), "head")
        conn.commit()
