"""The reconciliation queries behind the asset checks find exactly the stale rows."""

from datetime import date

from sqlalchemy.engine import Engine

from crm_assets.reports.aggregate import replace_aggregations
from crm_assets.reports.reconcile import mismatches_with_days, mismatches_with_deals
from crm_assets.reports.windows import Cadence
from crm_assets_tests.reports.helpers import add_accounts, add_deals, deal_row, delete_deal, update_deal

D, W, M = Cadence.DAILY, Cadence.WEEKLY, Cadence.MONTHLY


def _setup(engine: Engine) -> None:
    add_accounts(engine, [1, 2])
    add_deals(
        engine,
        [
            deal_row(1, 1, "2024-03-10T23:59:59+00:00", "10.10"),
            deal_row(2, 1, "2024-03-11T00:00:00+00:00", "20.20"),
            deal_row(3, 2, "2024-03-31T23:00:00+00:00", None),
            deal_row(4, 2, "2024-04-01T00:00:00+00:00", "0.30"),
        ],
    )
    for cadence in Cadence:
        replace_aggregations(engine, cadence, date(2024, 3, 1), date(2024, 4, 29))


def test_fresh_aggregations_reconcile(warehouse_engine: Engine) -> None:
    _setup(warehouse_engine)
    with warehouse_engine.connect() as conn:
        assert [mismatches_with_deals(conn, c) for c in Cadence] == [[], [], []]
        assert mismatches_with_days(conn, W) == []
        assert mismatches_with_days(conn, M) == []


def test_stale_rows_are_reported(warehouse_engine: Engine) -> None:
    _setup(warehouse_engine)
    delete_deal(warehouse_engine, 1)
    update_deal(warehouse_engine, 4, deal_size="0.40")
    with warehouse_engine.connect() as conn:
        daily = mismatches_with_deals(conn, D)
        monthly = mismatches_with_deals(conn, M)
    assert [(m.window.isoformat(), m.account_id, m.expected_count, m.stored_count) for m in daily] == [
        ("2024-03-10", 1, 0, 1),
        ("2024-04-01", 2, 1, 1),
    ]
    assert str(daily[1].expected_total) == "0.40" and str(daily[1].stored_total) == "0.30"
    assert [(m.window.isoformat(), m.account_id) for m in monthly] == [("2024-03-01", 1), ("2024-04-01", 2)]

    replace_aggregations(warehouse_engine, D, date(2024, 3, 10), date(2024, 3, 11))
    with warehouse_engine.connect() as conn:  # days refreshed, weeks not yet: the week no longer adds up
        assert [(m.window.isoformat(), m.account_id) for m in mismatches_with_days(conn, W)] == [("2024-03-04", 1)]
