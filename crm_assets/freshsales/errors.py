"""Errors raised by the Freshsales client.

Every message names the cause and the fix in plain words, and none carries the API key: messages hold
the HTTP method and path only (never headers), and error bodies quoted from the CRM are redacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

_BODY_SNIPPET = 300


class CrmError(Exception):
    """Base class: anything that went wrong talking to the CRM."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.method = method
        self.path = path

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class CrmAuthError(CrmError):
    """401: the API key is wrong, expired or missing."""


class CrmPermissionError(CrmError):
    """403: the key's user may not read or write this resource."""


class CrmNotFoundError(CrmError):
    """404: the record does not exist, or CRM_BASE_URL points somewhere else."""


class CrmViewNotFoundError(CrmError):
    """A view name that the CRM account does not have."""

    def __init__(self, entity: str, view: str, available: Sequence[str]) -> None:
        listed = ", ".join(repr(name) for name in available) or "none"
        super().__init__(
            f"the CRM has no {entity} view named {view!r}; available views: {listed}. "
            "Rename the view in the domain declaration, or create it in the CRM."
        )
        self.entity = entity
        self.view = view
        self.available = list(available)


class CrmRateLimitError(CrmError):
    """429 persisted through every retry."""


class CrmUnavailableError(CrmError):
    """5xx, timeouts or dropped connections persisted through every retry."""


class CrmOutcomeUnknownError(CrmUnavailableError):
    """A write's answer was lost (a timeout, a dropped connection, a 5xx): the CRM may or may not have applied
    it. Not retried by the client, since a retry would apply it again: the caller reads the record back."""

    # Answers that end a request where it is: an error of the CRM's own (500, 501) or a refusal (503). Not a
    # gateway's or a CDN's (502, 504, Cloudflare's 520-524): the CRM behind it may still be working on it.
    _ENDED_STATUSES = frozenset({500, 501, 503})

    @property
    def ended_at_crm(self) -> bool:
        """Whether the request is over at the CRM (see _ENDED_STATUSES): a record read back untouched was not
        written, and sending the request again cannot apply it twice. A timeout or a dropped connection may
        leave it still under way."""
        return self.status_code in self._ENDED_STATUSES


class CrmUnreachableError(CrmError):
    """No connection could be made (refused, no route, unknown host) for the client's connect-retry time.

    Not a CrmUnavailableError: a server that is not listening is a configuration problem far more often
    than an outage, and retrying the whole step later would only repeat the wait.
    """


class CrmBadRequestError(CrmError):
    """400/422: the CRM refused the request's content; `field_errors` says which fields and why."""

    def __init__(
        self,
        message: str,
        *,
        field_errors: dict[str, list[str]] | None = None,
        status_code: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, method=method, path=path)
        self.field_errors = field_errors or {}


class CrmResponseError(CrmError):
    """A successful status with a body that is not the Freshsales JSON the client expects."""


class CrmPagingError(CrmResponseError):
    """A view's paging went wrong (e.g. a page repeating the previous one): reading on would never end."""


class CrmListingIncompleteError(CrmPagingError):
    """A view's pages held fewer records than the CRM counts (a page came back empty or short and stayed so).

    `page` is where a new read of the view must start for the missing records to be read at all.
    """

    def __init__(self, message: str, *, page: int, path: str | None = None) -> None:
        super().__init__(message, method="GET", path=path)
        self.page = page


def _as_text_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(item) for item in value if item is not None]
    return [str(value)]


def _message_from(obj: Any) -> str | None:
    """The first human message in a Freshsales-like error object, whatever shape it takes."""
    if isinstance(obj, str):
        return obj or None
    if isinstance(obj, list):
        for item in obj:
            found = _message_from(item)
            if found:
                return found
        return None
    if not isinstance(obj, dict):
        return None
    for key in ("message", "description", "error", "errors"):
        if key in obj:
            found = _message_from(obj[key])
            if found:
                return found
    return None


def parse_error_body(content: bytes) -> tuple[str | None, dict[str, list[str]]]:
    """(message, field errors) from an error response body; tolerant of any shape or of no JSON at all."""
    try:
        body = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        text = content.decode("utf-8", "replace").strip()
        return (text[:_BODY_SNIPPET] or None), {}
    message = _message_from(body)
    field_errors: dict[str, list[str]] = {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, dict):
        for key, value in errors.items():
            if key not in ("code", "message", "description"):
                field_errors[str(key)] = _as_text_list(value)
    if message and len(message) > _BODY_SNIPPET:
        message = message[:_BODY_SNIPPET] + "..."
    return message, field_errors
