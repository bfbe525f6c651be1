"""Fixtures of the warehouse tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from crm_assets.warehouse.engine import create_warehouse_engine, migrate


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """A migrated warehouse on a throwaway PostgreSQL database."""
    engine = create_warehouse_engine(pg_url)
    migrate(engine)
    yield engine
    engine.dispose()
