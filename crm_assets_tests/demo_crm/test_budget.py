"""The demo CRM's account budget: 429s with x-ratelimit-* headers and no Retry-After, per-minute and per-hour."""

from __future__ import annotations

import pytest

from crm_assets.demo_crm import DemoCrm, Faults
from crm_assets.demo_crm.budget import ServerBudget
from crm_assets_tests.demo_crm.conftest import client_for, small_config


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_minute_and_hour_windows() -> None:
    clock = Clock()
    budget = ServerBudget(3, 5, clock=clock)
    answers = [budget.admit() for _ in range(4)]
    assert [ok for ok, _ in answers] == [True, True, True, False]
    assert answers[2][1] == {"x-ratelimit-limit": "3", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "60"}
    clock.now += 45
    assert budget.admit() == (
        False,
        {"x-ratelimit-limit": "3", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "15"},
    )
    clock.now += 15  # the minute resets; the hour has 2 left
    assert [budget.admit()[0] for _ in range(3)] == [True, True, False]
    ok, headers = budget.admit()
    assert not ok and headers == {"x-ratelimit-limit": "5", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "3540"}
    assert budget.log.admitted == 5 and budget.log.rejected_at == [0.0, 45.0, 60.0, 60.0]


def test_a_scaled_minute_reports_reset_to_the_hundredth() -> None:
    clock = Clock()
    budget = ServerBudget(2, 0, minute_seconds=6.0, clock=clock)
    budget.admit()
    clock.now += 1.25
    assert budget.admit()[1]["x-ratelimit-reset"] == "4.75"


def test_the_demo_crm_enforces_the_budget_after_the_key_check() -> None:
    demo = DemoCrm(small_config())
    demo.faults = Faults(budget_per_minute=2)
    with client_for(demo) as client:
        answers = [client.get("/api/deals/filters") for _ in range(3)]
        unauthorised = client.get("/api/deals/filters", headers={"Authorization": "Token token=wrong"})
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["x-ratelimit-remaining"] == "1"
    limited = answers[2]
    assert limited.headers["x-ratelimit-remaining"] == "0" and "x-ratelimit-reset" in limited.headers
    assert "retry-after" not in limited.headers
    assert limited.json() == {"errors": {"code": 429, "message": ["API rate limit exceeded (demo CRM budget)"]}}
    assert unauthorised.status_code == 401
    assert demo.stats()["budget"] == {"admitted": 2, "rejected": 1, "rejected_after_first_minute": 0}


def test_without_a_budget_answers_carry_no_rate_limit_headers() -> None:
    demo = DemoCrm(small_config())
    with client_for(demo) as client:
        answers = [client.get("/api/deals/filters") for _ in range(50)]
    assert all(a.status_code == 200 and "x-ratelimit-remaining" not in a.headers for a in answers)
    assert "budget" not in demo.stats()


def test_budget_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="budget_per_minute"):
        Faults.from_json({"budget_per_minute": -1})
    with pytest.raises(ValueError, match="budget_minute_seconds"):
        Faults.from_json({"budget_minute_seconds": 0})
