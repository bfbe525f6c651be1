"""The history assets, check and refresh sensor through Dagster (in process)."""

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.contracts import HISTORY_CHANGED_FROM, RANGE_END_TAG, RANGE_START_TAG
from crm_assets.defs.history.assets import daily_partitions, history_assets
from crm_assets.defs.history.checks import HISTORY_CHECKS
from crm_assets.defs.history.sensors import deal_history_refresh
from crm_assets.reports.pipeline import read_day_totals
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.schema import deal_history
from crm_assets_tests.history.test_pipeline import build_history
from crm_assets_tests.reports.helpers import materialize_on

HISTORY_ASSETS = history_assets()
pipeline_daily_asset = HISTORY_ASSETS[-1]


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CRM_EXPORT_DIR", str(tmp_path / "exports"))
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def engine(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    engine = create_warehouse_engine(url)
    migrate(engine)
    build_history(engine, monkeypatch)  # history from 2024-03-03
    yield engine
    engine.dispose()


def _meta(event: dg.AssetMaterialization) -> dict[str, Any]:
    return {k: v.value for k, v in event.metadata.items()}


def test_a_range_run_gives_each_day_its_figures(url: str, engine: Engine, instance: dg.DagsterInstance) -> None:
    tags = {RANGE_START_TAG: "2024-03-01", RANGE_END_TAG: "2024-03-19"}
    result = materialize_on(url, instance, [pipeline_daily_asset], tags=tags)
    events = {e.partition: _meta(e) for e in result.asset_materializations_for_node("pipeline_daily")}
    assert len(events) == 19  # one run, one event per day
    with engine.connect() as conn:
        totals = read_day_totals(conn, date(2024, 3, 1), date(2024, 3, 20))
    for key in ("2024-03-01", "2024-03-02"):
        assert events[key]["before_history"] is True and "2024-03-03" in events[key]["note"]
        assert "open_deal_count" not in events[key]
    for day, figures in totals.items():
        meta = events[day.isoformat()]
        assert meta["open_deal_count"] == figures.open_deal_count > 0
        assert meta["open_deal_value"] == float(figures.open_deal_value)
    last = events["2024-03-19"]
    assert last["days_before_history"] == 2 and last["history_first_day"] == "2024-03-03"
    chart = Path(last["chart_file"])
    assert chart.name == "open_pipeline_by_stage_2024-03-19.png" and chart.read_bytes().startswith(b"\x89PNG")
    assert "data:image/png;base64," in last["chart"]


def test_history_and_transitions_report_and_check(url: str, engine: Engine, instance: dg.DagsterInstance) -> None:
    result = materialize_on(url, instance, [*HISTORY_ASSETS[:2], *HISTORY_CHECKS])
    (history,) = result.asset_materializations_for_node("deal_history")
    meta = _meta(history)
    assert (meta["deals"], meta["current_versions"], meta["deleted_deals"]) == (6, 5, 1)
    assert meta["history_started_at"].startswith("2024-03-03T00:00:00")
    (transitions,) = result.asset_materializations_for_node("deal_stage_transitions")
    meta = _meta(transitions)
    assert meta["median_days_in_negotiation"] == 8.0
    assert meta["conversions_prospecting_to_negotiation"] == 1
    assert meta["conversions"] == {
        "Negotiation -> Closed-Lost": 1,
        "Negotiation -> Closed-Won": 1,
        "Negotiation -> Prospecting": 1,
        "Prospecting -> Negotiation": 1,
    }
    assert "deals_recomputed" not in meta, "the first build recomputes all"
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["mismatching_deals"].value == 0

    # Again: nothing new to recompute, unless a rebuild is asked for (as from the UI's Launchpad).
    (again,) = materialize_on(url, instance, [HISTORY_ASSETS[1]]).asset_materializations_for_node(
        "deal_stage_transitions"
    )
    assert _meta(again)["deals_recomputed"] == 0 and _meta(again)["conversions"] == meta["conversions"]
    rebuild = {"ops": {"deal_stage_transitions": {"config": {"rebuild": True}}}}
    (rebuilt,) = materialize_on(url, instance, [HISTORY_ASSETS[1]], run_config=rebuild).asset_materializations_for_node(
        "deal_stage_transitions"
    )
    assert "deals_recomputed" not in _meta(rebuilt) and _meta(rebuilt)["conversions"] == meta["conversions"]

    with engine.begin() as conn:
        conn.execute(sa.update(deal_history).where(deal_history.c.deal_id == 3).values(deal_size=1))
    result = materialize_on(url, instance, [HISTORY_ASSETS[0], *HISTORY_CHECKS])
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["first_mismatching_deal_ids"].value == [3]


def _report_deals(instance: dg.DagsterInstance, changed_from: str | None) -> None:
    metadata = {HISTORY_CHANGED_FROM: changed_from} if changed_from else {}
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="deals", metadata=metadata))


def test_the_sensor_starts_after_the_newest_deals_materialization(instance: dg.DagsterInstance) -> None:
    """Starting the UI after `crm-assets run` (which refreshed the history itself) requests nothing."""
    assert isinstance(deal_history_refresh(dg.build_sensor_context(instance=instance)), dg.SkipReason)
    _report_deals(instance, "2024-03-12")
    context = dg.build_sensor_context(instance=instance)
    assert isinstance(deal_history_refresh(context), dg.SkipReason)
    assert context.cursor is not None
    again = deal_history_refresh(dg.build_sensor_context(instance=instance, cursor=context.cursor))
    assert isinstance(again, dg.SkipReason)


def test_the_sensor_recomputes_from_the_earliest_changed_day(instance: dg.DagsterInstance) -> None:
    _report_deals(instance, None)  # what ran before the sensor's first tick
    first = dg.build_sensor_context(instance=instance)
    deal_history_refresh(first)
    _report_deals(instance, "2024-03-12")
    _report_deals(instance, None)  # a write-back or a run without new versions
    _report_deals(instance, "2024-03-10")
    result = deal_history_refresh(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert isinstance(result, dg.SensorResult)
    requests = {r.job_name: r for r in result.run_requests or []}
    assert set(requests) == {"deal_history_job", "pipeline_daily_job"}
    last = daily_partitions().get_last_partition_key()
    assert requests["pipeline_daily_job"].tags[RANGE_START_TAG] == "2024-03-10"
    assert requests["pipeline_daily_job"].tags[RANGE_END_TAG] == last

    _report_deals(instance, None)
    quiet = deal_history_refresh(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(quiet, dg.SensorResult)
    assert [r.job_name for r in quiet.run_requests or []] == ["deal_history_job"]
    done = deal_history_refresh(dg.build_sensor_context(instance=instance, cursor=quiet.cursor))
    assert isinstance(done, dg.SkipReason)
