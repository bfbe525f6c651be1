"""The change table the CLI prints and the run logs: one line per record whatever the values hold."""

from __future__ import annotations

import unicodedata

import pytest

from crm_assets.write_back import ChangeOutcome, Status, change_table

LINE_BREAKING = frozenset({"Cc", "Zl", "Zp"})


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("Acme\rFAILED", "Acme\\rFAILED", id="carriage-return"),
        pytest.param("Renewal\t2027", "Renewal\\t2027", id="tab"),
        pytest.param("two\nlines", "two\\nlines", id="newline"),
        pytest.param("bell\x07", "bell\\x07", id="bell"),
        pytest.param("para\u2029graph", "para\\u2029graph", id="paragraph-separator"),
        pytest.param("\u202eevil", "\\u202eevil", id="right-to-left-override"),
    ],
)
def test_control_characters_in_a_value_or_a_note_show_escaped_so_each_row_stays_one_line(text: str, shown: str) -> None:
    table = change_table(
        [
            ChangeOutcome(1, Status.FAILED, text, "Acme", error=f"the CRM holds {text}"),
            ChangeOutcome(2, Status.SKIPPED, "a", "a"),
        ]
    )

    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith(f"1       {shown}") and lines[2].endswith(f"the CRM holds {shown}")
    assert lines[3].startswith("2 ")
    assert not [c for c in table.replace("\n", "") if unicodedata.category(c) in LINE_BREAKING]
