"""Dated JSON and CSV exports of the clean tables, written atomically."""

import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from crm_assets.domains import DOMAINS
from crm_assets.resources import WarehouseResource
from crm_assets.warehouse.clean_load import read_clean_rows

EXPORT_GROUP = "crm_exports"


class ExportDirectory(dg.ConfigurableResource):
    """Where exports go (CRM_EXPORT_DIR)."""

    path: str = Field(default="output", description="Folder for the dated JSON/CSV files")


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Readers see the old file or the new one, never half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def export_frame(frame: pl.DataFrame, directory: Path, stem: str) -> list[Path]:
    """`stem`.json (an array of objects) and `stem`.csv; money stays exact (decimal strings)."""
    printable = frame.with_columns(pl.col(pl.Decimal).cast(pl.String))
    json_path, csv_path = directory / f"{stem}.json", directory / f"{stem}.csv"
    write_atomically(json_path, printable.write_json)
    write_atomically(csv_path, printable.write_csv)
    return [json_path, csv_path]


@dg.asset(
    name="crm_exports",
    group_name=EXPORT_GROUP,
    deps=[dg.AssetKey(d.name) for d in DOMAINS],
    kinds={"json", "csv"},
    description="YYYY-MM-DD_<domain>.json and .csv per domain in CRM_EXPORT_DIR (the run's UTC date).",
)
def crm_exports(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, exports: ExportDirectory
) -> dg.MaterializeResult:
    day = datetime.now(UTC).date().isoformat()
    directory = Path(exports.path).resolve()
    written: dict[str, int] = {}
    files: list[str] = []
    with warehouse.get_engine().connect() as conn:
        for domain in DOMAINS:
            frame = read_clean_rows(conn, domain)
            files += [str(p) for p in export_frame(frame, directory, f"{day}_{domain.name}")]
            written[domain.name] = frame.height
    context.log.info(f"exported {', '.join(f'{n:,} {d}' for d, n in written.items())} to {directory}")
    return dg.MaterializeResult(
        metadata={
            "directory": dg.MetadataValue.path(str(directory)),
            "files": dg.MetadataValue.json(files),
            **{f"{d}_rows": n for d, n in written.items()},
        }
    )
