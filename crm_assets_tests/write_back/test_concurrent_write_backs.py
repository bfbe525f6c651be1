"""Write-backs of the same records at once: the warehouse ends as the CRM, whichever finishes first."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.demo_crm import DEMO_API_KEY, DemoCrm
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.warehouse.history import current_version_mismatches
from crm_assets.warehouse.schema import CLEAN_TABLES, RAW_TABLES, deal_history
from crm_assets.write_back import (
    ChangeOutcome,
    Status,
    UpdatePlan,
    UpdateRequest,
    apply_changes,
    build_plan,
    find_matching_records,
    validate_request,
)
from crm_assets_tests.write_back.conftest import rows, seed_warehouse

DEALS = CLEAN_TABLES["deals"]
WAITING = "waiting for another write-back"
STEP_TIMEOUT = 10.0  # seconds a test thread waits for the other before it gives up


class _Signal(logging.Handler):
    """Sets `event` when a write-back logs that it waits for another one."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if WAITING in record.getMessage():
            self.event.set()


def _log(event: threading.Event) -> logging.Logger:
    log = logging.getLogger(f"{__name__}.{id(event)}")
    log.setLevel(logging.INFO)
    log.addHandler(_Signal(event))
    return log


def _client(crm_url: str) -> FreshsalesClient:
    return FreshsalesClient(crm_url, DEMO_API_KEY, rate_limit_per_minute=0, rate_limit_per_hour=0)


def _plan(crm_url: str, engine: Engine, deal_id: str, deal_size: str, log: logging.Logger) -> UpdatePlan:
    update = validate_request(UpdateRequest("deals", "deal_id", deal_id, "deal_size", deal_size))
    with _client(crm_url) as client:
        return build_plan(update, find_matching_records(client, engine, update, log))


def _apply(crm_url: str, engine: Engine, plan: UpdatePlan, run_id: str, log: logging.Logger) -> list[ChangeOutcome]:
    with _client(crm_url) as client:
        return apply_changes(client, engine, plan, run_id, log, max_workers=2)


def _deal(demo: DemoCrm) -> tuple[int, str, dict[str, Any]]:
    crm_id = demo.crm_ids("deals")[0]
    record = demo.get_record("deals", crm_id) or {}
    return crm_id, str(record["custom_field"]["cf_deal_id"]), record


def _warehouse_amount(engine: Engine, crm_id: int) -> tuple[Decimal, str]:
    (row,) = rows(engine, DEALS, DEALS.c.crm_id == crm_id)
    raw = RAW_TABLES["deals"]
    with engine.connect() as conn:
        payload = conn.execute(sa.select(raw.c.payload).where(raw.c.crm_id == crm_id)).scalar_one()
    return row["deal_size"], payload["amount"]


def test_a_second_write_back_of_a_record_waits_for_the_first_and_the_warehouse_ends_as_the_crm(
    demo: DemoCrm, crm_url: str, warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    crm_id, deal_id, _ = _deal(demo)
    seed_warehouse(warehouse_engine, demo, [crm_id])
    first_put_applied, second_waits = threading.Event(), threading.Event()
    original = demo.handle

    def handle(request: httpx.Request, *, over_http: bool = False) -> httpx.Response:
        response = original(request, over_http=over_http)
        if request.method == "PUT" and b'"111.00"' in request.content:
            first_put_applied.set()  # the CRM took it; its answer arrives once the second write-back waits
            second_waits.wait(STEP_TIMEOUT)
        return response

    monkeypatch.setattr(demo, "handle", handle)
    log = _log(second_waits)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(
            lambda: _apply(
                crm_url, warehouse_engine, _plan(crm_url, warehouse_engine, deal_id, "111", log), "first", log
            )
        )
        assert first_put_applied.wait(STEP_TIMEOUT)
        second = _apply(crm_url, warehouse_engine, _plan(crm_url, warehouse_engine, deal_id, "222", log), "second", log)
        second_waits.set()  # unblocks the first when the second never waited
        first_outcomes = first.result()

    assert [(o.status, o.new_text) for o in first_outcomes] == [(Status.APPLIED, "111.00")]
    assert [(o.status, o.old_text, o.new_text) for o in second] == [(Status.APPLIED, "111.00", "222.00")]
    assert (demo.get_record("deals", crm_id) or {})["amount"] == "222.00"
    assert _warehouse_amount(warehouse_engine, crm_id) == (Decimal("222.00"), "222.00")
    open_version = rows(warehouse_engine, deal_history, deal_history.c.valid_to.is_(None))
    assert [v["deal_size"] for v in open_version] == [Decimal("222.00")]
    with warehouse_engine.connect() as conn:
        assert not current_version_mismatches(conn)[0]


def test_a_record_planned_as_already_set_is_read_again_when_another_write_back_changed_it_meanwhile(
    demo: DemoCrm, crm_url: str, warehouse_engine: Engine
) -> None:
    crm_id, deal_id, record = _deal(demo)
    seed_warehouse(warehouse_engine, demo, [crm_id])
    log = _log(threading.Event())
    current = f"{Decimal(record['amount']):.2f}"
    already_set = _plan(crm_url, warehouse_engine, deal_id, current, log)  # planned, then the other one runs

    _apply(crm_url, warehouse_engine, _plan(crm_url, warehouse_engine, deal_id, "111", log), "other", log)
    (outcome,) = _apply(crm_url, warehouse_engine, already_set, "late", log)

    assert (outcome.status, outcome.old_text, outcome.new_text, outcome.replanned) == (
        Status.APPLIED,
        "111.00",
        current,
        True,
    )
    assert (demo.get_record("deals", crm_id) or {})["amount"] == current
    assert _warehouse_amount(warehouse_engine, crm_id) == (Decimal(current), current)
