"""Every statement of the raw merge and reconciliation is planned in n log n on SQLite (issue 14).

A correlated subquery must look its rows up by key; scanning a table (or a whole scan's staged rows) once
per outer row is quadratic, which is what made a 100k-deal first sync spend minutes in one UPDATE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from crm_assets.domains import ACCOUNTS
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets.warehouse.raw import RawWriter
from crm_assets.warehouse.schema import metadata


def account(crm_id: Any, **extra: Any) -> dict[str, Any]:
    return {"id": crm_id, "name": f"A{crm_id}", "updated_at": "2024-01-01T00:00:00Z"} | extra


def plan_rows(conn: sa.Connection, statement: str, parameters: Any) -> list[tuple[int, int, str]]:
    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
    return [(int(r[0]), int(r[1]), str(r[3])) for r in rows]


def quadratic_steps(plan: list[tuple[int, int, str]]) -> list[str]:
    """Steps inside a correlated subquery that read more than the rows of one key."""
    parent = {node: up for node, up, _ in plan}
    correlated = {node for node, _, detail in plan if detail.startswith("CORRELATED")}

    def inside(node: int) -> bool:
        while node in parent and node != 0:
            node = parent[node]
            if node in correlated:
                return True
        return False

    def by_key(detail: str) -> bool:
        return detail.startswith("SEARCH") and "crm_id" in detail.rsplit("(", 1)[-1]  # the terms, not the index name

    return [detail for node, _, detail in plan if inside(node) and not by_key(detail)]


def test_merge_and_reconciliation_statements_look_rows_up_by_key(tmp_path: Path) -> None:
    engine = create_warehouse_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    migrate(engine)
    with engine.begin() as conn:
        writer = RawWriter(conn, ACCOUNTS, "run")
        writer.add([account(i) for i in range(1, 3001)])
        writer.merge(reconcile=False)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE")):
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    with engine.begin() as conn:
        writer = RawWriter(conn, ACCOUNTS, "run")
        writer.add([account(i) for i in range(1, 2001)] + [account(None), account(9, deep=[[[]]] * 2)])
        writer.add([account(2002, is_deleted=True)], deleted=True)
        writer.deletion_counts(reconcile=True)
        writer.merge(reconcile=True, confirm=lambda ids: dict.fromkeys(ids))
    sa.event.remove(engine, "before_cursor_execute", capture)

    assert any("NOT (EXISTS" in s for s, _ in statements)  # the unlisted-rows lookup was planned
    with engine.connect() as conn:
        plans = {statement: quadratic_steps(plan_rows(conn, statement, p)) for statement, p in statements}
    found = {statement: steps for statement, steps in plans.items() if steps}
    assert found == {}


def test_the_scan_tables_migration_matches_the_schema(warehouse_engine: Any) -> None:
    scan_tables = {"raw_scans", "raw_scan_views", "raw_scan_records"}

    def ours(diff: Any) -> bool:
        items = diff if isinstance(diff, list) else [diff]
        return any(
            getattr(getattr(part, "table", None), "name", None) in scan_tables
            or getattr(part, "name", None) in scan_tables
            for item in items
            for part in item
            if not isinstance(part, str)
        )

    with warehouse_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diffs if ours(d)] == []
