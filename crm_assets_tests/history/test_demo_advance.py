"""The demo CRM moves deals through their stages, and two syncs around that leave the history behind."""

from __future__ import annotations

import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.demo_crm import DEMO_API_KEY, DEMO_BASE_URL, DemoConfig, DemoCrm
from crm_assets.demo_crm.advance import NEXT_STAGES
from crm_assets.domains import ACCOUNTS, DEALS
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.pipeline import clean_domain, extract_domain
from crm_assets.timestamps import parse_instant
from crm_assets.warehouse.clean_load import TableChanges
from crm_assets.warehouse.history import current_version_mismatches
from crm_assets.warehouse.schema import deal_history

TODAY = datetime.date(2025, 6, 1)


def demo() -> DemoCrm:
    return DemoCrm(DemoConfig(accounts=30, contacts=0, deals=300, today=TODAY, seed=3))


def advance_over_http(crm: DemoCrm, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=DEMO_BASE_URL, transport=crm.transport()) as client:
        return client.post("/_demo/advance", json=body)


def test_advance_moves_open_deals_one_stage_on_deterministically() -> None:
    crm, twin = demo(), demo()
    before = {i: crm.get_record("deals", i) for i in crm.crm_ids("deals")}
    answer = advance_over_http(crm, {"fraction": 0.5, "seed": 9})
    assert answer.status_code == 200
    moved = answer.json()["ids"]
    assert answer.json()["count"] == len(moved) > 20
    for crm_id in moved:
        old, new = before[crm_id], crm.get_record("deals", crm_id)
        assert old is not None and new is not None and not old.get("is_deleted")
        old_stage = old["custom_field"]["cf_deal_stage"].strip()
        assert new["custom_field"]["cf_deal_stage"] in NEXT_STAGES[old_stage.title().replace("-won", "-Won")]
        assert parse_instant(new["updated_at"]) > parse_instant(old["updated_at"])  # type: ignore[operator]
    unmoved = set(before) - set(moved)
    assert all(crm.get_record("deals", i) == before[i] for i in unmoved)
    assert twin.advance_deals(0.5, seed=9) == moved  # the same deals, the same way
    assert [twin.get_record("deals", i)["custom_field"] for i in moved] == [  # type: ignore[index]
        crm.get_record("deals", i)["custom_field"]  # type: ignore[index]
        for i in moved
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"fraction": 2}, "fraction must be between 0 and 1"),
        ({"seed": 1}, "'fraction'"),
        ({"fraction": "half"}, "could not convert string to float"),
    ],
)
def test_a_bad_advance_request_says_what_is_wrong(body: dict[str, Any], message: str) -> None:
    answer = advance_over_http(demo(), body)
    assert answer.status_code == 400 and message in answer.text


def sync(engine: Engine, crm: DemoCrm) -> TableChanges:
    client = FreshsalesClient(
        DEMO_BASE_URL, DEMO_API_KEY, transport=crm.transport(), rate_limit_per_minute=0, rate_limit_per_hour=0
    )
    changes = TableChanges()
    with client:
        for domain in (ACCOUNTS, DEALS):
            extract_domain(engine, domain, client, "run")
            changes = clean_domain(engine, domain, "run")
    return changes


def open_versions(engine: Engine) -> dict[int, tuple[int, datetime.datetime, str]]:
    """crm_id -> (deal_id, valid_from in UTC, stage) of the current versions."""
    h = deal_history.c
    query = sa.select(h.crm_id, h.deal_id, h.valid_from, h.deal_stage).where(
        h.valid_to.is_(None), h.is_deleted.is_(False)
    )
    with engine.connect() as conn:
        return {c: (d, v if v.tzinfo else v.replace(tzinfo=datetime.UTC), s) for c, d, v, s in conn.execute(query)}


def test_two_syncs_around_an_advance_keep_the_crm_timestamps(warehouse_engine: Engine) -> None:
    crm = demo()
    sync(warehouse_engine, crm)
    first = open_versions(warehouse_engine)
    moved = crm.advance_deals(0.3, seed=1)
    changes = sync(warehouse_engine, crm)
    second = open_versions(warehouse_engine)
    followed = [i for i in moved if i in first and i in second]  # dirty demo records may be rejected
    assert len(followed) > 10
    h = deal_history.c
    with warehouse_engine.connect() as conn:
        assert current_version_mismatches(conn) == (0, [])
        for crm_id in followed:
            record = crm.get_record("deals", crm_id)
            assert record is not None
            deal_id, valid_from, deal_stage = second[crm_id]
            assert valid_from == parse_instant(record["updated_at"])  # the CRM's timestamp of the change
            assert deal_stage == record["custom_field"]["cf_deal_stage"] != first[crm_id][2]
            rows = conn.execute(sa.select(h.valid_from, h.valid_to).where(h.deal_id == deal_id)).all()
            assert len(rows) == 2 and valid_from.replace(tzinfo=None) in {
                (r.valid_to.replace(tzinfo=None) if r.valid_to else None) for r in rows
            }
    assert changes.history_from == min(second[i][1] for i in moved if i in second)
