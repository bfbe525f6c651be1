"""update_domain_value against the demo CRM over loopback HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import enum
import threading
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.defs.sync.assets import clean_assets, raw_assets
from crm_assets.demo_crm import DemoConfig, DemoCrm
from crm_assets.demo_crm.server import serve_demo_crm
from crm_assets.domains import get_domain
from crm_assets.freshsales.client import FreshsalesClient, parse_instant
from crm_assets.warehouse.clean_load import clean_changes
from crm_assets.warehouse.schema import CLEAN_TABLES, crm_update_audit
from crm_assets.write_back import store
from crm_assets.write_back.fields import typed_field
from crm_assets_tests.write_back.conftest import resources, rows, run_update, seed_warehouse

DEALS = CLEAN_TABLES["deals"]
ACCOUNTS = CLEAN_TABLES["accounts"]
DEALS_DOMAIN = get_domain("deals")

# A choice of the CRM's industry dropdown that no European account of the seeded demo holds: every one is updated.
NEW_INDUSTRY = "Media"


def deal(demo: DemoCrm, crm_id: int) -> dict[str, Any]:
    record = demo.get_record("deals", crm_id)
    assert record is not None
    return record


def first_deal(demo: DemoCrm, stage_not: str = "") -> int:
    return next(i for i in demo.crm_ids("deals") if deal(demo, i)["custom_field"]["cf_deal_stage"] != stage_not)


def europe_accounts(demo: DemoCrm) -> list[int]:
    ids = [
        i
        for i in demo.crm_ids("sales_accounts")
        if (demo.get_record("sales_accounts", i) or {})["custom_field"]["cf_region"] == "Europe"
    ]
    assert len(ids) >= 2, "the demo data should hold several European accounts"
    return ids


def audit(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    return rows(engine, crm_update_audit, crm_update_audit.c.run_id == run_id)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    (event,) = result.get_step_failure_events()
    data = event.step_failure_data
    return (data.user_failure_data.description if data.user_failure_data else None) or str(data.error)


def test_deal_size_goes_to_the_crm_the_warehouse_the_audit_and_the_reports_sensor(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    crm_id = first_deal(demo)
    before = deal(demo, crm_id)
    seed_warehouse(warehouse_engine, demo, [crm_id])
    deal_id = str(before["custom_field"]["cf_deal_id"])
    started = datetime.now(UTC)

    result = run_update(
        crm_url,
        warehouse_url,
        domain="deals",
        key="deal_id",
        value=deal_id,
        key_to_update="deal_size",
        update_value="24456",
    )

    assert result.success
    assert demo.put_log == [("deals", crm_id, {"deal": {"amount": "24456.00"}})]
    (row,) = rows(warehouse_engine, DEALS, DEALS.c.crm_id == crm_id)
    assert row["deal_size"] == Decimal("24456.00")
    assert parse_instant(deal(demo, crm_id)["updated_at"]) == _utc(row["updated_at"])
    (entry,) = audit(warehouse_engine, result.run_id)
    assert (entry["domain"], entry["crm_id"], entry["field"]) == ("deals", crm_id, "deal_size")
    assert (entry["old_value"], entry["new_value"], entry["status"], entry["error"]) == (
        f"{Decimal(before['amount']):.2f}",
        "24456.00",
        "applied",
        None,
    )
    assert _utc(entry["changed_at"]) >= started.replace(microsecond=0)
    (materialization,) = result.asset_materializations_for_node("apply_update")
    assert materialization.asset_key == dg.AssetKey("deals")
    created = parse_instant(before["created_at"])
    assert created is not None
    assert materialization.metadata["touched_dates"].value == [created.date().isoformat()]


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def test_an_enum_label_in_any_casing_is_written_as_the_canonical_custom_field(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    crm_id = first_deal(demo, stage_not="Closed-Lost")
    seed_warehouse(warehouse_engine, demo, [crm_id])
    deal_id = str(deal(demo, crm_id)["custom_field"]["cf_deal_id"])

    result = run_update(
        crm_url,
        warehouse_url,
        domain="deals",
        key="deal_id",
        value=f" {deal_id} ",
        key_to_update="deal_stage",
        update_value="  closed-LOST ",
    )

    assert result.success
    assert demo.put_log == [("deals", crm_id, {"deal": {"custom_field": {"cf_deal_stage": "Closed-Lost"}}})]
    (row,) = rows(warehouse_engine, DEALS, DEALS.c.crm_id == crm_id)
    assert row["deal_stage"] == "Closed-Lost"
    assert not result.asset_materializations_for_node("apply_update"), "deal_stage does not move aggregations"


def test_every_matching_record_is_updated_including_ones_the_warehouse_lacks(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    europe = europe_accounts(demo)
    seed_warehouse(warehouse_engine, demo)
    with warehouse_engine.begin() as conn:  # one European account was never synced
        conn.execute(sa.delete(ACCOUNTS).where(ACCOUNTS.c.crm_id == europe[0]))
    # Another is spelled so that no exact-match search finds it; the warehouse knows it is Europe.
    demo.update_record("sales_accounts", europe[-1], {"custom_field": {"cf_region": "  eUROPE "}})
    demo.clear_log()

    result = run_update(
        crm_url,
        warehouse_url,
        domain="accounts",
        key="region",
        value="europe",
        key_to_update="account_name",
        update_value="Acme Ltd",
    )

    assert result.success
    assert sorted(demo.put_log) == [("sales_accounts", i, {"sales_account": {"name": "Acme Ltd"}}) for i in europe]
    names = {r["crm_id"]: r["account_name"] for r in rows(warehouse_engine, ACCOUNTS)}
    assert all(names[i] == "Acme Ltd" for i in europe[1:])
    assert sum(name == "Acme Ltd" for name in names.values()) == len(europe) - 1
    assert [(e["crm_id"], e["status"]) for e in audit(warehouse_engine, result.run_id)] == [
        (i, "applied") for i in europe
    ]


def test_a_record_already_at_the_new_value_is_skipped_without_a_put(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    crm_id = first_deal(demo)
    record = deal(demo, crm_id)
    seed_warehouse(warehouse_engine, demo, [crm_id])

    result = run_update(
        crm_url,
        warehouse_url,
        domain="deals",
        key="deal_id",
        value=str(record["custom_field"]["cf_deal_id"]),
        key_to_update="deal_size",
        update_value=str(Decimal(record["amount"])),
    )

    assert result.success
    assert demo.put_log == []
    assert [e["status"] for e in audit(warehouse_engine, result.run_id)] == ["skipped"]
    reads = [r for r in demo.request_log if r.method == "GET" and r.path.endswith(f"/deals/{crm_id}")]
    assert len(reads) == 1, "set in the CRM and the warehouse alike: read once, to plan"


def test_a_dry_run_plans_and_writes_nothing_anywhere(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    europe = europe_accounts(demo)
    seed_warehouse(warehouse_engine, demo)
    before = rows(warehouse_engine, ACCOUNTS)

    result = run_update(
        crm_url,
        warehouse_url,
        domain="accounts",
        key="region",
        value="Europe",
        key_to_update="industry",
        update_value=NEW_INDUSTRY,
        dry_run=True,
    )

    assert result.success
    plan = result.output_for_node("plan_update")
    assert [c.crm_id for c in plan.to_apply] == europe
    assert [o.status for o in result.output_for_node("apply_update")] == ["planned"] * len(europe)
    assert demo.put_log == []
    assert not any(r.method == "PUT" for r in demo.request_log)
    assert rows(warehouse_engine, ACCOUNTS) == before
    assert rows(warehouse_engine, crm_update_audit) == []
    assert not result.asset_materializations_for_node("apply_update")


def test_a_partial_failure_says_what_was_done_and_a_rerun_finishes_only_the_rest(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine
) -> None:
    europe = europe_accounts(demo)
    broken = europe[1]
    seed_warehouse(warehouse_engine, demo)
    demo.faults.fail_put_crm_ids = {broken}
    config = {
        "domain": "accounts",
        "key": "region",
        "value": "Europe",
        "key_to_update": "industry",
        "update_value": NEW_INDUSTRY,
    }

    first = run_update(crm_url, warehouse_url, **config)

    assert not first.success
    message = failure_text(first)
    assert f"{broken}: " in message and "HTTP 500" in message
    assert "Run the same config again" in message
    assert all(str(i) in message for i in europe)
    statuses = {e["crm_id"]: e["status"] for e in audit(warehouse_engine, first.run_id)}
    assert statuses == {i: "failed" if i == broken else "applied" for i in europe}
    industry = {r["crm_id"]: r["industry"] for r in rows(warehouse_engine, ACCOUNTS)}
    assert [industry[i] == NEW_INDUSTRY for i in europe] == [i != broken for i in europe]
    assert {crm_id for _, crm_id, _ in demo.put_log} == set(europe) - {broken}

    demo.faults.fail_put_crm_ids = set()
    demo.clear_log()
    second = run_update(crm_url, warehouse_url, **config)

    assert second.success
    assert demo.put_log == [
        ("sales_accounts", broken, {"sales_account": {"custom_field": {"cf_industry": NEW_INDUSTRY}}})
    ]
    statuses = {e["crm_id"]: e["status"] for e in audit(warehouse_engine, second.run_id)}
    assert statuses == {i: "applied" if i == broken else "skipped" for i in europe}
    assert all(r["industry"] == NEW_INDUSTRY for r in rows(warehouse_engine, ACCOUNTS) if r["crm_id"] in europe)


class PutFailure(enum.Enum):
    DROPPED = "the connection drops before the answer"
    TIMEOUT = "no answer within the client's timeout"
    SERVER_ERROR = "HTTP 503 from the CRM itself"


@pytest.mark.parametrize(
    ("failure", "applied", "failures", "puts", "outcome"),
    [
        (PutFailure.DROPPED, True, 1, 1, "applied"),
        (PutFailure.DROPPED, False, 1, 1, "failed"),
        (PutFailure.TIMEOUT, False, 1, 1, "failed"),
        (PutFailure.SERVER_ERROR, False, 1, 2, "applied"),
        (PutFailure.SERVER_ERROR, False, 100, 7, "failed"),
    ],
    ids=[
        "dropped-after-applying",
        "dropped-before-applying",
        "timed-out-then-applied-late",
        "server-error-once",
        "server-error-always",
    ],
)
def test_a_put_whose_answer_is_lost_is_read_back_and_the_crm_decides_the_outcome(
    demo: DemoCrm,
    crm_url: str,
    warehouse_url: str,
    warehouse_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    failure: PutFailure,
    applied: bool,
    failures: int,
    puts: int,
    outcome: str,
) -> None:
    """The PUT is sent again only when the CRM itself answered (a 5xx, so the request is over there) and a read
    shows the record untouched (the default 6 times at most). After a timeout or a dropped connection it may
    still be under way: sent again, it could be applied twice, moving updated_at and firing the CRM's workflows."""
    crm_id = first_deal(demo)
    before = deal(demo, crm_id)
    old_text = f"{Decimal(before['amount']):.2f}"
    seed_warehouse(warehouse_engine, demo, [crm_id])
    original = demo.handle
    sent: list[httpx.Request] = []
    under_way: list[httpx.Request] = []  # a timed-out PUT the CRM applies once the read-back has been answered
    backoffs: list[int] = []
    back_off = FreshsalesClient.back_off

    def noted_back_off(self: FreshsalesClient, attempt: int) -> None:
        backoffs.append(attempt)
        back_off(self, attempt)

    monkeypatch.setattr(FreshsalesClient, "back_off", noted_back_off)

    def handle(request: httpx.Request, *, over_http: bool = False) -> httpx.Response:
        if request.method != "PUT":
            response = original(request, over_http=over_http)
            while under_way:
                original(under_way.pop(), over_http=over_http)
            return response
        sent.append(request)
        if len(sent) > failures:
            return original(request, over_http=over_http)
        if applied:
            original(request, over_http=over_http)
        if failure is PutFailure.SERVER_ERROR:
            return httpx.Response(503, json={"errors": {"code": 503, "message": ["unavailable"]}})
        if failure is PutFailure.TIMEOUT:  # the CRM applies it after the client gave up waiting
            under_way.append(request)
            raise httpx.ReadTimeout("timed out (test)", request=request)
        raise httpx.RemoteProtocolError("dropped (test)", request=request)

    monkeypatch.setattr(demo, "handle", handle)
    result = run_update(
        crm_url,
        warehouse_url,
        domain="deals",
        key="deal_id",
        value=str(before["custom_field"]["cf_deal_id"]),
        key_to_update="deal_size",
        update_value="24456",
    )

    assert len(sent) == puts
    assert backoffs == list(range(1, min(failures, puts) + 1)), "each lost answer is waited for before the read-back"
    if failure is PutFailure.TIMEOUT:
        assert [crm_id for _, crm_id, _ in demo.put_log] == [crm_id], "applied once, late, never sent again"
    (entry,) = audit(warehouse_engine, result.run_id)
    (row,) = rows(warehouse_engine, DEALS, DEALS.c.crm_id == crm_id)
    assert (entry["old_value"], entry["status"]) == (old_text, outcome)
    if outcome == "applied":
        assert result.success
        assert entry["error"] is None
        assert row["deal_size"] == Decimal("24456.00")
        assert parse_instant(deal(demo, crm_id)["updated_at"]) == _utc(row["updated_at"])
    else:
        assert not result.success
        assert f"read back afterwards, the record holds {old_text!r}" in entry["error"]
        assert f"read back afterwards, the record holds {old_text!r}" in failure_text(result)
        assert ("the CRM may still apply it" in entry["error"]) == (failure is not PutFailure.SERVER_ERROR)
        assert row["deal_size"] == Decimal(before["amount"])


def test_when_the_warehouse_fails_every_record_the_crm_took_is_still_audited(
    demo: DemoCrm, crm_url: str, warehouse_url: str, warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = deal(demo, first_deal(demo))["custom_field"]["cf_deal_stage"]
    matching = [i for i in demo.crm_ids("deals") if deal(demo, i)["custom_field"]["cf_deal_stage"] == stage]
    assert len(matching) >= 3, "the demo data should hold several deals in one stage"
    seed_warehouse(warehouse_engine, demo, matching)
    warehouse_failed = threading.Event()
    original = demo.handle

    def handle(request: httpx.Request, *, over_http: bool = False) -> httpx.Response:
        response = original(request, over_http=over_http)
        if request.method == "PUT" and not request.url.path.endswith(f"/deals/{matching[0]}"):
            warehouse_failed.wait(10)  # the CRM took it; the answer comes after the warehouse failed
        return response

    def lost_connection(conn: sa.Connection, domain: Any, crm_id: int) -> None:
        warehouse_failed.set()
        raise RuntimeError("warehouse connection lost (test)")

    monkeypatch.setattr(demo, "handle", handle)
    monkeypatch.setattr(store, "record_write_back", lost_connection)
    result = run_update(
        crm_url,
        warehouse_url,
        domain="deals",
        key="deal_stage",
        value=stage,
        key_to_update="deal_size",
        update_value="4242",
    )

    assert not result.success
    assert "warehouse connection lost" in failure_text(result)
    sent = {crm_id for _, crm_id, _ in demo.put_log}
    assert matching[0] in sent and len(sent) > 1
    entries = {e["crm_id"]: e for e in audit(warehouse_engine, result.run_id)}
    assert {i: entries[i]["status"] for i in matching} == {i: "applied" if i in sent else "planned" for i in matching}
    assert all(deal(demo, i)["amount"] == "4242.00" for i in sent)
    assert "the warehouse was not updated" in entries[matching[0]]["error"]
    sizes = {r["crm_id"]: r["deal_size"] for r in rows(warehouse_engine, DEALS)}
    assert sizes[matching[0]] != Decimal("4242.00"), "its warehouse transaction rolled back"


@pytest.mark.parametrize(
    ("concurrent_change", "status", "puts"),
    [
        pytest.param({"amount": "99.0"}, "applied", 1, id="field-changed-replanned"),
        pytest.param({"amount": "24456.0"}, "skipped", 0, id="already-set-by-someone-else"),
        pytest.param({"custom_field": {"cf_deal_id": 99999}}, "skipped", 0, id="key-no-longer-matches"),
    ],
)
def test_a_change_in_the_crm_between_read_and_write_is_replanned_not_overwritten(
    demo: DemoCrm,
    crm_url: str,
    warehouse_url: str,
    warehouse_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    concurrent_change: dict[str, Any],
    status: str,
    puts: int,
) -> None:
    crm_id = first_deal(demo)
    seed_warehouse(warehouse_engine, demo, [crm_id])
    deal_id = str(deal(demo, crm_id)["custom_field"]["cf_deal_id"])
    original = demo.handle
    reads = 0

    def handle(request: httpx.Request, *, over_http: bool = False) -> httpx.Response:
        nonlocal reads
        response = original(request, over_http=over_http)
        if request.method == "GET" and request.url.path.endswith(f"/deals/{crm_id}"):
            reads += 1
            if reads == 1:  # right after the plan read it: someone edits the deal in the CRM
                demo.update_record("deals", crm_id, concurrent_change)
        return response

    monkeypatch.setattr(demo, "handle", handle)
    result = run_update(
        crm_url,
        warehouse_url,
        domain="deals",
        key="deal_id",
        value=deal_id,
        key_to_update="deal_size",
        update_value="24456",
    )

    assert result.success
    assert reads == 2, "the record is read once to plan and again right before the write"
    assert len(demo.put_log) == puts
    (entry,) = audit(warehouse_engine, result.run_id)
    assert entry["status"] == status
    if status == "applied":
        assert entry["old_value"] == "99.00", "the audit shows the value the write replaced, not the stale one"
    (outcome,) = result.output_for_node("apply_update")
    assert outcome.replanned
    if "cf_deal_id" in str(concurrent_change):
        assert "no longer has deal_id" in entry["error"]
        (row,) = rows(warehouse_engine, DEALS, DEALS.c.crm_id == crm_id)
        assert row["deal_size"] != Decimal("24456.00"), "a record that stopped matching is left alone"


@pytest.mark.parametrize("kind", ["duplicate", "numeric-string"])
def test_duplicates_and_odd_spellings_of_the_key_in_the_crm_are_all_found(sqlite_url: str, kind: str) -> None:
    dirty = DemoCrm(DemoConfig(accounts=20, contacts=10, deals=400, seed=3, dirty=True))
    by_key: dict[int, list[int]] = defaultdict(list)
    spellings: dict[int, set[str]] = defaultdict(set)
    for crm_id in dirty.crm_ids("deals"):
        record = deal(dirty, crm_id)
        key = typed_field(record, DEALS_DOMAIN.column("deal_id"))
        if isinstance(key, int) and not record["is_deleted"]:
            by_key[key].append(crm_id)
            spellings[key].add(repr(record["custom_field"]["cf_deal_id"]))
    if kind == "duplicate":  # two CRM records share the deal_id; the warehouse would keep one
        value = next(k for k, ids in sorted(by_key.items()) if len(ids) > 1)
    else:  # the CRM holds the deal_id as a string such as "57.0"
        value = next(k for k in sorted(by_key) if any(s.startswith("'") for s in spellings[k]))

    with serve_demo_crm(dirty) as url:
        result = run_update(
            url,
            sqlite_url,
            domain="deals",
            key="deal_id",
            value=str(value),
            key_to_update="deal_size",
            update_value="12345.67",
        )

    assert result.success
    assert sorted(crm_id for _, crm_id, _ in dirty.put_log) == sorted(by_key[value])
    assert [o.status for o in result.output_for_node("apply_update")] == ["applied"] * len(by_key[value])


def test_a_later_clean_run_keeps_the_corrected_value(demo: DemoCrm, crm_url: str, sqlite_url: str) -> None:
    """The raw copy follows the write-back, so re-deciding the record from raw does not undo it."""
    synced = dg.materialize([*raw_assets(), *clean_assets()], resources=resources(crm_url, sqlite_url))
    assert synced.success
    engine = sa.create_engine(sqlite_url)
    deal = rows(engine, DEALS)[0]
    result = run_update(
        crm_url,
        sqlite_url,
        domain="deals",
        key="deal_id",
        value=str(deal["deal_id"]),
        key_to_update="deal_size",
        update_value="4321.5",
    )
    assert result.success
    with engine.begin() as conn:
        clean_changes(conn, DEALS_DOMAIN, "rebuild", rebuild=True)
    (after,) = rows(engine, DEALS, DEALS.c.deal_id == deal["deal_id"])
    assert str(after["deal_size"]) in ("4321.5", "4321.50")


def test_two_write_backs_in_the_same_second_leave_the_second_value_for_later_clean_runs(warehouse_url: str) -> None:
    """Freshsales' updated_at counts seconds: the raw copy of the second write must replace the first's anyway."""
    still = DemoCrm(DemoConfig(accounts=30, contacts=10, deals=30, seed=5, today=date.today() + timedelta(days=2)))
    engine = sa.create_engine(warehouse_url)
    with serve_demo_crm(still) as crm_url:  # data ending after today: every write is stamped the same second
        assert dg.materialize([*raw_assets(), *clean_assets()], resources=resources(crm_url, warehouse_url)).success
        deal = rows(engine, DEALS)[0]
        for deal_size in ("111", "222"):
            config = {"domain": "deals", "key": "deal_id", "value": str(deal["deal_id"])}
            assert run_update(
                crm_url, warehouse_url, **config, key_to_update="deal_size", update_value=deal_size
            ).success
    with engine.begin() as conn:
        clean_changes(conn, DEALS_DOMAIN, "rebuild", rebuild=True)
    (after,) = rows(engine, DEALS, DEALS.c.deal_id == deal["deal_id"])
    engine.dispose()
    assert after["deal_size"] == Decimal("222.00")
