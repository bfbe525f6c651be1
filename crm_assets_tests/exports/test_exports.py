"""Export and chart files: atomic, the umask's mode, one ISO 8601 timestamp format, a full disk named."""

from __future__ import annotations

import csv
import errno
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from crm_assets.defs.exports.assets import crm_exports, export_frame
from crm_assets.files import OutputWriteError, write_atomically, write_bytes_atomically
from crm_assets.resources import ExportDirectory, WarehouseResource


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "deal_id": [1, 2],
            "deal_size": [Decimal("10.50"), Decimal("3.00")],
            "created_at": [
                datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
                datetime(2024, 3, 2, 8, 30, 15, 250000, tzinfo=UTC),
            ],
            "updated_at": [datetime(2024, 3, 1, 12, 0), datetime(2024, 3, 2, 9, 0)],  # naive = UTC (SQLite)
        },
        schema_overrides={"deal_size": pl.Decimal(18, 2)},
    )


def test_csv_and_json_write_the_same_iso_8601_timestamps(tmp_path: Path) -> None:
    json_path, csv_path = export_frame(_frame(), tmp_path, "2024-03-02_deals")
    from_json = json.loads(json_path.read_text())
    with csv_path.open() as handle:
        from_csv = list(csv.DictReader(handle))
    expected = [
        ("2024-03-01T12:00:00+00:00", "2024-03-01T12:00:00+00:00"),
        ("2024-03-02T08:30:15.250+00:00", "2024-03-02T09:00:00+00:00"),
    ]
    assert [(r["created_at"], r["updated_at"]) for r in from_json] == expected
    assert [(r["created_at"], r["updated_at"]) for r in from_csv] == expected
    assert [r["deal_size"] for r in from_json] == [r["deal_size"] for r in from_csv] == ["10.50", "3.00"]
    assert all(datetime.fromisoformat(v).tzinfo is not None for pair in expected for v in pair)


def test_exports_and_charts_get_the_mode_the_umask_gives(tmp_path: Path, umask_022: None) -> None:
    paths = export_frame(_frame(), tmp_path, "day_deals")
    write_bytes_atomically(tmp_path / "charts" / "chart.png", b"\x89PNG")
    for path in [*paths, tmp_path / "charts" / "chart.png"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_full_disk_names_the_folder_and_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "2024-03-02_deals.csv"
    target.write_text("previous")

    def full_disk(path: Path) -> None:
        path.write_text("half a fi")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputWriteError) as raised:
        write_atomically(target, full_disk)
    message = str(raised.value)
    assert str(tmp_path) in message and "no space left" in message and "CRM_EXPORT_DIR" in message
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary file left


def test_any_failure_removes_the_temporary_file(tmp_path: Path) -> None:
    def broken(path: Path) -> None:
        path.write_text("partial")
        raise ValueError("serializer bug")

    with pytest.raises(ValueError, match="serializer bug"):
        write_atomically(tmp_path / "x.json", broken)
    assert list(tmp_path.iterdir()) == []


def test_the_export_asset_fails_naming_the_folder_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(self: pl.DataFrame, file: object = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_json", full_disk)
    folder = tmp_path / "exports"
    result = dg.materialize(
        [crm_exports],
        resources={
            "warehouse": WarehouseResource(url=f"sqlite:///{tmp_path / 'warehouse.db'}"),
            "exports": ExportDirectory(path=str(folder)),
        },
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
    assert description is not None
    assert f"in the folder {folder}: no space left on the device" in description
    assert not any(folder.iterdir())
