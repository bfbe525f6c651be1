"""A picture of the open pipeline over time: open deal value at the end of each day, stacked by stage."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from crm_assets.reports.sql import date_in, stored_money_sum
from crm_assets.warehouse.schema import pipeline_daily


def open_value_by_stage(conn: sa.Connection, start: date, end: date) -> dict[str, dict[date, Decimal]]:
    """{stage: {day: open value}} from the stored rows of the days [start, end)."""
    p = pipeline_daily.c
    query = (
        sa.select(p.deal_stage, p.day, stored_money_sum(conn.dialect, p.open_deal_value))
        .where(date_in(p.day, start, end))
        .group_by(p.deal_stage, p.day)
    )
    values: dict[str, dict[date, Decimal]] = {}
    for stage, day, value in conn.execute(query):
        day = day if isinstance(day, date) else date.fromisoformat(str(day))
        values.setdefault(stage, {})[day] = Decimal(str(value)).quantize(Decimal("0.01"))
    return values


def render_pipeline_chart(values: dict[str, dict[date, Decimal]], days: list[date], title: str) -> bytes:
    """A stacked area chart as PNG bytes (small enough to embed in run metadata)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6), dpi=80)
    axes = figure.add_subplot()
    stages = sorted(values)
    x = list(range(len(days)))
    if stages:
        series = [[float(values[s].get(d, 0)) for d in days] for s in stages]
        axes.stackplot(x, series, labels=stages)
        axes.legend(fontsize=8, loc="upper left")
    else:
        axes.text(0.5, 0.5, "no history for these days yet", ha="center", va="center", transform=axes.transAxes)
    step = max(1, len(days) // 12)
    axes.set_xticks(x[::step], [d.isoformat() for d in days][::step], rotation=45, ha="right", fontsize=8)
    axes.set_ylabel("open deal value")
    axes.set_title(title, fontsize=10)
    axes.ticklabel_format(axis="y", style="plain")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
