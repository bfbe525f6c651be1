"""deal_stage_transitions follows one CRM record under its deal_id: a change of record behind the key is no
stage move. Each step compares the table kept up to date with a rebuild."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.reports.transitions import refresh_transitions
from crm_assets.warehouse import history
from crm_assets.warehouse.schema import deal_stage_transitions
from crm_assets_tests.history.helpers import account, deal, instant, stamp, sync

ACCOUNTS = [account(1, 1, "Europe")]
Transition = tuple[int, str, str, datetime, float | None]


def sync_on(engine: Engine, monkeypatch: pytest.MonkeyPatch, day: int, deals: list[Any], **gone: Any) -> None:
    """A sync observed late on `day` (March 2024)."""
    monkeypatch.setattr(history, "observation_time", lambda: instant(day, 23))
    sync(engine, ACCOUNTS, deals, **gone)


def renamed(record: dict[str, Any], name: str) -> dict[str, Any]:
    return record | {"name": name}


def transitions(engine: Engine) -> list[Transition]:
    """The table kept up to date, after checking that a rebuild gives the same rows."""
    refresh_transitions(engine)
    kept = _rows(engine)
    refresh_transitions(engine, rebuild=True)
    assert _rows(engine) == kept, "kept up to date != rebuilt"
    return kept


def _rows(engine: Engine) -> list[Transition]:
    t = deal_stage_transitions.c
    query = sa.select(t.deal_id, t.from_stage, t.to_stage, t.changed_at, t.days_in_from_stage)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(t.deal_id, t.changed_at)).all()
    return [(d, a, b, c.replace(tzinfo=None), None if n is None else round(n, 4)) for d, a, b, c, n in rows]


def at(day: int) -> datetime:
    return instant(day).replace(tzinfo=None)


def test_duplicates_taking_turns_on_a_key_move_no_stage(
    warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records 201 and 202 share deal_id 20; the most recently updated wins, so editing a name flips it."""
    first = deal(201, 20, 1, stamp(1, 10), stage="Prospecting")
    second = deal(202, 20, 1, stamp(1, 11), stage="Negotiation")
    sync_on(warehouse_engine, monkeypatch, 1, [first, second])
    sync_on(warehouse_engine, monkeypatch, 2, [deal(202, 20, 1, stamp(2), stage="Closed-Lost")])
    assert transitions(warehouse_engine) == [(20, "Negotiation", "Closed-Lost", at(2), None)]

    sync_on(warehouse_engine, monkeypatch, 3, [renamed(deal(201, 20, 1, stamp(3), stage="Prospecting"), "201 won")])
    sync_on(warehouse_engine, monkeypatch, 4, [renamed(deal(202, 20, 1, stamp(4), stage="Closed-Lost"), "202 won")])
    assert transitions(warehouse_engine) == [(20, "Negotiation", "Closed-Lost", at(2), None)]

    # 201 moves on and wins again: its own move, from the stage it had; when it entered that is unknown.
    sync_on(warehouse_engine, monkeypatch, 5, [deal(201, 20, 1, stamp(5), stage="Closed-Won")])
    assert transitions(warehouse_engine) == [
        (20, "Negotiation", "Closed-Lost", at(2), None),
        (20, "Prospecting", "Closed-Won", at(5), None),
    ]


def test_records_swapping_keys_move_no_stage(warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record 101 holds deal_id 10 and 103 holds 12; one sync swaps them, 103 closing on the way."""
    sync_on(
        warehouse_engine,
        monkeypatch,
        1,
        [deal(101, 10, 1, stamp(1), stage="Prospecting"), deal(103, 12, 1, stamp(1), stage="Negotiation")],
    )
    sync_on(warehouse_engine, monkeypatch, 2, [deal(101, 10, 1, stamp(2), stage="Negotiation")])
    sync_on(
        warehouse_engine,
        monkeypatch,
        3,
        [deal(101, 12, 1, stamp(3), stage="Negotiation"), deal(103, 10, 1, stamp(3), stage="Closed-Won")],
    )
    assert transitions(warehouse_engine) == [(10, "Prospecting", "Negotiation", at(2), None)]

    # Under its new key 101 starts afresh: the day it entered Negotiation belongs to deal 10's chain.
    sync_on(warehouse_engine, monkeypatch, 5, [deal(101, 12, 1, stamp(5), stage="Closed-Lost")])
    assert transitions(warehouse_engine) == [
        (10, "Prospecting", "Negotiation", at(2), None),
        (12, "Negotiation", "Closed-Lost", at(5), None),
    ]


def test_a_deleted_deals_key_taken_by_another_record_is_no_stage_move_and_the_restored_record_goes_on(
    warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = deal(301, 30, 1, stamp(1), stage="Negotiation")
    sync_on(warehouse_engine, monkeypatch, 1, [original])
    sync_on(warehouse_engine, monkeypatch, 3, [], deleted_deals=[deal(301, 30, 1, stamp(3), stage="Negotiation")])
    sync_on(warehouse_engine, monkeypatch, 5, [deal(302, 30, 1, stamp(5), stage="Closed-Won")])
    assert transitions(warehouse_engine) == []

    # 302 goes and 301 is restored, closed meanwhile: the same record, so its chain goes on across the gap.
    restored = deal(301, 30, 1, stamp(6), stage="Closed-Lost")
    sync_on(
        warehouse_engine, monkeypatch, 7, [restored], deleted_deals=[deal(302, 30, 1, stamp(7), stage="Closed-Won")]
    )
    assert transitions(warehouse_engine) == [(30, "Negotiation", "Closed-Lost", at(6), None)]
