"""The change-driven sensor: starts after the newest `deals` materialization, then requests exactly the
touched partitions whose stored rows no longer match `deals`, in contiguous ranges."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy.engine import Engine

from crm_assets.contracts import RANGE_END_TAG, RANGE_START_TAG, TOUCHED_DATES
from crm_assets.defs.reports.refresh import latest_deals_event_id
from crm_assets.defs.reports.sensors import deal_aggregations_refresh
from crm_assets.reports.aggregate import replace_aggregations
from crm_assets.reports.windows import Cadence
from crm_assets.resources import WarehouseResource
from crm_assets_tests.reports.helpers import add_accounts, add_deals, deal_row, update_deal

DAILY_JOB, WEEKLY_JOB, MONTHLY_JOB = (f"deal_aggregations_{c.value}_job" for c in Cadence)


def _report_deals(instance: dg.DagsterInstance, dates: list[str], key: str = "deals") -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key, metadata={TOUCHED_DATES: dg.MetadataValue.json(dates)})
    )


def _requested(result: dg.SensorResult) -> set[tuple[str | None, str, str]]:
    """(job, first partition, last partition) of every run request."""
    out = set()
    for request in result.run_requests or []:
        if request.partition_key:
            out.add((request.job_name, request.partition_key, request.partition_key))
        else:
            out.add((request.job_name, request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]))
    return out


def _tick(instance: dg.DagsterInstance, url: str, cursor: str | None) -> tuple[dg.SensorResult | dg.SkipReason, str]:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"warehouse": WarehouseResource(url=url)}
    )
    result = deal_aggregations_refresh(context)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    new_cursor = result.cursor if isinstance(result, dg.SensorResult) else context.cursor
    return result, str(new_cursor)


@pytest.fixture
def url(warehouse_url: str, warehouse_engine: Engine) -> str:
    add_accounts(warehouse_engine, [1, 2])
    add_deals(
        warehouse_engine,
        [
            deal_row(1, 1, "2024-03-10T12:00:00+00:00", "10.00"),
            deal_row(2, 2, "2024-03-11T12:00:00+00:00", "20.00"),
            deal_row(3, 1, "2024-03-12T12:00:00+00:00", "30.00"),
            deal_row(4, 2, "2024-05-31T12:00:00+00:00", "40.00"),
            deal_row(5, 1, "2024-06-01T12:00:00+00:00", "50.00"),
        ],
    )
    return warehouse_url


def _anchor(instance: dg.DagsterInstance, url: str) -> str:
    """A first tick: the sensor starts after what already exists."""
    _report_deals(instance, ["2024-03-10"])
    first, cursor = _tick(instance, url, None)
    assert isinstance(first, dg.SkipReason)
    return cursor


def test_the_first_tick_requests_nothing_and_starts_after_the_newest_materialization(
    instance: dg.DagsterInstance, url: str
) -> None:
    _report_deals(instance, ["2024-03-10", "2024-03-11"])  # e.g. `crm-assets run` before the UI started
    _report_deals(instance, ["2024-05-31"])
    result, cursor = _tick(instance, url, None)
    assert isinstance(result, dg.SkipReason)
    assert cursor == str(latest_deals_event_id(instance))
    again, _ = _tick(instance, url, cursor)
    assert isinstance(again, dg.SkipReason)  # nothing new since


def test_requests_exactly_the_touched_partitions_that_differ_from_deals(instance: dg.DagsterInstance, url: str) -> None:
    cursor = _anchor(instance, url)
    today = datetime.now(UTC).date().isoformat()  # its partitions do not exist yet
    _report_deals(instance, ["2024-03-11", "2024-03-10", "2024-05-31"])
    _report_deals(instance, ["2024-03-12", "2024-06-01", "2022-05-01", "2024-08-08", today])  # 2022: before start
    _report_deals(instance, ["2025-01-15"], key="accounts")  # not deals: ignored

    result, cursor = _tick(instance, url, cursor)
    assert isinstance(result, dg.SensorResult)
    # 2024-08-08 was touched but has no deals and no stored rows: nothing to recompute there.
    # Stale windows less than a year apart share one run per cadence, the windows between them recomputed on
    # the way: a run costs far more than a window inside one.
    assert _requested(result) == {
        (DAILY_JOB, "2024-03-10", "2024-06-01"),
        (WEEKLY_JOB, "2024-03-04", "2024-05-27"),
        (MONTHLY_JOB, "2024-03-01", "2024-06-01"),
    }
    assert len({r.run_key for r in result.run_requests or []}) == 3


def test_a_touched_partition_whose_rows_still_match_is_not_recomputed(
    instance: dg.DagsterInstance, url: str, warehouse_engine: Engine
) -> None:
    cursor = _anchor(instance, url)
    day = datetime(2024, 3, 10).date()
    for cadence in Cadence:
        replace_aggregations(warehouse_engine, cadence, datetime(2024, 1, 1).date(), datetime(2024, 7, 1).date())
    update_deal(warehouse_engine, 1, deal_name="Renamed")  # touches 2024-03-10, changes no total
    _report_deals(instance, [day.isoformat()])
    renamed, cursor = _tick(instance, url, cursor)
    assert isinstance(renamed, dg.SensorResult) and renamed.run_requests == []

    update_deal(warehouse_engine, 1, deal_size=11)  # the write-back job changed one old deal
    _report_deals(instance, [day.isoformat()])
    resized, _ = _tick(instance, url, cursor)
    assert isinstance(resized, dg.SensorResult)
    assert _requested(resized) == {
        (DAILY_JOB, "2024-03-10", "2024-03-10"),
        (WEEKLY_JOB, "2024-03-04", "2024-03-04"),
        (MONTHLY_JOB, "2024-03-01", "2024-03-01"),
    }


def test_a_materialization_without_touched_dates_requests_nothing(instance: dg.DagsterInstance, url: str) -> None:
    cursor = _anchor(instance, url)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="deals"))
    _report_deals(instance, ["not-a-date"])
    result, cursor = _tick(instance, url, cursor)
    assert isinstance(result, dg.SensorResult)
    assert result.run_requests == []
    assert cursor == str(latest_deals_event_id(instance))


def test_yesterday_is_requested_but_not_today(instance: dg.DagsterInstance, url: str, warehouse_engine: Engine) -> None:
    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).replace(hour=12)
    add_deals(warehouse_engine, [deal_row(9, 1, yesterday, "5.00"), deal_row(10, 2, now, "6.00")])
    cursor = _anchor(instance, url)
    _report_deals(instance, [yesterday.date().isoformat(), now.date().isoformat()])
    result, _ = _tick(instance, url, cursor)
    assert isinstance(result, dg.SensorResult)
    day = yesterday.date().isoformat()
    assert (DAILY_JOB, day, day) in _requested(result)
    assert all(first <= day for _, first, _ in _requested(result))
