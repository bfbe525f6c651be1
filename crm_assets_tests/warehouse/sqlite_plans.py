"""Recording SQLite's query plan of every statement a real run executes, at the moment it executes.

Staging tables are temporary and gone after their transaction, so plans are taken by an SQLAlchemy
`before_cursor_execute` listener on the same connection, with the statement's own parameters.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

_PLANNED = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
_SCAN = re.compile(r"^SCAN (?P<table>\S+)(?P<rest>.*)$")
_LOOP = re.compile(r"^(SCAN|SEARCH) ")
_MATERIALIZE = re.compile(r"^MATERIALIZE (?P<name>\S+)")
_PROJECT = "crm_assets/"
_PLUMBING = ("crm_assets/warehouse/bulk.py",)  # statements built here belong to their caller


@dataclass(frozen=True)
class PlanRow:
    id: int
    parent: int
    detail: str


@dataclass
class RecordedPlan:
    issued_by: str  # "crm_assets/warehouse/clean_load.py:_decide"
    sql: str
    rows: list[PlanRow]
    table_sizes: dict[str, int]  # rows in each table the plan scans, when the plan ran

    def ancestors(self, row: PlanRow) -> Iterator[PlanRow]:
        by_id = {r.id: r for r in self.rows}
        parent = by_id.get(row.parent)
        while parent is not None:
            yield parent
            parent = by_id.get(parent.parent)

    def correlated_scans(self, min_rows: int) -> list[str]:
        """Full scans of a table of at least `min_rows` rows inside a correlated subquery: n x m work."""
        found = []
        for row in self.rows:
            scan = _SCAN.match(row.detail)
            if scan is None or "USING INDEX" in scan["rest"] or "USING COVERING INDEX" in scan["rest"]:
                continue
            if self.table_sizes.get(scan["table"], 0) < min_rows:
                continue
            if any(a.detail.startswith("CORRELATED ") for a in self.ancestors(row)):
                found.append(f"{self.issued_by}: {row.detail} ({self.table_sizes[scan['table']]:,} rows)")
        return found

    def nested_scans(self, min_rows: int) -> list[str]:
        """Full scans on the inner side of a join: a table of at least `min_rows` rows, or a subquery the
        plan materializes (its size unknown here), scanned once per row of the loop before it."""
        materialized = {m["name"] for r in self.rows if (m := _MATERIALIZE.match(r.detail))}
        found = []
        for row in self.rows:
            scan = _SCAN.match(row.detail)
            if scan is None or "USING INDEX" in scan["rest"] or "USING COVERING INDEX" in scan["rest"]:
                continue
            outer = [r for r in self.rows if r.parent == row.parent and r.id < row.id and _LOOP.match(r.detail)]
            large = self.table_sizes.get(scan["table"], 0) >= min_rows or scan["table"] in materialized
            if outer and large:
                found.append(f"{self.issued_by}: {row.detail} inside {outer[-1].detail}")
        return found


@dataclass
class PlanRecorder:
    plans: list[RecordedPlan] = field(default_factory=list)

    def issued_by(self, module: str) -> list[RecordedPlan]:
        return [p for p in self.plans if p.issued_by.startswith(module)]

    def before_cursor_execute(
        self, conn: sa.Connection, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        if executemany or not statement.lstrip().upper().startswith(_PLANNED):
            return
        driver = conn.connection.driver_connection
        assert driver is not None
        explained = driver.execute(f"EXPLAIN QUERY PLAN {statement}", parameters or ()).fetchall()
        rows = [PlanRow(id, parent, detail) for id, parent, _, detail in explained]
        sizes = {}
        for row in rows:
            if scan := _SCAN.match(row.detail):
                sizes[scan["table"]] = _row_count(driver, scan["table"])
        self.plans.append(RecordedPlan(_issuer(), statement, rows, sizes))


def _row_count(driver: Any, table: str) -> int:
    try:
        return int(driver.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
    except Exception:  # an alias, a CTE or a subquery: no table of that name
        return 0


def _issuer() -> str:
    """The innermost project function (bulk helpers aside) on the stack: who issued the statement."""
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename.replace("\\", "/")
        if _PROJECT in path and "crm_assets_tests/" not in path and not path.endswith(_PLUMBING):
            return f"{path[path.rindex(_PROJECT) :]}:{frame.name}"
    return "unknown"


@contextmanager
def recording_plans(engine: sa.Engine) -> Iterator[PlanRecorder]:
    recorder = PlanRecorder()
    sa.event.listen(engine, "before_cursor_execute", recorder.before_cursor_execute)
    try:
        yield recorder
    finally:
        sa.event.remove(engine, "before_cursor_execute", recorder.before_cursor_execute)
