"""Metadata helpers shared by the assets: table schemas and previews users see in the UI."""

from __future__ import annotations

import dagster as dg
import polars as pl

from crm_assets.domains import ColumnType, Domain

_SQL_TYPE_NAMES = {
    ColumnType.TEXT: "text",
    ColumnType.BIGINT: "bigint",
    ColumnType.INTEGER: "integer",
    ColumnType.DECIMAL: "numeric(18,2)",
    ColumnType.DATE: "date",
    ColumnType.TIMESTAMP: "timestamptz",
    ColumnType.ENUM: "text",
}


def table_schema(domain: Domain) -> dg.TableSchema:
    columns = [
        dg.TableColumn(
            name=c.name,
            type=_SQL_TYPE_NAMES[c.type],
            description=(f"one of {', '.join(c.choices)}; " if c.choices else "") + f"from Freshsales {c.source}",
            constraints=dg.TableColumnConstraints(nullable=c.nullable, unique=c.name == domain.business_key),
        )
        for c in domain.columns
    ]
    columns += [
        dg.TableColumn("crm_id", "bigint", "Freshsales record id", dg.TableColumnConstraints(nullable=False)),
        dg.TableColumn("updated_at", "timestamptz", "Freshsales updated_at, UTC"),
    ]
    return dg.TableSchema(columns=columns)


def markdown_table(frame: pl.DataFrame, limit: int = 10) -> str:
    """A small markdown preview of a frame (the UI renders it as a table)."""
    head = frame.head(limit)
    if head.is_empty():
        return "_no rows_"

    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * head.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in head.iter_rows()]
    if frame.height > limit:
        lines.append(f"\n_{limit} of {frame.height:,} rows_")
    return "\n".join(lines)


# Who answers for the assets, and tags to filter them by in the UI's asset catalog.
ASSET_OWNERS = ["team:crm-data"]


def capability_tags(capability: str) -> dict[str, str]:
    return {"capability": capability, "source": "freshsales"}


AGGREGATION_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("account_id", "bigint", "the deals' account (accounts.account_id)"),
        dg.TableColumn(
            "aggregation_type",
            "text",
            "daily, weekly or monthly",
            dg.TableColumnConstraints(nullable=False),
        ),
        dg.TableColumn(
            "aggregation_date",
            "date",
            "first day of the UTC window (Monday for weeks, the 1st for months)",
            dg.TableColumnConstraints(nullable=False),
        ),
        dg.TableColumn(
            "total_deal_size",
            "numeric(38,2)",
            "COALESCE(SUM(deal_size), 0) of the deals created in the window",
            dg.TableColumnConstraints(nullable=False),
        ),
        dg.TableColumn(
            "deal_count",
            "integer",
            "COUNT(*) of the deals created in the window",
            dg.TableColumnConstraints(nullable=False),
        ),
    ]
)
