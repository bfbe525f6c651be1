"""The CRM request budget kept in the warehouse, so that every process of a deployment spends one budget.

PostgreSQL keeps it in the `crm_rate_budget` table (one row per CRM account, updated under
SELECT ... FOR UPDATE); an SQLite warehouse keeps it in a locked file beside the database file, since
every process using that file runs on the same machine.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Engine

from crm_assets.freshsales.ratelimit import BudgetState, BudgetStore, FileBudgetStore, MemoryBudgetStore
from crm_assets.warehouse.dialect import is_postgres, is_private_memory
from crm_assets.warehouse.schema import crm_rate_budget

T = TypeVar("T")


class PostgresBudgetStore:
    """One row of `crm_rate_budget`, read and written in one transaction that holds its row lock."""

    def __init__(self, engine: Engine, account: str) -> None:
        self._engine = engine
        self._account = account

    def update(self, change: Callable[[BudgetState], T]) -> T:
        table = crm_rate_budget
        locked = sa.select(table.c.state).where(table.c.account == self._account).with_for_update()
        with self._engine.begin() as conn:
            # Losing the last few grants in a crash is harmless; waiting for a WAL flush on every request is not.
            conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            raw = conn.execute(locked).scalar_one_or_none()
            if raw is None:
                self._create_row(conn)
                raw = conn.execute(locked).scalar_one()
            state = BudgetState.from_json(raw)
            result = change(state)
            conn.execute(
                table.update()
                .where(table.c.account == self._account)
                .values(state=state.to_json().decode(), updated_at=datetime.now(UTC))
            )
        return result

    def _create_row(self, conn: sa.Connection) -> None:
        row = {"account": self._account, "state": BudgetState().to_json().decode(), "updated_at": datetime.now(UTC)}
        conn.execute(insert(crm_rate_budget).values(row).on_conflict_do_nothing(index_elements=["account"]))


def crm_account(base_url: str) -> str:
    """Whose budget a CRM base URL spends: Freshsales counts per account, and an account is a host."""
    try:
        netloc = httpx.URL(base_url.strip()).netloc.decode("ascii")
    except (httpx.InvalidURL, UnicodeDecodeError):
        netloc = ""
    return netloc.lower() or base_url.strip()


def budget_file(database: str, account: str) -> Path:
    """The file beside an SQLite database that holds the budget of CRM `account`."""
    path = Path(database)
    slug = "".join(c if c.isalnum() else "_" for c in account).strip("_")[:80]
    return path.with_name(f"{path.name}.{slug}.crm-budget.json")


def shared_budget_store(engine: Engine, crm_base_url: str) -> BudgetStore:
    """Where the deployment of the warehouse behind `engine` keeps the budget of the CRM at `crm_base_url`."""
    account = crm_account(crm_base_url)
    if is_postgres(engine):
        return PostgresBudgetStore(engine, account)
    if is_private_memory(engine):
        return MemoryBudgetStore()  # no other process to share with
    return FileBudgetStore(budget_file(str(engine.url.database), account))
