"""Client-side request budgets (per minute and per hour), shared by every thread of one client.

Freshsales limits requests per account over a minute and an hour. Spending the budget ahead of the server
avoids 429s, which cost a retry and, on the hourly budget, a long wait. The limiter keeps the grant times
of the most recent requests (a sliding window log) and gives each request the earliest slot at which
neither window would hold more than its budget. Slots are reserved under a lock, then slept off outside
it, so concurrent threads queue fairly and the arithmetic never depends on how long sleeping took.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Waits shorter than this are routine pacing once a budget is saturated: logged at debug only.
_LOG_WAITS_FROM_SECONDS = 1.0


@dataclass(frozen=True)
class Budget:
    limit: int  # requests; 0 disables the budget
    window_seconds: float
    name: str  # "minute", "hour"


@dataclass(frozen=True)
class Wait:
    seconds: float
    reason: str


class RateLimiter:
    """Blocks (through `sleep`) until a request fits both budgets, then counts it."""

    def __init__(
        self,
        per_minute: int,
        per_hour: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: logging.Logger | None = None,
    ) -> None:
        if per_minute < 0 or per_hour < 0:
            raise ValueError("rate limits must be 0 (unlimited) or positive")
        self.budgets = tuple(
            b for b in (Budget(per_minute, 60.0, "minute"), Budget(per_hour, 3600.0, "hour")) if b.limit
        )
        self._clock = clock
        self._sleep = sleep
        self._log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()
        depth = max((b.limit for b in self.budgets), default=0)
        self._granted: deque[float] = deque(maxlen=depth or 1)

    def reserve(self) -> Wait | None:
        """Claim the next free slot; returns how long to wait before using it (None: go now)."""
        if not self.budgets:
            return None
        with self._lock:
            now = self._clock()
            slot, reason = now, ""
            for budget in self.budgets:
                if len(self._granted) >= budget.limit:
                    # The request `limit` grants ago must leave the window before this one enters it.
                    free_at = self._granted[-budget.limit] + budget.window_seconds
                    if free_at > slot:
                        slot = free_at
                        reason = f"{budget.limit} requests/{budget.name} budget used"
            self._granted.append(slot)
        if slot <= now:
            return None
        return Wait(slot - now, reason)

    def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited (0.0 when the budgets had room)."""
        wait = self.reserve()
        if wait is None:
            return 0.0
        level = logging.INFO if wait.seconds >= _LOG_WAITS_FROM_SECONDS else logging.DEBUG
        self._log.log(level, f"rate limit: {wait.reason}, waiting {wait.seconds:.1f} s")
        self._sleep(wait.seconds)
        return wait.seconds

    def seconds_for(self, requests: int) -> float:
        """The least time `requests` more requests can take under the budgets (0.0 when they fit now).

        For an honest time left on a long scan: past the hourly budget, time follows the budget, not the speed.
        """
        if requests <= 0 or not self.budgets:
            return 0.0
        with self._lock:
            now = self._clock()
            granted = list(self._granted)
        longest = 0.0
        for budget in self.budgets:
            in_window = [t for t in granted if t > now - budget.window_seconds]
            over = requests - (budget.limit - len(in_window))
            if over <= 0:
                continue
            cycles, k = divmod(over - 1, budget.limit)
            # Each wait frees the oldest grant in the window; after `limit` of them a whole window has passed.
            first_free = in_window[k] + budget.window_seconds if k < len(in_window) else now + budget.window_seconds
            longest = max(longest, first_free + cycles * budget.window_seconds - now)
        return longest
