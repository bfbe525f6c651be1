"""The set-based replacement of aggregation windows, on SQLite and PostgreSQL alike."""

import threading
import time
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.reports import aggregate, reconcile
from crm_assets.reports.aggregate import replace_aggregations
from crm_assets.reports.windows import Cadence
from crm_assets.warehouse.bulk import suspend_for_bulk_load as suspend
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.schema import CLEAN_TABLES
from crm_assets_tests.reports.helpers import add_accounts, add_deals, deal_row, delete_deal, rows, update_deal

D, W, M = Cadence.DAILY, Cadence.WEEKLY, Cadence.MONTHLY
ACCOUNTS = CLEAN_TABLES["accounts"]


@pytest.fixture
def engine(warehouse_engine: Engine) -> Engine:
    add_accounts(warehouse_engine, [1, 2, 3])
    return warehouse_engine


def test_day_boundaries_in_utc(engine: Engine) -> None:
    add_deals(
        engine,
        [
            deal_row(1, 1, "2024-03-10T23:59:59+00:00", "10.00"),
            deal_row(2, 1, "2024-03-11T00:00:00+00:00", "20.00"),
            # -06:00 evening times belong to the next UTC day
            deal_row(3, 2, "2024-03-10T17:59:59-06:00", "1.00"),  # 23:59:59 UTC, the 10th
            deal_row(4, 2, "2024-03-10T18:00:00-06:00", "2.00"),  # 00:00:00 UTC, the 11th
            deal_row(5, 2, "2024-03-11T20:30:00-06:00", "4.00"),  # 02:30 UTC, the 12th
        ],
    )
    stats = replace_aggregations(engine, D, date(2024, 3, 10), date(2024, 3, 13))
    assert rows(engine, D) == [
        ("2024-03-10", 1, "10.00", 1),
        ("2024-03-10", 2, "1.00", 1),
        ("2024-03-11", 1, "20.00", 1),
        ("2024-03-11", 2, "2.00", 1),
        ("2024-03-12", 2, "4.00", 1),
    ]
    assert (stats.rows_written, stats.deal_count, str(stats.total_deal_size)) == (5, 5, "37.00")
    assert stats.windows_with_deals == 3


def test_sunday_to_monday_and_month_ends(engine: Engine) -> None:
    add_deals(
        engine,
        [
            deal_row(1, 1, "2024-03-10T23:59:59+00:00", "1.00"),  # Sunday: week of Monday 4 March
            deal_row(2, 1, "2024-03-11T00:00:00+00:00", "2.00"),  # Monday: a new week
            deal_row(3, 1, "2024-02-29T23:59:59+00:00", "4.00"),  # leap day, last of February
            deal_row(4, 1, "2024-03-01T00:00:00+00:00", "8.00"),
            deal_row(5, 2, "2023-12-31T23:59:59.999999+00:00", "16.00"),  # 2023's last instant
            deal_row(6, 2, "2024-01-01T00:00:00+00:00", "32.00"),  # same ISO week (Mon 2024-01-01)
        ],
    )
    replace_aggregations(engine, W, date(2023, 12, 25), date(2024, 3, 18))
    replace_aggregations(engine, M, date(2023, 12, 1), date(2024, 4, 1))
    replace_aggregations(engine, D, date(2024, 2, 29), date(2024, 3, 1))
    assert rows(engine, W) == [
        ("2023-12-25", 2, "16.00", 1),
        ("2024-01-01", 2, "32.00", 1),
        ("2024-02-26", 1, "12.00", 2),
        ("2024-03-04", 1, "1.00", 1),
        ("2024-03-11", 1, "2.00", 1),
    ]
    assert rows(engine, M) == [
        ("2023-12-01", 2, "16.00", 1),
        ("2024-01-01", 2, "32.00", 1),
        ("2024-02-01", 1, "4.00", 1),
        ("2024-03-01", 1, "11.00", 3),
    ]
    assert rows(engine, D) == [("2024-02-29", 1, "4.00", 1)]


def test_null_sizes_count_but_add_nothing_and_cents_stay_exact(engine: Engine) -> None:
    add_deals(
        engine,
        [deal_row(1, 1, "2024-05-02T10:00:00+00:00", None), deal_row(2, 1, "2024-05-02T11:00:00+00:00", None)]
        + [deal_row(10 + i, 2, "2024-05-02T12:00:00+00:00", "0.10") for i in range(30)]
        + [
            deal_row(100, 3, "2024-05-02T12:00:00+00:00", "123456789012.34"),
            deal_row(101, 3, "2024-05-02T13:00:00+00:00", "0.01"),
        ],
    )
    replace_aggregations(engine, D, date(2024, 5, 2), date(2024, 5, 3))
    assert rows(engine, D) == [
        ("2024-05-02", 1, "0.00", 2),
        ("2024-05-02", 2, "3.00", 30),
        ("2024-05-02", 3, "123456789012.35", 2),  # SQLite: exact to ~15 digits
    ]


def test_replacing_twice_changes_nothing_and_leaves_other_windows_alone(engine: Engine) -> None:
    add_deals(engine, [deal_row(i, 1 + i % 3, f"2024-06-{1 + i % 20:02d}T08:00:00+00:00", "5.25") for i in range(60)])
    replace_aggregations(engine, D, date(2024, 6, 1), date(2024, 6, 21))
    replace_aggregations(engine, M, date(2024, 6, 1), date(2024, 7, 1))
    before_daily, before_monthly = rows(engine, D), rows(engine, M)

    stats = replace_aggregations(engine, D, date(2024, 6, 5), date(2024, 6, 8))
    assert (stats.rows_deleted, stats.rows_inserted, stats.rows_written) == (0, 0, 9)  # 3 days x 3 accounts
    assert rows(engine, D) == before_daily
    assert rows(engine, M) == before_monthly


def test_a_refresh_rewrites_only_the_rows_that_differ(engine: Engine) -> None:
    add_deals(engine, [deal_row(i, 1 + i % 3, f"2024-06-{1 + i % 20:02d}T08:00:00+00:00", "5.25") for i in range(60)])
    replace_aggregations(engine, M, date(2024, 6, 1), date(2024, 7, 1))
    update_deal(engine, 4, deal_size="100.00")  # account 2, June
    add_deals(engine, [deal_row(100, 3, "2024-06-30T23:00:00+00:00", "1.00")])  # account 3, June
    delete_deal(engine, 0)  # account 1, June

    stats = replace_aggregations(engine, M, date(2024, 6, 1), date(2024, 7, 1))
    assert (stats.rows_deleted, stats.rows_inserted, stats.rows_written, stats.deal_count) == (3, 3, 3, 60)
    assert rows(engine, M) == [
        ("2024-06-01", 1, f"{19 * 5.25:.2f}", 19),
        ("2024-06-01", 2, f"{19 * 5.25 + 100:.2f}", 20),
        ("2024-06-01", 3, f"{20 * 5.25 + 1:.2f}", 21),
    ]
    ids_after = _row_ids(engine)

    update_deal(engine, 4, deal_size="5.25")  # only account 2's row differs now
    stats = replace_aggregations(engine, M, date(2024, 6, 1), date(2024, 7, 1))
    assert (stats.rows_deleted, stats.rows_inserted) == (1, 1)
    assert len(_row_ids(engine) & ids_after) == 2  # the other two untouched
    assert rows(engine, M)[1] == ("2024-06-01", 2, f"{20 * 5.25:.2f}", 20)


def _row_ids(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(aggregate.deal_aggregations.c.id)).scalars())


def test_deleted_deal_leaves_its_aggregates(engine: Engine) -> None:
    add_deals(
        engine,
        [
            deal_row(1, 1, "2024-07-01T09:00:00+00:00", "100.00"),
            deal_row(2, 1, "2024-07-01T10:00:00+00:00", "50.00"),
            deal_row(3, 2, "2024-07-01T11:00:00+00:00", "7.00"),
        ],
    )
    replace_aggregations(engine, D, date(2024, 7, 1), date(2024, 7, 2))
    delete_deal(engine, 1)
    delete_deal(engine, 3)
    replace_aggregations(engine, D, date(2024, 7, 1), date(2024, 7, 2))
    assert rows(engine, D) == [("2024-07-01", 1, "50.00", 1)]  # account 2 has no deal left: no row


def test_moved_deal_updates_both_periods(engine: Engine) -> None:
    add_deals(
        engine,
        [
            deal_row(1, 1, "2024-07-31T22:00:00+00:00", "100.00"),
            deal_row(2, 1, "2024-07-31T23:00:00+00:00", "1.00"),
            deal_row(3, 2, "2024-08-15T12:00:00+00:00", "3.00"),
        ],
    )
    replace_aggregations(engine, M, date(2024, 7, 1), date(2024, 9, 1))
    update_deal(engine, 1, account_id=3)  # to another account, same month
    update_deal(engine, 2, created_at="2024-08-01T00:30:00+00:00")  # to another month
    for month_start, month_end in [(date(2024, 7, 1), date(2024, 8, 1)), (date(2024, 8, 1), date(2024, 9, 1))]:
        replace_aggregations(engine, M, month_start, month_end)  # what the sensor requests: both periods
    assert rows(engine, M) == [
        ("2024-07-01", 3, "100.00", 1),
        ("2024-08-01", 1, "1.00", 1),
        ("2024-08-01", 2, "3.00", 1),
    ]


def test_range_equals_each_partition_alone(engine: Engine) -> None:
    add_deals(
        engine,
        [
            deal_row(
                i,
                1 + i % 3,
                f"2024-{1 + i % 12:02d}-{1 + (i * 7) % 28:02d}T{i % 24:02d}:15:00-05:00",
                f"{i}.{i % 100:02d}",
            )
            for i in range(1, 400)
        ],
    )
    first, end = date(2024, 1, 1), date(2025, 1, 1)
    replace_aggregations(engine, D, first, end)
    ranged = rows(engine, D)
    day = first
    while day < end:
        replace_aggregations(engine, D, day, day + timedelta(days=1))
        day += timedelta(days=1)
    assert rows(engine, D) == ranged
    assert sum(r[3] for r in ranged) == 399


def test_empty_window_is_rejected(engine: Engine) -> None:
    with pytest.raises(ValueError, match="empty window"):
        replace_aggregations(engine, D, date(2024, 1, 2), date(2024, 1, 2))


@pytest.mark.parametrize("bulk", [False, True], ids=["row-checked", "bulk-insert"])
def test_a_large_range_writes_the_same_rows_without_row_checks(
    engine: Engine, bulk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the threshold (PostgreSQL) the foreign key and plain index are rebuilt after the insert."""
    monkeypatch.setattr(aggregate, "BULK_INSERT_MIN_DAYS", 1 if bulk else 10**9)
    suspended: list[list[str]] = []

    def spy(conn: sa.Connection, table: sa.Table) -> list[str]:
        suspended.append(suspend(conn, table))
        return suspended[-1]

    monkeypatch.setattr(aggregate, "suspend_for_bulk_load", spy)
    add_deals(
        engine, [deal_row(i, i % 3 + 1, f"2024-03-{i % 28 + 1:02d}T10:00:00+00:00", "1.50") for i in range(1, 60)]
    )
    stats = replace_aggregations(engine, D, date(2024, 3, 1), date(2024, 4, 1))
    assert (stats.deal_count, str(stats.total_deal_size)) == (59, "88.50")
    assert len(rows(engine, D)) == stats.rows_written
    assert rows(engine, D)[:2] == [("2024-03-01", 2, "1.50", 1), ("2024-03-01", 3, "1.50", 1)]
    with engine.connect() as conn:
        validated = (
            conn.exec_driver_sql(
                "SELECT convalidated FROM pg_constraint WHERE conname = 'fk_deal_aggregations_account_id_accounts'"
            ).all()
            if engine.dialect.name == "postgresql"
            else [(True,)]
        )
    assert validated == [(True,)]
    expect_suspended = bulk and engine.dialect.name == "postgresql"
    assert bool(suspended) == expect_suspended
    if expect_suspended:
        assert any("VALIDATE CONSTRAINT" in s for s in suspended[0])


@pytest.mark.postgres
def test_an_account_deleted_during_a_refresh_waits_for_it(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync deleting an account while a refresh runs (runs overlap in production) neither fails the
    refresh's insert on the foreign key nor deadlocks: the delete waits, then cascades."""
    engine = create_warehouse_engine(pg_url)
    migrate(engine)
    add_accounts(engine, [1, 2])
    add_deals(engine, [deal_row(i, 1 + i % 2, f"2024-06-{1 + i % 20:02d}T08:00:00+00:00", "5.25") for i in range(40)])
    replace_aggregations(engine, M, date(2024, 1, 1), date(2025, 1, 1))
    update_deal(engine, 1, deal_size="99.00")  # account 2's June row now differs
    deleting = threading.Thread(target=_delete_account, args=(engine, 1))
    analyze = aggregate.analyze_stage

    def delete_meanwhile(conn: sa.Connection, stage: sa.Table) -> None:
        deleting.start()  # between reading deals and writing the rows
        time.sleep(0.5)
        analyze(conn, stage)

    monkeypatch.setattr(aggregate, "analyze_stage", delete_meanwhile)
    stats = replace_aggregations(engine, M, date(2024, 1, 1), date(2025, 1, 1))
    deleting.join(timeout=30)
    assert (stats.rows_deleted, stats.rows_inserted) == (1, 1)
    assert rows(engine, M) == [("2024-06-01", 2, f"{19 * 5.25 + 99:.2f}", 20)]  # account 1 cascaded away after
    engine.dispose()


def _delete_account(engine: Engine, account_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(ACCOUNTS).where(ACCOUNTS.c.account_id == account_id))


MAX_DEAL_SIZE = "9999999999999999.99"  # the largest deals.deal_size holds: NUMERIC(18, 2)


def _held(engine: Engine, size: str, times: int) -> str:
    """`times` deals of `size`, as the database can hold them: exactly on PostgreSQL; on SQLite, which keeps
    NUMERIC as binary floats (about 16 digits), as the nearest float of each, added up."""
    if engine.dialect.name == "postgresql":
        return str(Decimal(size) * times)
    return str((Decimal(float(Decimal(size))) * times).quantize(Decimal("0.01")))


@pytest.mark.parametrize(
    ("cadence", "start", "end"),
    [
        (D, date(2024, 5, 2), date(2024, 5, 3)),
        (W, date(2024, 4, 29), date(2024, 5, 6)),
        (M, date(2024, 5, 1), date(2024, 6, 1)),
    ],
)
def test_two_deals_of_the_largest_size_add_up_in_every_window(
    engine: Engine, cadence: Cadence, start: date, end: date
) -> None:
    """Regression: the sum of two max-size deals of one account overflowed total_deal_size NUMERIC(18, 2) on
    PostgreSQL (numeric field overflow), failing every later run."""
    add_deals(
        engine,
        [
            deal_row(1, 1, "2024-05-02T10:00:00+00:00", MAX_DEAL_SIZE),
            deal_row(2, 1, "2024-05-02T11:00:00+00:00", MAX_DEAL_SIZE),
        ],
    )
    replace_aggregations(engine, cadence, start, end)
    expected = _held(engine, MAX_DEAL_SIZE, 2)
    assert rows(engine, cadence) == [(start.isoformat(), 1, expected, 2)]
    assert expected == ("19999999999999999.98" if engine.dialect.name == "postgresql" else "20000000000000000.00")
    # A refresh compares the stored rows with fresh ones of the same (wider) type, and keeps them.
    update_deal(engine, 2, deal_name="renamed")
    assert replace_aggregations(engine, cadence, start, end).rows_deleted == 0
    with engine.connect() as conn:
        assert reconcile.mismatches_with_deals(conn, cadence) == []


def test_a_thousand_deals_of_the_largest_size_add_up(engine: Engine) -> None:
    """Far more max-size deals than an account realistically has in a month still fit the total, on SQLite too
    (whose integer sum of cents overflows 64 bits from ten of them on)."""
    add_deals(engine, [deal_row(i, 1, f"2024-05-{1 + i % 28:02d}T10:00:00+00:00", MAX_DEAL_SIZE) for i in range(1000)])
    replace_aggregations(engine, M, date(2024, 5, 1), date(2024, 6, 1))
    replace_aggregations(engine, D, date(2024, 5, 1), date(2024, 6, 1))
    [(window, account, total, count)] = rows(engine, M)
    assert (window, account, count) == ("2024-05-01", 1, 1000)
    if engine.dialect.name == "postgresql":
        assert total == "9999999999999999990.00"
    else:  # floats: exact to about 16 digits
        assert abs(Decimal(total) - Decimal("1E+19")) <= Decimal("1E+4")
    with engine.connect() as conn:
        assert reconcile.mismatches_with_deals(conn, M) == []
        assert reconcile.mismatches_with_days(conn, M) == []
