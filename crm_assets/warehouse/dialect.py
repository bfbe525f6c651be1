"""The one test for the dialect-specific paths of the warehouse: PostgreSQL, else SQLite."""

from __future__ import annotations

import sqlalchemy as sa


def is_postgres(bind: sa.Connection | sa.Engine | sa.Dialect) -> bool:
    """Whether `bind` (a connection, an engine or their dialect) is PostgreSQL; the only other is SQLite."""
    dialect = bind if isinstance(bind, sa.Dialect) else bind.dialect
    return dialect.name == "postgresql"
