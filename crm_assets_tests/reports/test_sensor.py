"""The change-driven sensor requests exactly the touched partitions, in contiguous ranges."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from crm_assets.contracts import RANGE_END_TAG, RANGE_START_TAG
from crm_assets.defs.reports.sensors import deal_aggregations_refresh


def _report_deals(instance: dg.DagsterInstance, dates: list[str], key: str = "deals") -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key, metadata={"touched_dates": dg.MetadataValue.json(dates)})
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


def _evaluate(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    result = deal_aggregations_refresh(dg.build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    return result


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def test_requests_exactly_the_touched_partitions(instance: dg.DagsterInstance) -> None:
    today = datetime.now(UTC).date().isoformat()  # its partitions do not exist yet
    _report_deals(instance, ["2024-03-11", "2024-03-10", "2024-05-31"])
    _report_deals(instance, ["2024-03-12", "2024-06-01", "2022-05-01", today])  # 2022: before the start date
    _report_deals(instance, ["2025-01-15"], key="accounts")  # not deals: ignored

    result = _evaluate(instance, None)
    assert _requested(result) == {
        ("deal_aggregations_daily_job", "2024-03-10", "2024-03-12"),
        ("deal_aggregations_daily_job", "2024-05-31", "2024-06-01"),
        ("deal_aggregations_weekly_job", "2024-03-04", "2024-03-11"),
        ("deal_aggregations_weekly_job", "2024-05-27", "2024-05-27"),
        ("deal_aggregations_monthly_job", "2024-03-01", "2024-03-01"),
        ("deal_aggregations_monthly_job", "2024-05-01", "2024-06-01"),
    }
    assert len({r.run_key for r in result.run_requests or []}) == 6

    again = deal_aggregations_refresh(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(again, dg.SkipReason)  # nothing new since the cursor

    _report_deals(instance, ["2024-02-29"])  # e.g. the write-back job changed one old deal
    later = _evaluate(instance, result.cursor)
    assert _requested(later) == {
        ("deal_aggregations_daily_job", "2024-02-29", "2024-02-29"),
        ("deal_aggregations_weekly_job", "2024-02-26", "2024-02-26"),
        ("deal_aggregations_monthly_job", "2024-02-01", "2024-02-01"),
    }


def test_a_materialization_without_touched_dates_requests_nothing(instance: dg.DagsterInstance) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="deals"))
    _report_deals(instance, ["not-a-date"])
    result = _evaluate(instance, None)
    assert result.run_requests == []
    assert result.cursor is not None


def test_yesterday_is_requested_but_not_today() -> None:
    with dg.instance_for_test() as instance:
        now = datetime.now(UTC)
        _report_deals(instance, [(now - timedelta(days=1)).date().isoformat(), now.date().isoformat()])
        result = _evaluate(instance, None)
        yesterday = (now - timedelta(days=1)).date().isoformat()
        assert ("deal_aggregations_daily_job", yesterday, yesterday) in _requested(result)
        assert all(first <= yesterday for _, first, _ in _requested(result))
