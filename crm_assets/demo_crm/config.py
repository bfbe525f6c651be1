"""What the demo CRM serves (DemoConfig) and which failures it injects (Faults)."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import Any, NamedTuple

DEMO_BASE_URL = "http://demo-crm.invalid/crm/sales"  # used with the in-process transport
DEMO_API_KEY = "demo-api-key"


@dataclass
class DemoConfig:
    # Records of the shipped domains (the `crm-assets demo-crm` options); `counts` sizes any domain by name.
    accounts: int = 300
    contacts: int = 3000
    deals: int = 3000
    counts: dict[str, int] = field(default_factory=dict)  # wins over the three above; else the recipe's count
    seed: int = 7
    api_key: str = DEMO_API_KEY
    today: datetime.date | None = None  # data ends on this UTC date; None = today (UTC)
    years: float = 3.0  # span of created_at values, ending `today`
    max_per_page: int = 100  # per_page clamp (default per_page 25)
    dirty: bool = True  # include the dirt real CRMs hold (duplicates, bad labels, orphans, ...)
    log_limit: int = 200_000  # request_log keeps at most this many entries (oldest dropped)

    def __post_init__(self) -> None:
        for name in ("accounts", "contacts", "deals"):
            if getattr(self, name) < 0:
                raise ValueError(f"DemoConfig.{name} must be >= 0")
        for name, count in self.counts.items():
            if count < 0:
                raise ValueError(f"DemoConfig.counts[{name!r}] must be >= 0")
        if self.max_per_page < 1:
            raise ValueError("DemoConfig.max_per_page must be >= 1")
        if self.years <= 0:
            raise ValueError("DemoConfig.years must be > 0")

    def count(self, domain: str, default: int) -> int:
        """How many records the demo CRM makes for a domain."""
        if domain in self.counts:
            return self.counts[domain]
        named = {"accounts": self.accounts, "contacts": self.contacts, "deals": self.deals}
        return named.get(domain, default)


@dataclass
class Faults:
    """Failures to inject; all off by default. Assign fields (or a new Faults) at any time.

    Counters are per API request (admin `/_demo/*` requests are not counted); request k gets a
    fault when k is a multiple of the `*_every` value. When several match, the first of drop,
    rate limit, server error wins; slowness adds to any of them.
    """

    rate_limit_every: int = 0  # 429, x-ratelimit-remaining: 0, x-ratelimit-reset, no Retry-After
    retry_after: bool = False  # add Retry-After to 429s
    rate_limit_reset_seconds: int = 1  # value of x-ratelimit-reset (seconds) and Retry-After
    server_error_every: int = 0  # 500/502/503 in turn
    slow_seconds: float = 0.0  # delay before answering (for client timeouts)
    slow_every: int = 0  # 0 with slow_seconds > 0: every request is slow
    drop_every: int = 0  # close the connection / raise httpx.RemoteProtocolError in process
    short_pages: bool = False  # non-final pages hold fewer than per_page records; meta lies
    fail_put_crm_ids: set[int] = field(default_factory=set)  # PUT on these ids answers 500
    # An account's request budget, enforced as Freshsales does (see demo_crm/budget.py); 0 = unlimited.
    budget_per_minute: int = 0
    budget_per_hour: int = 0
    budget_minute_seconds: float = 60.0  # a shorter "minute" (and hour = 60 of them) for benchmarks

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Faults:
        """A Faults from a JSON object; omitted fields keep their defaults, unknown ones are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown fault fields {unknown}; known: {sorted(known)}")
        values = dict(body)
        if "fail_put_crm_ids" in values:
            values["fail_put_crm_ids"] = {int(v) for v in values["fail_put_crm_ids"] or ()}
        faults = cls(**values)
        faults.validate()
        return faults

    def validate(self) -> None:
        for name in (
            "rate_limit_every",
            "server_error_every",
            "slow_every",
            "drop_every",
            "budget_per_minute",
            "budget_per_hour",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.slow_seconds < 0:
            raise ValueError("slow_seconds must be >= 0")
        if self.budget_minute_seconds <= 0:
            raise ValueError("budget_minute_seconds must be > 0")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fail_put_crm_ids"] = sorted(self.fail_put_crm_ids)
        return data


class RequestRecord(NamedTuple):
    """One API request as the demo CRM saw it. status 0: the connection was dropped on purpose."""

    method: str
    path: str
    query: dict[str, str]
    status: int
