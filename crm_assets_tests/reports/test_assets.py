"""The report assets, checks, jobs and schedules through Dagster (in process)."""

import base64
import os
import stat
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy.engine import Engine

from crm_assets.contracts import RANGE_END_TAG, RANGE_START_TAG
from crm_assets.defs.reports.assets import report_assets
from crm_assets.defs.reports.checks import REPORT_CHECKS
from crm_assets.defs.reports.definitions import build_defs, full_range
from crm_assets.reports.windows import Cadence
from crm_assets.resources import ExportDirectory, WarehouseResource
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets_tests.reports.helpers import add_accounts, add_deals, deal_row, delete_deal, materialize_on, rows

REPORT_ASSETS = list(report_assets().values())
DAILY, WEEKLY, MONTHLY = REPORT_ASSETS


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CRM_EXPORT_DIR", str(tmp_path / "exports"))
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = create_warehouse_engine(url)
    migrate(engine)
    add_accounts(engine, [1, 2, 3])
    add_deals(
        engine,
        [
            deal_row(1, 1, "2024-02-28T12:00:00+00:00", "10.00"),
            deal_row(2, 2, "2024-02-29T23:59:59+00:00", "20.00"),
            deal_row(3, 3, "2024-03-01T00:00:00+00:00", "30.00"),
            deal_row(4, 1, "2024-03-03T18:00:00-06:00", "40.00"),  # Monday 4 March in UTC
        ],
    )
    yield engine
    engine.dispose()


def _range(first: str, last: str) -> dict[str, str]:
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}


def test_one_partition_and_its_metadata(url: str, engine: Engine, instance: dg.DagsterInstance) -> None:
    result = materialize_on(url, instance, [DAILY], partition_key="2024-02-29")
    (event,) = result.asset_materializations_for_node("deal_aggregations_daily")
    meta = {k: v.value for k, v in event.metadata.items()}
    assert (meta["dagster/row_count"], meta["deal_count"], meta["total_deal_size"]) == (1, 1, 20.0)
    assert meta["window"] == "[2024-02-29, 2024-03-01) UTC"
    assert "Account 2" in str(meta["preview"])
    schema = meta["dagster/column_schema"]
    assert isinstance(schema, dg.TableSchema)
    assert [c.name for c in schema.columns] == [
        "account_id",
        "aggregation_type",
        "aggregation_date",
        "total_deal_size",
        "deal_count",
    ]
    assert rows(engine, Cadence.DAILY) == [("2024-02-29", 2, "20.00", 1)]


def test_each_partition_of_a_range_run_carries_its_own_figures(
    url: str, engine: Engine, instance: dg.DagsterInstance
) -> None:
    add_deals(engine, [deal_row(5, 3, "2024-02-28T13:00:00+00:00", "5.50")])
    result = materialize_on(url, instance, [DAILY], tags=_range("2024-02-26", "2024-03-04"))
    by_day = {
        e.partition: {k: v.value for k, v in e.metadata.items()}
        for e in result.asset_materializations_for_node("deal_aggregations_daily")
    }
    assert len(by_day) == 8
    figures = {day: (m["dagster/row_count"], m["deal_count"], m["total_deal_size"]) for day, m in by_day.items()}
    assert figures["2024-02-28"] == (2, 2, 15.5)
    assert figures["2024-02-29"] == (1, 1, 20.0)
    assert figures["2024-02-26"] == (0, 0, 0.0)
    assert "no deals" in str(by_day["2024-02-26"]["preview"])
    assert "Account 3" in str(by_day["2024-02-28"]["preview"]) and "Account 2" not in str(
        by_day["2024-02-28"]["preview"]
    )
    assert all("rows_written" not in m and "partitions" not in m for m in by_day.values())
    history = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DAILY.key, asset_partitions=["2024-03-04"]), limit=1
    ).records
    assert history[0].asset_materialization is not None
    assert history[0].asset_materialization.metadata["deal_count"].value == 1


def test_range_run_equals_partition_runs(url: str, engine: Engine, instance: dg.DagsterInstance) -> None:
    result = materialize_on(url, instance, [DAILY], tags=_range("2024-02-26", "2024-03-04"))
    assert len(result.asset_materializations_for_node("deal_aggregations_daily")) == 8  # one event per partition
    materialize_on(url, instance, [WEEKLY], tags=_range("2024-02-26", "2024-03-04"))
    ranged = rows(engine, Cadence.DAILY)
    assert rows(engine, Cadence.WEEKLY) == [
        ("2024-02-26", 1, "10.00", 1),
        ("2024-02-26", 2, "20.00", 1),
        ("2024-02-26", 3, "30.00", 1),
        ("2024-03-04", 1, "40.00", 1),
    ]
    delete_all = create_warehouse_engine(url)
    with delete_all.begin() as conn:
        conn.exec_driver_sql("DELETE FROM deal_aggregations")
    for day in ["2024-02-28", "2024-02-29", "2024-03-01", "2024-03-04"]:
        materialize_on(url, instance, [DAILY], partition_key=day)
    assert (
        rows(engine, Cadence.DAILY)
        == ranged
        == [
            ("2024-02-28", 1, "10.00", 1),
            ("2024-02-29", 2, "20.00", 1),
            ("2024-03-01", 3, "30.00", 1),
            ("2024-03-04", 1, "40.00", 1),
        ]
    )


def test_monthly_chart_is_written_and_embedded(
    url: str, engine: Engine, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    result = materialize_on(url, instance, [MONTHLY], tags=_range("2024-02-01", "2024-03-01"))
    events = result.asset_materializations_for_node("deal_aggregations_monthly")
    meta = events[-1].metadata
    assert "chart" not in events[0].metadata  # one chart per run, on its last partition
    chart = Path(str(meta["chart_file"].value))
    assert chart == (tmp_path / "exports" / "charts" / "deal_totals_by_region_2024-03.png").resolve()
    png = chart.read_bytes()
    assert png.startswith(b"\x89PNG")
    assert stat.S_IMODE(chart.stat().st_mode) == 0o666 & ~_umask()
    width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR
    assert (width, height) == (1200, 560), "big enough to read at a glance"
    assert base64.b64encode(png).decode() in str(meta["chart"].value)
    assert rows(engine, Cadence.MONTHLY) == [
        ("2024-02-01", 1, "10.00", 1),
        ("2024-02-01", 2, "20.00", 1),
        ("2024-03-01", 1, "40.00", 1),
        ("2024-03-01", 3, "30.00", 1),
    ]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_charts_follow_the_export_directory_resource(
    url: str, engine: Engine, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    resources = {"warehouse": WarehouseResource(url=url), "exports": ExportDirectory(path=str(elsewhere))}
    dg.materialize([MONTHLY], resources=resources, instance=instance, partition_key="2024-03-01")
    assert [p.name for p in (elsewhere / "charts").iterdir()] == ["deal_totals_by_region_2024-03.png"]
    assert not (tmp_path / "exports" / "charts").exists()


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_checks_pass_then_catch_stale_partitions(url: str, engine: Engine, instance: dg.DagsterInstance) -> None:
    days = materialize_on(url, instance, [DAILY, REPORT_CHECKS[0]], tags=_range("2024-02-26", "2024-03-10"))
    weeks = materialize_on(
        url, instance, [WEEKLY, REPORT_CHECKS[1], REPORT_CHECKS[3]], tags=_range("2024-02-26", "2024-03-04")
    )
    assert _checks(days)["reconciles_with_deals"].passed
    checks = _checks(weeks)
    assert {name: c.passed for name, c in checks.items()} == {
        "reconciles_with_deals": True,
        "week_equals_sum_of_days": True,
    }
    delete_deal(engine, 3)  # deals changed, aggregations not refreshed yet
    recheck = materialize_on(
        url, instance, [DAILY, *REPORT_CHECKS[:1]], selection=dg.AssetSelection.checks_for_assets(DAILY)
    )
    (evaluation,) = recheck.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["first_mismatching_partitions"].value == ["2024-03-01"]


def test_jobs_run_ranges_and_schedules_follow_the_sync(url: str, engine: Engine, instance: dg.DagsterInstance) -> None:
    resources = {"warehouse": WarehouseResource(url=url), "exports": ExportDirectory(path=os.environ["CRM_EXPORT_DIR"])}
    bound = dg.Definitions.merge(build_defs(), dg.Definitions(resources=resources))
    job = bound.resolve_job_def("deal_aggregations_weekly_job")
    result = job.execute_in_process(instance=instance, tags=_range("2024-02-26", "2024-03-04"))
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "reconciles_with_deals": True,
        "week_equals_sum_of_days": True,  # no day materialized: nothing to judge
    }
    assert len(rows(engine, Cadence.WEEKLY)) == 4
    names = [
        "deal_aggregations_daily_schedule",
        "deal_aggregations_weekly_schedule",
        "deal_aggregations_monthly_schedule",
    ]
    crons = {n: bound.resolve_schedule_def(n).cron_schedule for n in names}
    assert crons == {
        "deal_aggregations_daily_schedule": "0 7 * * *",
        "deal_aggregations_weekly_schedule": "0 7 * * 1",
        "deal_aggregations_monthly_schedule": "0 7 1 * *",
    }
    schedule = bound.resolve_schedule_def("deal_aggregations_daily_schedule")
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2024, 3, 5, 7, tzinfo=UTC))
    (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == "2024-03-04"


def test_full_range() -> None:
    now = datetime(2026, 11, 24, 9, tzinfo=UTC)
    assert [full_range(a, now) for a in REPORT_ASSETS] == [
        ("2023-01-01", "2026-11-23"),
        ("2023-01-02", "2026-11-16"),
        ("2023-01-01", "2026-10-01"),
    ]
    assert [a.key.to_user_string() for a in REPORT_ASSETS] == [
        "deal_aggregations_daily",
        "deal_aggregations_weekly",
        "deal_aggregations_monthly",
    ]
