"""Migration 0007 widens the money totals of an existing warehouse, keeping its rows (issue: numeric overflow)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from crm_assets.reports.aggregate import read_aggregations, replace_aggregations
from crm_assets.reports.windows import Cadence
from crm_assets.warehouse.engine import alembic_config, create_warehouse_engine, migrate
from crm_assets.warehouse.schema import deal_aggregations, metadata, pipeline_daily
from crm_assets_tests.reports.helpers import add_accounts, add_deals, deal_row

WIDENED = {("deal_aggregations", "total_deal_size"), ("pipeline_daily", "open_deal_value")}


def _numeric(sql_type: sa.types.TypeEngine[Any]) -> sa.Numeric[Any]:
    assert isinstance(sql_type, sa.Numeric), sql_type
    return sql_type


def _types(engine: sa.Engine) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    inspector = sa.inspect(engine)
    return {
        (table, column["name"]): (_numeric(column["type"]).precision, _numeric(column["type"]).scale)
        for table, name in WIDENED
        for column in inspector.get_columns(table)
        if column["name"] == name
    }


def test_upgrading_widens_the_totals_and_keeps_the_stored_rows(warehouse_url: str) -> None:
    engine = create_warehouse_engine(warehouse_url)
    with engine.connect() as conn:
        command.upgrade(alembic_config(conn), "0006")
        conn.commit()
    assert set(_types(engine).values()) == {(18, 2)}
    add_accounts(engine, [1])
    with engine.begin() as conn:
        conn.execute(
            deal_aggregations.insert(),
            [
                {
                    "account_id": 1,
                    "aggregation_type": "daily",
                    "aggregation_date": date(2024, 5, 1),
                    "total_deal_size": Decimal("12.34"),
                    "deal_count": 1,
                }
            ],
        )
        conn.execute(
            pipeline_daily.insert(),
            [{"day": date(2024, 5, 1), "deal_stage": "Prospecting", "open_deal_count": 1, "open_deal_value": 5}],
        )
    migrate(engine)
    assert set(_types(engine).values()) == {(38, 2)}
    with engine.connect() as conn:
        assert [(r.aggregation_date, r.total_deal_size) for r in read_aggregations(conn, Cadence.DAILY)] == [
            (date(2024, 5, 1), Decimal("12.34"))
        ]
        assert conn.execute(sa.select(pipeline_daily.c.open_deal_value)).scalars().all() == [Decimal("5.00")]
    with engine.connect() as conn:  # and back: the downgrade narrows them again, rows kept
        command.downgrade(alembic_config(conn), "0006")
        conn.commit()
    assert set(_types(engine).values()) == {(18, 2)}
    with engine.connect() as conn:
        assert [r.total_deal_size for r in read_aggregations(conn, Cadence.DAILY)] == [Decimal("12.34")]
    migrate(engine)
    # The upgraded table takes what overflowed it before.
    add_deals(engine, [deal_row(i, 1, "2024-05-02T10:00:00+00:00", "9999999999999999.99") for i in (1, 2)])
    replace_aggregations(engine, Cadence.MONTHLY, date(2024, 5, 1), date(2024, 6, 1))
    with engine.connect() as conn:
        assert [r.deal_count for r in read_aggregations(conn, Cadence.MONTHLY)] == [2]
    # Nothing else of the tables was lost on the way (SQLite rebuilds a table to change a column's type).
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diffs if _about(d, {"deal_aggregations", "pipeline_daily"})] == []
    engine.dispose()


def _about(diff: Any, tables: set[str]) -> bool:
    items = diff if isinstance(diff, list) else [diff]
    return any(
        getattr(getattr(part, "table", None), "name", None) in tables
        or getattr(part, "name", None) in tables
        or (isinstance(part, str) and part in tables)
        for item in items
        for part in item
    )
