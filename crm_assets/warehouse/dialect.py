"""The tests for the dialect-specific paths of the warehouse: PostgreSQL, else SQLite (a file, or private memory)."""

from __future__ import annotations

import sqlalchemy as sa


def is_postgres(bind: sa.Connection | sa.Engine | sa.Dialect) -> bool:
    """Whether `bind` (a connection, an engine or their dialect) is PostgreSQL; the only other is SQLite."""
    dialect = bind if isinstance(bind, sa.Dialect) else bind.dialect
    return dialect.name == "postgresql"


def is_private_memory(engine: sa.Engine) -> bool:
    """Whether `engine` is an in-memory SQLite database: each connection has its own, no other sees it."""
    database = engine.url.database
    return not is_postgres(engine) and (not database or database == ":memory:")
