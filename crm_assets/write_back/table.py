"""The one table of a write-back's changes, planned or done: for the CLI, the run's logs and its metadata."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from crm_assets.write_back.model import ChangeOutcome, Status

HEADERS = ("crm_id", "old value", "new value", "status", "note")
_ALREADY_SET = "already set"
# Characters that break a row on a terminal: controls (a carriage return rewrites the line, a tab shifts
# the columns), line and paragraph separators, and the bidirectional overrides that reorder what follows.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _visible(text: str) -> str:
    """`text` with every row-breaking character written as Python escapes it: \\r, \\t, \\x07, \\u2028."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in _ESCAPED_CATEGORIES or char in _BIDI_CONTROLS
        else char
        for char in text
    )


def _cell(value: object) -> str:
    if value is None:
        return "(empty)"
    text = _visible(str(value))
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
    """An aligned text table, one row per record; None shows as (empty) so a cleared field is visible, and
    control characters as escapes, so that a value cannot break or overwrite a row."""
    rows = [
        [_cell(o.crm_id), _cell(o.old_text), _cell(o.new_text), Status(o.status).value, _visible(_note(o))]
        for o in outcomes
    ]
    return _aligned([list(HEADERS), *rows])
