"""A warehouse that already holds deals starts its history with them when it is upgraded."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from crm_assets.warehouse.engine import alembic_config, create_warehouse_engine, migrate
from crm_assets.warehouse.history import current_version_mismatches
from crm_assets.warehouse.schema import CLEAN_TABLES
from crm_assets_tests.history.helpers import instant, versions


def test_upgrading_seeds_one_open_version_per_deal(warehouse_url: str) -> None:
    engine = create_warehouse_engine(warehouse_url)
    with engine.connect() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.commit()
    deal = {"deal_name": "D", "deal_size": 10, "probability_of_closure": "50%", "deal_stage": "Negotiation"}
    with engine.begin() as conn:
        conn.execute(
            sa.insert(CLEAN_TABLES["accounts"]),
            [
                {
                    "account_id": 1,
                    "account_name": "A",
                    "industry": "Tech",
                    "account_value": 1,
                    "region": "Asia",
                    "crm_id": 1,
                    "updated_at": instant(1),
                }
            ],
        )
        conn.execute(
            sa.insert(CLEAN_TABLES["deals"]),
            [
                deal
                | {"deal_id": k, "account_id": 1, "created_at": instant(1), "crm_id": 100 + k, "updated_at": instant(k)}
                for k in (1, 2)
            ],
        )
    upgraded_at = datetime.now(UTC)
    migrate(engine)
    rows = versions(engine)
    assert [(r["deal_id"], r["crm_id"], r["valid_from"], r["valid_to"], r["is_deleted"]) for r in rows] == [
        (1, 101, instant(1), None, False),
        (2, 102, instant(2), None, False),
    ]
    assert all(r["first_observed_at"] >= upgraded_at.replace(microsecond=0) for r in rows)
    with engine.connect() as conn:
        assert current_version_mismatches(conn) == (0, [])
    engine.dispose()
