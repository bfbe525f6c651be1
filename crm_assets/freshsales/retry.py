"""When and how long to retry a failed CRM request."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

import httpx

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
# x-ratelimit-reset values above this are Unix epochs, below it a number of seconds.
EPOCH_THRESHOLD = 1e9
# Longest server hint honoured: the hourly budget resets within the hour. A longer one (a wrong unit, a
# broken proxy) would otherwise stall every sync that shares the budget for as long as it says.
MAX_HINT_SECONDS = 3600.0

# Transport errors that a retry cannot fix: a malformed URL or a request this client built wrongly.
_PERMANENT_TRANSPORT_ERRORS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or 500 <= status < 600


def is_retryable_exception(exc: Exception) -> bool:
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, _PERMANENT_TRANSPORT_ERRORS)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: between half and all of min(cap, base * 2**(attempt-1))."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return ceiling * (0.5 + rng.random() / 2)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _honoured(seconds: float) -> float | None:
    """A hint's wait, at most MAX_HINT_SECONDS; None when it is negative or not a number."""
    return min(seconds, MAX_HINT_SECONDS) if seconds >= 0 else None


def reset_hint(value: str | None, now_epoch: float) -> float | None:
    """Seconds until x-ratelimit-reset, read as an epoch when it is that large, else as seconds."""
    number = _number(value)
    if number is None:
        return None
    return _honoured(number - now_epoch if number > EPOCH_THRESHOLD else number)


def retry_after_hint(value: str | None, now_epoch: float) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    number = _number(value)
    if number is not None:
        return _honoured(number)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return _honoured(when.timestamp() - now_epoch)


def server_hint(headers: httpx.Headers, now_epoch: float) -> tuple[float, str] | None:
    """(seconds, header name) from a 429's headers; None when the server gave no usable hint."""
    for header, parse in (("x-ratelimit-reset", reset_hint), ("retry-after", retry_after_hint)):
        seconds = parse(headers.get(header), now_epoch)
        if seconds is not None:
            return seconds, header
    return None
