"""deal_history keeps one version per change of a deal, with the CRM's timestamps, written with the clean change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.domains import DEALS, Domain
from crm_assets.warehouse import clean_load, history
from crm_assets.warehouse.history import current_version_mismatches, history_start, pipeline_changed_from
from crm_assets.warehouse.schema import deal_history
from crm_assets_tests.history.helpers import (
    account,
    backdated_versions,
    clean,
    deal,
    instant,
    stamp,
    sync,
    versions,
)

ACCOUNTS_NOW = [account(1, 1, "Asia"), account(2, 2, "Europe")]
FIRST_DEALS = [
    deal(101, 1, 1, stamp(1), amount="100"),
    deal(102, 2, 1, stamp(1), stage="Negotiation", amount="200"),
    deal(103, 3, 2, stamp(1), amount="300"),
    deal(104, 4, 2, stamp(1), stage="Negotiation", amount="400"),
    deal(106, 6, 2, stamp(2), amount="600"),
]
CHANGES = [
    deal(101, 1, 1, stamp(5), amount="150"),  # amount
    deal(102, 2, 1, stamp(6), stage="Closed-Won", amount="200"),  # stage
    deal(103, 3, 1, stamp(7), amount="300"),  # account
    deal(105, 5, 2, stamp(9), amount="500"),  # a new deal
]
DELETED = [deal(104, 4, 2, stamp(8), stage="Negotiation", amount="400")]


def two_syncs(engine: Engine) -> tuple[datetime, datetime, datetime]:
    before = datetime.now(UTC)
    sync(engine, ACCOUNTS_NOW, FIRST_DEALS)
    between = datetime.now(UTC)
    sync(engine, deals=CHANGES, deleted_deals=DELETED)
    return before, between, datetime.now(UTC)


def brief(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            r["deal_id"],
            r["valid_from"],
            r["valid_to"],
            r["deal_stage"],
            r["deal_size"],
            r["account_id"],
            r["is_deleted"],
        )
        for r in rows
    ]


@pytest.fixture(params=["planner", "index-probes"])
def joins(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """index-probes: every clean run counts as a small change, joined by index probes only (PostgreSQL)."""
    if request.param == "index-probes":
        monkeypatch.setattr(clean_load, "SMALL_CHANGE_SHARE", 0)
    return str(request.param)


def test_two_syncs_keep_exactly_the_expected_versions(warehouse_engine: Engine, joins: str) -> None:
    before, between, after = two_syncs(warehouse_engine)
    rows = versions(warehouse_engine)
    assert brief(rows) == [
        (1, instant(1), instant(5), "Prospecting", Decimal("100.00"), 1, False),
        (1, instant(5), None, "Prospecting", Decimal("150.00"), 1, False),
        (2, instant(1), instant(6), "Negotiation", Decimal("200.00"), 1, False),
        (2, instant(6), None, "Closed-Won", Decimal("200.00"), 1, False),
        (3, instant(1), instant(7), "Prospecting", Decimal("300.00"), 2, False),
        (3, instant(7), None, "Prospecting", Decimal("300.00"), 1, False),
        (4, instant(1), instant(8), "Negotiation", Decimal("400.00"), 2, False),
        (4, instant(8), None, "Negotiation", Decimal("400.00"), 2, True),  # the deletion, at the CRM's time
        (5, instant(9), None, "Prospecting", Decimal("500.00"), 2, False),
        (6, instant(2), None, "Prospecting", Decimal("600.00"), 2, False),
    ]
    first_seen = {r["deal_id"]: r["first_observed_at"] for r in rows}
    assert all(before <= first_seen[k] <= between for k in (1, 2, 3, 4, 6))
    assert between <= first_seen[5] <= after
    assert all(r["first_observed_at"] == first_seen[r["deal_id"]] for r in rows)
    with warehouse_engine.connect() as conn:
        assert current_version_mismatches(conn) == (0, [])
        assert history_start(conn) == min(first_seen.values())


def test_the_deals_materialization_learns_the_earliest_change(warehouse_engine: Engine) -> None:
    sync(warehouse_engine, ACCOUNTS_NOW, FIRST_DEALS)
    changes = sync(warehouse_engine, deals=CHANGES, deleted_deals=DELETED)
    assert changes.history_from == instant(5)
    assert sync(warehouse_engine).history_from is None


def test_the_pipeline_changes_from_no_earlier_than_the_first_history_day(warehouse_engine: Engine) -> None:
    """A deal first seen now with an old CRM timestamp changes no day before the history began: the days
    between would be recomputed for nothing (they hold no rows)."""
    sync(warehouse_engine, ACCOUNTS_NOW, FIRST_DEALS)
    changes = sync(warehouse_engine, deals=CHANGES, deleted_deals=DELETED)
    with warehouse_engine.connect() as conn:
        began = history_start(conn)
        assert changes.history_from is not None and began is not None
        assert changes.history_from.date() < began.date()
        assert pipeline_changed_from(conn, changes.history_from) == began.date()
        later = began + timedelta(days=3)
        assert pipeline_changed_from(conn, later) == later.date()
        assert pipeline_changed_from(conn, None) is None


def test_a_rerun_on_unchanged_input_adds_nothing(warehouse_engine: Engine) -> None:
    two_syncs(warehouse_engine)
    expected = versions(warehouse_engine)
    sync(warehouse_engine, deals=CHANGES, deleted_deals=DELETED)  # the same records again
    with warehouse_engine.begin() as conn:
        clean_load.clean_changes(conn, DEALS, "rebuild", rebuild=True)
    assert versions(warehouse_engine) == expected


def test_a_failed_run_adds_nothing(warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    two_syncs(warehouse_engine)
    expected = versions(warehouse_engine)
    save = clean_load.save_cleaned_through

    def fail(conn: sa.Connection, domain: Domain, through: int) -> None:
        if domain.name == DEALS.name:  # after the deals' clean rows and versions were written
            raise RuntimeError("disk full")
        save(conn, domain, through)

    monkeypatch.setattr(clean_load, "save_cleaned_through", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        sync(warehouse_engine, deals=[deal(101, 1, 1, stamp(10), amount="999")])
    assert versions(warehouse_engine) == expected
    monkeypatch.undo()
    clean(warehouse_engine, DEALS)  # the change lands once the run succeeds
    assert [r["deal_size"] for r in versions(warehouse_engine) if r["deal_id"] == 1][-1] == Decimal("999.00")


def test_rejected_and_orphaned_deals_close_their_versions(warehouse_engine: Engine, joins: str) -> None:
    two_syncs(warehouse_engine)
    started = datetime.now(UTC)
    sync(
        warehouse_engine,
        deals=[deal(105, 5, 2, stamp(12), amount="lots")],  # rejected: uncastable amount
        deleted_accounts=[account(2, 2, "Europe", stamp(11))],  # deal 6 is orphaned
    )
    rows = {(r["deal_id"], r["valid_to"] is None): r for r in versions(warehouse_engine)}
    rejected, orphaned = rows[(5, True)], rows[(6, True)]
    assert rejected["is_deleted"] and rejected["valid_from"] == instant(12)  # the record's own change
    assert orphaned["is_deleted"] and orphaned["valid_from"] >= started  # observed: deal 6 did not change
    with warehouse_engine.connect() as conn:
        assert current_version_mismatches(conn) == (0, [])


def test_a_deal_that_comes_back_opens_a_new_version(warehouse_engine: Engine, joins: str) -> None:
    two_syncs(warehouse_engine)
    sync(warehouse_engine, deals=[deal(104, 4, 2, stamp(14), stage="Closed-Lost", amount="400")])
    assert brief([r for r in versions(warehouse_engine) if r["deal_id"] == 4])[1:] == [
        (4, instant(8), instant(14), "Negotiation", Decimal("400.00"), 2, True),
        (4, instant(14), None, "Closed-Lost", Decimal("400.00"), 2, False),
    ]


def test_the_check_names_deals_that_differ_from_their_current_version(warehouse_engine: Engine) -> None:
    two_syncs(warehouse_engine)
    with warehouse_engine.begin() as conn:
        conn.execute(sa.update(deal_history).where(deal_history.c.deal_id == 3).values(deal_stage="Closed-Lost"))
        conn.execute(sa.delete(deal_history).where(deal_history.c.deal_id == 6))
    with warehouse_engine.connect() as conn:
        assert current_version_mismatches(conn) == (2, [3, 6])


def test_a_version_never_starts_before_the_one_it_closes(
    warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync(warehouse_engine, ACCOUNTS_NOW, [deal(101, 1, 1, stamp(5), amount="100")])
    monkeypatch.setattr(history, "observation_time", lambda: instant(10))
    sync(warehouse_engine, deals=[deal(101, 1, 1, stamp(3), amount="120")])  # the CRM's clock went back
    assert brief(versions(warehouse_engine)) == [
        (1, instant(5), instant(10), "Prospecting", Decimal("100.00"), 1, False),  # until the sync saw the change
        (1, instant(10), None, "Prospecting", Decimal("120.00"), 1, False),
    ]


def test_a_deal_back_after_its_account_was_rejected_keeps_its_deletion_version(
    warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch, joins: str
) -> None:
    """The deal itself never changed: it leaves and comes back at the times the syncs observe it, so its
    return does not start at the deletion (which would leave the deletion version open for no time)."""
    for day, accounts, deals in (
        (20, ACCOUNTS_NOW, FIRST_DEALS),
        (21, [account(2, 2, "Mars", stamp(21, 0))], []),  # rejected: deals 3, 4 and 6 are orphaned
        (22, [account(2, 2, "Europe", stamp(22, 0))], []),  # back: so are they
    ):
        monkeypatch.setattr(history, "observation_time", lambda day=day: instant(day))
        sync(warehouse_engine, accounts, deals)
    rows = versions(warehouse_engine)
    assert backdated_versions(rows) == []
    assert brief([r for r in rows if r["deal_id"] == 6]) == [
        (6, instant(2), instant(21), "Prospecting", Decimal("600.00"), 2, False),
        (6, instant(21), instant(22), "Prospecting", Decimal("600.00"), 2, True),
        (6, instant(22), None, "Prospecting", Decimal("600.00"), 2, False),
    ]
    with warehouse_engine.connect() as conn:
        assert current_version_mismatches(conn) == (0, [])
