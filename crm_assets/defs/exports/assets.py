"""Dated JSON and CSV exports of the clean tables, written atomically."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from crm_assets.defs.metadata import ASSET_OWNERS, capability_tags
from crm_assets.domains import DOMAIN_NAMES, configured_domains
from crm_assets.files import OutputWriteError, write_atomically
from crm_assets.resources import ExportDirectory, WarehouseResource
from crm_assets.warehouse.clean_load import read_clean_rows

EXPORT_GROUP = "crm_exports"
# ISO 8601 with the UTC offset, in CSV and JSON alike; fractional seconds only when there are any.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"


def printable(frame: pl.DataFrame) -> pl.DataFrame:
    """Money as exact decimal strings; timestamps in UTC as ISO 8601 with offset, the same in both files."""
    timestamps = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.Datetime)]
    as_utc = [
        (pl.col(n).dt.replace_time_zone("UTC") if frame.schema[n].time_zone is None else pl.col(n))  # type: ignore[attr-defined]
        .dt.convert_time_zone("UTC")
        .dt.to_string(TIMESTAMP_FORMAT)
        for n in timestamps
    ]
    return frame.with_columns(pl.col(pl.Decimal).cast(pl.String), *as_utc)


def export_frame(frame: pl.DataFrame, directory: Path, stem: str) -> list[Path]:
    """`stem`.json (an array of objects) and `stem`.csv."""
    rows = printable(frame)
    json_path, csv_path = directory / f"{stem}.json", directory / f"{stem}.csv"
    write_atomically(json_path, rows.write_json)
    write_atomically(csv_path, rows.write_csv)
    return [json_path, csv_path]


@dg.asset(
    name="crm_exports",
    group_name=EXPORT_GROUP,
    deps=[dg.AssetKey(name) for name in DOMAIN_NAMES],
    kinds={"json", "csv"},
    owners=ASSET_OWNERS,
    tags=capability_tags("exports"),
    description="`YYYY-MM-DD_{domain}.json` and `.csv` per domain (accounts, contacts, deals) in CRM_EXPORT_DIR, "
    "dated with the run's UTC day; timestamps in ISO 8601 with offset.",
)
def crm_exports(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, exports: ExportDirectory
) -> dg.MaterializeResult[None]:
    day = datetime.now(UTC).date().isoformat()
    directory = exports.folder
    written: dict[str, int] = {}
    files: list[str] = []
    with warehouse.get_engine().connect() as conn:
        for domain in configured_domains():
            frame = read_clean_rows(conn, domain)
            try:
                files += [str(p) for p in export_frame(frame, directory, f"{day}_{domain.name}")]
            except OutputWriteError as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
            written[domain.name] = frame.height
    context.log.info(f"exported {', '.join(f'{n:,} {d}' for d, n in written.items())} to {directory}")
    return dg.MaterializeResult(
        metadata={
            "directory": dg.MetadataValue.path(str(directory)),
            "files": dg.MetadataValue.json(files),
            **{f"{d}_rows": n for d, n in written.items()},
        }
    )
