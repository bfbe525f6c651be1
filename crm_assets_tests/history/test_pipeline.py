"""pipeline_daily equals, day by day, a replay of deal_history's versions; deal_stage_transitions follows it."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.reports.pipeline import OPEN_STAGES, read_pipeline, replace_pipeline
from crm_assets.reports.transitions import refresh_transitions
from crm_assets.reports.windows import utc_midnight
from crm_assets.warehouse import history
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_history, deal_stage_transitions
from crm_assets_tests.history.helpers import account, deal, instant, stamp, sync, versions

Row = tuple[date, str, str | None, int, Decimal]


def at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setattr(history, "observation_time", lambda: moment)


def build_history(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, after_each_sync: Callable[[], None] = lambda: None
) -> None:
    """Three syncs; changes land on several days, one exactly at midnight, one deal goes and comes back."""
    at(monkeypatch, instant(3, 0))
    sync(
        engine,
        [account(1, 1, "Asia"), account(2, 2, "Europe"), account(3, 3, "North America")],
        [
            deal(101, 1, 1, stamp(1), amount="100.10"),
            deal(102, 2, 1, stamp(1), stage="Negotiation", amount="200"),
            deal(103, 3, 2, stamp(2), amount=None),
            deal(104, 4, 3, stamp(2), stage="Negotiation", amount="400"),
            deal(106, 6, 3, stamp(2), stage="Closed-Won", amount="600"),
        ],
    )
    after_each_sync()
    at(monkeypatch, instant(10, 0))
    sync(
        engine,
        deals=[
            deal(101, 1, 1, stamp(4), stage="Negotiation", amount="150.05"),
            deal(102, 2, 1, stamp(6), stage="Closed-Won", amount="200"),
            deal(103, 3, 3, stamp(7, 0), amount="300"),  # midnight: counts from the 7th on
            deal(105, 5, 2, stamp(9), amount="500"),
        ],
        deleted_deals=[deal(104, 4, 3, stamp(8), stage="Negotiation", amount="400")],
    )
    after_each_sync()
    at(monkeypatch, instant(14, 0))
    sync(
        engine,
        deals=[
            deal(101, 1, 1, stamp(12), stage="Closed-Lost", amount="150.05"),
            deal(104, 4, 3, stamp(13), stage="Prospecting", amount="410"),
        ],
        deleted_accounts=[account(2, 2, "Europe", stamp(11))],  # deal 5 is orphaned, observed on the 14th
    )
    after_each_sync()


def replay(engine: Engine, day: date) -> list[Row]:
    """The open pipeline at the end of `day`, from the versions, in Python."""
    accounts = CLEAN_TABLES["accounts"]
    with engine.connect() as conn:
        region = dict(conn.execute(sa.select(accounts.c.account_id, accounts.c.region)).all())
    end = utc_midnight(day + timedelta(days=1))
    count: Counter[tuple[str, str | None]] = Counter()
    value: defaultdict[tuple[str, str | None], Decimal] = defaultdict(Decimal)
    for v in versions(engine):
        valid = v["valid_from"] < end and (v["valid_to"] is None or v["valid_to"] >= end)
        if valid and not v["is_deleted"] and v["deal_stage"] in OPEN_STAGES:
            group = (v["deal_stage"], region.get(v["account_id"]))
            count[group] += 1
            value[group] += v["deal_size"] or Decimal("0")
    rows = [(day, s, r, n, value[(s, r)].quantize(Decimal("0.01"))) for (s, r), n in count.items()]
    return sorted(rows, key=lambda r: (r[1], r[2] or ""))


def by_day(rows: list[Row]) -> dict[date, list[Row]]:
    grouped: dict[date, list[Row]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    return {d: sorted(rs, key=lambda r: (r[1], r[2] or "")) for d, rs in grouped.items()}


def test_each_day_equals_a_replay_of_the_versions(warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    build_history(warehouse_engine, monkeypatch)
    stats = replace_pipeline(warehouse_engine, date(2024, 2, 27), date(2024, 3, 20))
    with warehouse_engine.connect() as conn:
        stored = by_day(read_pipeline(conn, date(2024, 2, 1), date(2024, 4, 1)))
    days = [date(2024, 3, 3) + timedelta(days=i) for i in range(17)]
    for day in days:
        assert stored.get(day, []) == replay(warehouse_engine, day), day
    assert stats.first_history_day == date(2024, 3, 3)
    assert stats.before_history() == [date(2024, 2, 27) + timedelta(days=i) for i in range(5)]
    assert not any(d < date(2024, 3, 3) for d in stored)  # days before the history are not invented
    assert stored[date(2024, 3, 6)] != stored[date(2024, 3, 7)]  # the midnight change counts from the 7th
    assert stats.days[date(2024, 3, 19)].open_deal_count == sum(r[3] for r in stored[date(2024, 3, 19)])
    assert stats.rows_written == sum(len(rs) for rs in stored.values())


def test_replacing_a_range_is_idempotent_and_stays_inside_it(
    warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_history(warehouse_engine, monkeypatch)
    replace_pipeline(warehouse_engine, date(2024, 3, 1), date(2024, 3, 20))
    with warehouse_engine.connect() as conn:
        first = read_pipeline(conn, date(2024, 3, 1), date(2024, 3, 20))
    again = replace_pipeline(warehouse_engine, date(2024, 3, 8), date(2024, 3, 9))
    with warehouse_engine.connect() as conn:
        assert read_pipeline(conn, date(2024, 3, 1), date(2024, 3, 20)) == first
    assert again.rows_deleted == again.rows_written > 0


def test_no_history_yet_means_no_rows(warehouse_engine: Engine) -> None:
    stats = replace_pipeline(warehouse_engine, date(2024, 3, 1), date(2024, 3, 3))
    assert stats.first_history_day is None and stats.rows_written == 0
    assert stats.before_history() == [date(2024, 3, 1), date(2024, 3, 2)]


def test_stage_transitions_follow_the_history(warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    build_history(warehouse_engine, monkeypatch)
    stats = refresh_transitions(warehouse_engine)
    t = deal_stage_transitions.c
    with warehouse_engine.connect() as conn:
        rows: list[Any] = list(
            conn.execute(
                sa.select(t.deal_id, t.from_stage, t.to_stage, t.changed_at, t.days_in_from_stage).order_by(
                    t.deal_id, t.changed_at
                )
            ).all()
        )
    simple = [(d, a, b, c.replace(tzinfo=None), None if n is None else round(n, 4)) for d, a, b, c, n in rows]
    naive = {k: instant(k).replace(tzinfo=None) for k in (4, 6, 12, 13)}
    assert simple == [
        (1, "Prospecting", "Negotiation", naive[4], None),  # entered Prospecting before the history
        (1, "Negotiation", "Closed-Lost", naive[12], 8.0),
        (2, "Negotiation", "Closed-Won", naive[6], None),
        (4, "Negotiation", "Prospecting", naive[13], None),  # across its deletion and return
    ]
    assert stats.transitions == 4 and stats.deals == 3
    assert stats.conversions == {
        "Negotiation -> Closed-Lost": 1,
        "Negotiation -> Closed-Won": 1,
        "Negotiation -> Prospecting": 1,
        "Prospecting -> Negotiation": 1,
    }
    assert stats.median_days_in_stage == {"Negotiation": 8.0}
    assert refresh_transitions(warehouse_engine, rebuild=True) == stats  # a rebuild, not an append


def _transitions(engine: Engine) -> list[Any]:
    t = deal_stage_transitions.c
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(t.deal_id, t.from_stage, t.to_stage, t.changed_at, t.days_in_from_stage)).all()
        )


def test_transitions_kept_up_to_date_equal_a_rebuild_after_every_sync(
    warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    recomputed: list[int | None] = []

    def refresh_then_compare_with_a_rebuild() -> None:
        kept = refresh_transitions(warehouse_engine)
        rows = sorted(_transitions(warehouse_engine))
        rebuilt = refresh_transitions(warehouse_engine, rebuild=True)
        assert sorted(_transitions(warehouse_engine)) == rows
        assert dataclasses.replace(kept, deals_recomputed=None) == rebuilt
        recomputed.append(kept.deals_recomputed)
        assert refresh_transitions(warehouse_engine).deals_recomputed == 0, "nothing new: nothing recomputed"

    build_history(warehouse_engine, monkeypatch, after_each_sync=refresh_then_compare_with_a_rebuild)
    # The first build is a rebuild; then the deals with new versions: 1-5 (104 deleted), then 1, 4 and 5.
    assert recomputed == [None, 5, 3]


def test_transitions_are_rebuilt_when_the_history_was_reset(
    warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written anew (ids restart on SQLite, go on on PostgreSQL), or emptied: a rebuild."""
    build_history(warehouse_engine, monkeypatch)
    assert refresh_transitions(warehouse_engine).transitions == 4
    h = deal_history.c
    with warehouse_engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(deal_history).order_by(h.id)).mappings()]
        conn.execute(sa.delete(deal_history))
        # A different history: deal 2's versions only, its last one moved on to another stage.
        rewritten = [{k: v for k, v in r.items() if k != "id"} for r in rows if r["deal_id"] == 2]
        rewritten[-1]["deal_stage"] = "Closed-Lost"
        conn.execute(deal_history.insert(), rewritten)
    stats = refresh_transitions(warehouse_engine)
    assert stats.deals_recomputed is None, "the history changed under the last build"
    assert [(r[0], r[1], r[2]) for r in _transitions(warehouse_engine)] == [(2, "Negotiation", "Closed-Lost")]

    with warehouse_engine.begin() as conn:
        conn.execute(sa.delete(deal_history))
    stats = refresh_transitions(warehouse_engine)
    assert stats.deals_recomputed is None and stats.transitions == 0 and _transitions(warehouse_engine) == []


MAX_DEAL_SIZE = Decimal("9999999999999999.99")  # the largest deals.deal_size holds: NUMERIC(18, 2)


@pytest.mark.parametrize("deals", [2, 1000])
def test_open_deals_of_the_largest_size_add_up(warehouse_engine: Engine, deals: int) -> None:
    """Regression: two open max-size deals of one stage and region overflowed open_deal_value NUMERIC(18, 2) on
    PostgreSQL; on SQLite the integer sum of cents overflowed 64 bits from ten of them on."""
    with warehouse_engine.begin() as conn:
        conn.execute(
            deal_history.insert(),
            [
                {
                    "deal_id": i,
                    "crm_id": 100 + i,
                    "valid_from": instant(2),
                    "valid_to": None,
                    "deal_size": MAX_DEAL_SIZE,
                    "deal_stage": "Prospecting",
                    "account_id": None,
                    "is_deleted": False,
                    "first_observed_at": instant(2),
                }
                for i in range(deals)
            ],
        )
    replace_pipeline(warehouse_engine, date(2024, 3, 2), date(2024, 3, 4))
    with warehouse_engine.connect() as conn:
        stored = read_pipeline(conn, date(2024, 3, 2), date(2024, 3, 4))
    assert [(d, s, r, n) for d, s, r, n, _ in stored] == [
        (date(2024, 3, d), "Prospecting", None, deals) for d in (2, 3)
    ]
    for *_, value in stored:
        if warehouse_engine.dialect.name == "postgresql":
            assert value == MAX_DEAL_SIZE * deals
        else:  # SQLite keeps NUMERIC as binary floats: each deal as the nearest float, about 16 digits exact
            assert abs(value - MAX_DEAL_SIZE * deals) <= Decimal(deals)
