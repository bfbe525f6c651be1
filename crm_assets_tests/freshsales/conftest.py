"""Fixtures for client tests: a fake CRM and clients that never really sleep."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from crm_assets.freshsales.client import FreshsalesClient
from crm_assets_tests.freshsales.fakes import API_KEY, BASE_URL, FakeCrm


class FakeSleep:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def fake_crm() -> FakeCrm:
    return FakeCrm()


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def make_client(fake_crm: FakeCrm, fake_sleep: FakeSleep) -> Iterator[Callable[..., FreshsalesClient]]:
    """Clients on the fake CRM; budgets off unless a test turns them on."""
    clients: list[FreshsalesClient] = []

    def build(**overrides: Any) -> FreshsalesClient:
        options: dict[str, Any] = {
            "transport": fake_crm.transport(),
            "rate_limit_per_minute": 0,
            "rate_limit_per_hour": 0,
            "sleep": fake_sleep,
        }
        options.update(overrides)
        client = FreshsalesClient(options.pop("base_url", BASE_URL), options.pop("api_key", API_KEY), **options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()
