"""Client-side request budgets (per minute and per hour), shared by every thread and process of a deployment.

Freshsales limits requests per account over a minute and an hour. Spending the budget ahead of the server
avoids 429s, which cost a retry and, on the hourly budget, a long wait. The limiter keeps the grant times
of the most recent requests (a sliding window log) and gives each request the earliest slot at which
neither window would hold more than its budget. Slots are reserved under a lock, then slept off outside
it, so concurrent callers queue fairly and the arithmetic never depends on how long sleeping took.

The log lives in a `BudgetStore`: in memory for one process, or in a state every process sees (a locked
file beside an SQLite warehouse, a row of the PostgreSQL warehouse), so that every step, job and code
location of a deployment spends one budget. Times are wall-clock seconds, which every process shares.
What the CRM says about its own budget (`x-ratelimit-remaining` and `x-ratelimit-reset` on any answer)
is kept in the same state and obeyed too: other integrations may be spending the account's budget.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import orjson

from crm_assets.freshsales.retry import MAX_HINT_SECONDS, reset_hint

# Waits shorter than this are routine pacing once a budget is saturated: logged at debug only.
_LOG_WAITS_FROM_SECONDS = 1.0
# While the CRM reports more left than this, its count cannot bind before the limiter's own does, and the
# shared state is not written for it (that would cost a second locked update per request).
_SERVER_COUNT_MATTERS_BELOW = 20
_MINUTE = 60.0
_HOUR = 3600.0

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    limit: int  # requests; 0 disables the budget
    window_seconds: float
    name: str  # "minute", "hour"


@dataclass(frozen=True)
class Wait:
    seconds: float
    reason: str


@dataclass
class BudgetState:
    """The shared part of a budget: recent grant times and the CRM's last word on what is left."""

    grants: list[float] = field(default_factory=list)  # wall-clock seconds, oldest first
    server_remaining: int | None = None  # requests the CRM still accepts until server_reset_at
    server_reset_at: float | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"grants": self.grants, "server_remaining": self.server_remaining, "server_reset_at": self.server_reset_at}
        )

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> BudgetState:
        """The state in `raw`; an empty or unreadable state starts afresh (it only paces requests)."""
        try:
            data = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        grants = data.get("grants")
        remaining, reset_at = data.get("server_remaining"), data.get("server_reset_at")
        return cls(
            grants=[float(g) for g in grants if isinstance(g, int | float)] if isinstance(grants, list) else [],
            server_remaining=remaining if isinstance(remaining, int) else None,
            server_reset_at=float(reset_at) if isinstance(reset_at, int | float) else None,
        )


class BudgetStore(Protocol):
    """Where a budget's state lives. `update` runs `change` on the state atomically and keeps its edits."""

    def update(self, change: Callable[[BudgetState], T]) -> T: ...


class MemoryBudgetStore:
    """One process's budget: threads share it, other processes do not see it."""

    def __init__(self) -> None:
        self._state = BudgetState()
        self._lock = threading.Lock()

    def update(self, change: Callable[[BudgetState], T]) -> T:
        with self._lock:
            return change(self._state)


class FileBudgetStore:
    """A budget in a JSON file that every process on this machine locks (fcntl.flock) while it updates it.

    Used beside an SQLite warehouse, whose processes all run on one machine.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # flock is per open file; threads of one process queue here first

    def update(self, change: Callable[[BudgetState], T]) -> T:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with os.fdopen(os.dup(fd), "r+b") as handle:
                    state = BudgetState.from_json(handle.read())
                    result = change(state)
                    handle.seek(0)
                    handle.write(state.to_json())
                    handle.truncate()
                return result
            finally:
                os.close(fd)  # closing the last descriptor releases the lock


class RateLimiter:
    """Blocks (through `sleep`) until a request fits every budget, then counts it in the shared state."""

    def __init__(
        self,
        per_minute: int,
        per_hour: int,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        log: logging.Logger | None = None,
        store: BudgetStore | None = None,
        minute_seconds: float = _MINUTE,
        margin: float = 0.0,
    ) -> None:
        """`margin` lengthens each window by that fraction: the CRM counts a request when it arrives, and
        arrival times jitter, so a request sent exactly one window after another may land inside it."""
        if per_minute < 0 or per_hour < 0:
            raise ValueError("rate limits must be 0 (unlimited) or positive")
        if minute_seconds <= 0 or margin < 0:
            raise ValueError("minute_seconds must be positive, margin not negative")
        # minute_seconds below 60 only for benchmarks against a demo CRM on a fast clock.
        scale = minute_seconds / _MINUTE * (1 + margin)
        self.budgets = tuple(
            b
            for b in (Budget(per_minute, _MINUTE * scale, "minute"), Budget(per_hour, _HOUR * scale, "hour"))
            if b.limit
        )
        self._depth = max((b.limit for b in self.budgets), default=0)
        # Beyond this far ahead no budget or capped hint puts a slot: what a shared state holds there is stale.
        self._horizon = MAX_HINT_SECONDS + max((b.window_seconds for b in self.budgets), default=0.0)
        self._clock = clock
        self._sleep = sleep
        self._log = log or logging.getLogger(__name__)
        self._store = store or MemoryBudgetStore()

    @property
    def enabled(self) -> bool:
        return bool(self.budgets)

    def reserve(self) -> Wait | None:
        """Claim the next free slot; returns how long to wait before using it (None: go now)."""
        if not self.budgets:
            return None
        slot, reason, now = self._store.update(self._claim)
        if slot <= now:
            return None
        return Wait(slot - now, reason)

    def _claim(self, state: BudgetState) -> tuple[float, str, float]:
        """(slot, why it is later than now, now). Reads the clock only once the state is locked, so that
        a wait for another process's lock never backdates this grant."""
        now = self._clock()
        _forget_the_far_future(state, now + self._horizon)
        grants = state.grants
        slot, reason = now, ""
        for budget in self.budgets:
            if len(grants) >= budget.limit:
                # The request `limit` grants ago must leave the window before this one enters it.
                free_at = grants[-budget.limit] + budget.window_seconds
                if free_at > slot:
                    slot, reason = free_at, f"{budget.limit} requests/{budget.name} budget used"
        if state.server_reset_at is not None and state.server_remaining is not None:
            if state.server_reset_at <= slot:
                state.server_remaining = state.server_reset_at = None  # the CRM's window has reset
            elif state.server_remaining <= 0:
                # Kept until the reset passes, so that every caller waits for it, not only the first.
                slot, reason = state.server_reset_at, "the CRM reports its budget used (x-ratelimit-remaining: 0)"
            else:
                state.server_remaining -= 1
        grants.append(slot)
        # Another process may have appended later slots first; keep the log sorted and bounded.
        if len(grants) > 1 and grants[-2] > slot:
            grants.sort()
        del grants[: max(0, len(grants) - self._depth)]
        return slot, reason, now

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Take in the CRM's own count (x-ratelimit-remaining, x-ratelimit-reset) from any answer."""
        if not self.budgets:
            return
        remaining = _whole_number(headers.get("x-ratelimit-remaining"))
        now = self._clock()
        reset_in = reset_hint(headers.get("x-ratelimit-reset"), now)
        if status == 429 and remaining is None:
            remaining = 0
        if remaining is None or reset_in is None or remaining >= _SERVER_COUNT_MATTERS_BELOW:
            return
        reset_at = now + reset_in

        def note(state: BudgetState) -> None:
            state.server_remaining, state.server_reset_at = remaining, reset_at

        self._store.update(note)

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
        granted = self._store.update(lambda state: list(state.grants))
        now = self._clock()
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


def _whole_number(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _forget_the_far_future(state: BudgetState, horizon: float) -> None:
    """Drop what no budget can put beyond `horizon`: a shared state written by a release that took any
    server hint at its word, or before the clock was set back, would otherwise hold every sync for years."""
    if state.server_reset_at is not None and state.server_reset_at > horizon:
        state.server_remaining = state.server_reset_at = None
    if state.grants and state.grants[-1] > horizon:
        state.grants[:] = [t for t in state.grants if t <= horizon]
