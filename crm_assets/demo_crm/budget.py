"""The request budget of a Freshsales account, enforced by the demo CRM when a benchmark or test asks for it.

Freshsales counts every API request of an account in a per-minute and a per-hour window. Over either,
it answers 429 with `x-ratelimit-limit`, `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (seconds until
the window that is full resets) and no `Retry-After`; every admitted answer carries the same headers for
the window nearest to running out. Windows are fixed and start at the first request. `minute_seconds`
shrinks the clock for benchmarks (a "minute" of 6 s, an "hour" of 6 minutes), and then `x-ratelimit-reset`
is given to the hundredth of a second so that a scaled run keeps real proportions.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Window:
    limit: int
    seconds: float
    start: float
    used: int = 0

    def roll(self, now: float) -> None:
        if now >= self.start + self.seconds:
            self.start += math.floor((now - self.start) / self.seconds) * self.seconds
            self.used = 0

    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def reset_in(self, now: float) -> float:
        return self.start + self.seconds - now


@dataclass
class BudgetLog:
    """What the budget did: admitted requests and the times (seconds since the first request) of 429s."""

    admitted: int = 0
    rejected_at: list[float] = field(default_factory=list)


class ServerBudget:
    """Admits a request when every window has room; thread-safe."""

    def __init__(
        self,
        per_minute: int,
        per_hour: int,
        *,
        minute_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 0 or per_hour < 0 or minute_seconds <= 0:
            raise ValueError("budgets must be >= 0 and minute_seconds > 0")
        self.minute_seconds = minute_seconds
        self.key = (per_minute, per_hour, minute_seconds)
        self._limits = [(limit, minute_seconds * span) for limit, span in ((per_minute, 1), (per_hour, 60)) if limit]
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: list[_Window] = []
        self._started: float | None = None
        self.log = BudgetLog()

    def admit(self) -> tuple[bool, dict[str, str]]:
        """(admitted, the x-ratelimit-* headers of the answer)."""
        with self._lock:
            now = self._clock()
            if self._started is None:
                self._started = now
                self._windows = [_Window(limit, seconds, now) for limit, seconds in self._limits]
            for window in self._windows:
                window.roll(now)
            admitted = all(window.used < window.limit for window in self._windows)
            if admitted:
                for window in self._windows:
                    window.used += 1
                self.log.admitted += 1
            else:
                self.log.rejected_at.append(now - self._started)
            tightest = min(self._windows, key=lambda w: (w.remaining(), -w.reset_in(now)))
            return admitted, {
                "x-ratelimit-limit": str(tightest.limit),
                "x-ratelimit-remaining": str(tightest.remaining()),
                "x-ratelimit-reset": self._seconds(tightest.reset_in(now)),
            }

    def _seconds(self, seconds: float) -> str:
        if self.minute_seconds >= 60:
            return str(math.ceil(seconds))
        return f"{max(seconds, 0.0):.2f}"
