"""Clean runs of related domains at the same time wait for each other instead of deadlocking."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from crm_assets.domains import ACCOUNTS, DEALS, Domain
from crm_assets.warehouse import clean_load
from crm_assets.warehouse.clean_load import clean_changes
from crm_assets.warehouse.engine import create_warehouse_engine, migrate
from crm_assets_tests.warehouse.test_incremental_clean import account, clean_all, deal, write


@pytest.mark.postgres
def test_an_account_deletion_and_a_deals_run_do_not_deadlock(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine: Engine = create_warehouse_engine(pg_url)
    migrate(engine)
    write(engine, ACCOUNTS, [account(1, 77, 1)])
    write(engine, DEALS, [deal(100, 1, 77, 1)])
    clean_all(engine)
    write(engine, ACCOUNTS, [], deleted=[account(1, 77, 5)])  # cascades into deals
    write(engine, DEALS, [deal(100, 1, 77, 9, stage="Closed-Won")])  # the deals run touches the same row

    mark_dependents = clean_load._mark_dependents

    def slowly(*args: Any, **kwargs: Any) -> None:  # widen the window the deals run starts in
        time.sleep(1.0)
        mark_dependents(*args, **kwargs)

    monkeypatch.setattr(clean_load, "_mark_dependents", slowly)
    errors: list[str] = []

    def clean(domain: Domain, delay: float) -> None:
        time.sleep(delay)
        try:
            with engine.begin() as conn:
                clean_changes(conn, domain, "run")
        except Exception as exc:  # collected and asserted below
            errors.append(f"{domain.name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=clean, args=(ACCOUNTS, 0.0)), threading.Thread(target=clean, args=(DEALS, 0.5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    engine.dispose()
