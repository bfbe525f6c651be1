"""SQLite and PostgreSQL produce the same aggregation rows, row by row."""

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from crm_assets.reports.aggregate import replace_aggregations
from crm_assets.reports.windows import Cadence
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets_tests.conftest import create_pg_database, drop_pg_database
from crm_assets_tests.reports.helpers import add_accounts, add_deals, deal_row, rows


def _dataset() -> list[dict[str, object]]:
    """Deals spread over 2023-2024, many right at window edges, with odd sizes and NULLs."""
    rng = random.Random(20261124)
    origin = datetime(2023, 1, 1, tzinfo=UTC)
    deals = []
    for deal_id in range(1, 1501):
        moment = origin + timedelta(days=rng.randrange(730))
        if rng.random() < 0.3:  # the last or first second of a UTC day
            moment += timedelta(seconds=rng.choice([-1, 0, 86399]))
        else:
            moment += timedelta(seconds=rng.randrange(86400), microseconds=rng.randrange(10**6))
        size = None if rng.random() < 0.1 else f"{rng.randrange(10**7)}.{rng.randrange(100):02d}"
        deals.append(deal_row(deal_id, rng.randrange(1, 21), moment, size))
    return deals


def _fill(engine: Engine) -> dict[Cadence, list[tuple[str, int, str, int]]]:
    migrate(engine)
    add_accounts(engine, range(1, 21))
    add_deals(engine, _dataset())
    for cadence in Cadence:
        replace_aggregations(engine, cadence, date(2022, 12, 26), date(2025, 1, 6))
    return {cadence: rows(engine, cadence) for cadence in Cadence}


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    url = create_pg_database()
    engine = create_warehouse_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        drop_pg_database(url)


@pytest.mark.postgres
def test_sqlite_and_postgres_agree_row_by_row(tmp_path: Path, pg_engine: Engine) -> None:
    on_sqlite = _fill(create_warehouse_engine(f"sqlite:///{tmp_path / 'warehouse.db'}"))
    on_postgres = _fill(pg_engine)
    for cadence in Cadence:
        assert on_sqlite[cadence] == on_postgres[cadence], cadence
    assert sum(r[3] for r in on_postgres[Cadence.DAILY]) == 1500
    assert len(on_postgres[Cadence.MONTHLY]) > 400
