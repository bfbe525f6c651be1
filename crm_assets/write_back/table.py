"""Plain-text tables of planned and applied changes, for the CLI and the run's logs."""

from __future__ import annotations

from collections.abc import Sequence

HEADERS = ("crm_id", "old value", "new value", "status", "note")


def _cell(value: object) -> str:
    if value is None:
        return "(empty)"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def format_table(rows: Sequence[Sequence[object]], headers: Sequence[str] = HEADERS) -> str:
    """An aligned text table; None shows as (empty) so a cleared field is visible."""
    cells = [[str(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
