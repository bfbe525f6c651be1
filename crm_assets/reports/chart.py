"""A picture of the monthly report: deal totals per month, stacked by account region."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from crm_assets.reports.sql import stored_money_sum
from crm_assets.reports.windows import Cadence
from crm_assets.warehouse.schema import CLEAN_TABLES, deal_aggregations

ACCOUNTS = CLEAN_TABLES["accounts"]
# Freshsales amounts are in each account's currency; the warehouse keeps the number as the CRM sends it.
AMOUNT_UNIT = "CRM currency"


def monthly_totals_by_region(
    conn: sa.Connection, first_month: date, last_month: date
) -> dict[str, dict[date, Decimal]]:
    """{region: {month: total}} from the stored monthly rows of [first_month, last_month]."""
    a = deal_aggregations.c
    query = (
        sa.select(ACCOUNTS.c.region, a.aggregation_date, stored_money_sum(conn.dialect, a.total_deal_size))
        .join(ACCOUNTS, ACCOUNTS.c.account_id == a.account_id)
        .where(
            a.aggregation_type == Cadence.MONTHLY.value,
            a.aggregation_date >= first_month,
            a.aggregation_date <= last_month,
        )
        .group_by(ACCOUNTS.c.region, a.aggregation_date)
    )
    totals: dict[str, dict[date, Decimal]] = {}
    for region, month, total in conn.execute(query):
        totals.setdefault(region, {})[month] = Decimal(str(total)).quantize(Decimal("0.01"))
    return totals


def render_region_chart(totals: dict[str, dict[date, Decimal]], months: list[date], title: str) -> bytes:
    """A stacked bar chart as PNG bytes: 1200x560 px, amounts with thousands separators, legend beside the bars."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(12, 5.6), dpi=100)
    axes = figure.add_subplot()
    x = list(range(len(months)))
    bottom = [0.0] * len(months)
    for region in sorted(totals):
        heights = [float(totals[region].get(m, 0)) for m in months]
        axes.bar(x, heights, bottom=bottom, label=region, width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    step = max(1, len(months) // 18)
    axes.set_xticks(x[::step], [m.strftime("%Y-%m") for m in months][::step], rotation=45, ha="right", fontsize=10)
    axes.set_xlabel("month (UTC)", fontsize=11)
    axes.set_ylabel(f"total deal size ({AMOUNT_UNIT})", fontsize=11)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
    axes.tick_params(axis="y", labelsize=10)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_title(title, fontsize=13)
    if totals:
        # Beside the plot, never over the first bars.
        axes.legend(title="account region", fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
