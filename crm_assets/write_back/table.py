"""The one table of a write-back's changes, planned or done: for the CLI, the run's logs and its metadata."""

from __future__ import annotations

from collections.abc import Sequence

from crm_assets.write_back.model import ChangeOutcome, Status

HEADERS = ("crm_id", "old value", "new value", "status", "note")
_ALREADY_SET = "already set"


def _cell(value: object) -> str:
    if value is None:
        return "(empty)"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _note(outcome: ChangeOutcome) -> str:
    if outcome.error:
        return outcome.error
    return _ALREADY_SET if outcome.status == Status.SKIPPED else ""


def _aligned(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def change_table(outcomes: Sequence[ChangeOutcome]) -> str:
    """An aligned text table, one row per record; None shows as (empty) so a cleared field is visible."""
    rows = [
        [_cell(o.crm_id), _cell(o.old_text), _cell(o.new_text), Status(o.status).value, _note(o).replace("\n", " ")]
        for o in outcomes
    ]
    return _aligned([list(HEADERS), *rows])
