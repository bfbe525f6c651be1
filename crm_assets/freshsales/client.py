"""The Freshsales (Freshworks CRM) REST client: views, paging, budgets, retries and plain-worded errors.

One client serves every entity. Pages of a full scan are fetched concurrently (a thread pool over one
shared httpx.Client) but handed out in page order; an incremental scan reads newest-first and stops as
soon as it reaches records older than the cursor, so it costs about changed/100 + 1 requests per view.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple, NoReturn, TypeVar

import httpx
import orjson

from crm_assets.freshsales.errors import (
    CrmAuthError,
    CrmBadRequestError,
    CrmError,
    CrmListingIncompleteError,
    CrmNotFoundError,
    CrmOutcomeUnknownError,
    CrmPagingError,
    CrmPermissionError,
    CrmRateLimitError,
    CrmResponseError,
    CrmUnavailableError,
    CrmUnreachableError,
    CrmViewNotFoundError,
    parse_error_body,
)
from crm_assets.freshsales.progress import ProgressEvent, ProgressTracker
from crm_assets.freshsales.ratelimit import BudgetStore, RateLimiter
from crm_assets.freshsales.retry import (
    backoff_delay,
    is_retryable_exception,
    is_retryable_status,
    server_hint,
)
from crm_assets.lenient_json import loads_lenient
from crm_assets.timestamps import as_utc, parse_instant

__all__ = ["ClientStats", "FreshsalesClient", "ProgressEvent"]

Record = dict[str, Any]
Page = list[Record]
_Read = TypeVar("_Read")


class _Answer(NamedTuple):
    """One view page as the CRM answered it: its records and its meta (total, total_pages)."""

    records: Page
    meta: dict[str, Any]


_RECORD_PATH = re.compile(r"^/api/[a-z_]+/\d+$")
_BASE_URL_EXAMPLE = "https://<account>.myfreshworks.com/crm/sales"
# Header values must be visible ASCII; anything else would make httpx raise an error quoting the key.
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")

_TRANSPORT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (httpx.ConnectTimeout, "connection timed out"),
    (httpx.ReadTimeout, "response timed out"),
    (httpx.TimeoutException, "timed out"),
    (httpx.ConnectError, "could not connect"),
    (httpx.RemoteProtocolError, "connection dropped"),
    (httpx.ReadError, "connection dropped while reading"),
    (httpx.WriteError, "connection dropped while sending"),
)
# Failures to open a connection; retrying them is bounded by time (connect_retry_seconds), not only by count.
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
_CONNECT_TIMEOUT = 10.0  # seconds; a reachable Freshsales accepts a connection in well under one


@dataclass
class ClientStats:
    """Counters of one client's traffic; safe to update from every worker thread."""

    requests: int = 0
    retries: int = 0
    rate_limit_waits: int = 0
    waited_seconds: float = 0.0  # rate-limit waits plus retry backoff
    transport_errors: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_status(self, status: int) -> None:
        with self._lock:
            self.requests += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1

    def record_transport_error(self) -> None:
        with self._lock:
            self.requests += 1
            self.transport_errors += 1

    def record_retry(self, seconds: float) -> None:
        with self._lock:
            self.retries += 1
            self.waited_seconds += seconds

    def record_rate_limit_wait(self, seconds: float) -> None:
        with self._lock:
            self.rate_limit_waits += 1
            self.waited_seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "rate_limit_waits": self.rate_limit_waits,
                "waited_seconds": round(self.waited_seconds, 3),
                "transport_errors": self.transport_errors,
                "by_status": dict(sorted(self.by_status.items())),
            }


@dataclass(frozen=True)
class _Failure:
    """Why an attempt failed, for the retry log line and the final error."""

    reason: str
    status: int | None = None
    response: httpx.Response | None = None
    connect: bool = False  # no connection was made at all
    unreadable: bool = False  # a success status with a body that is not JSON

    @property
    def unprocessed(self) -> bool:
        """Whether the CRM certainly did not act on the request: never sent, or refused by the rate limit."""
        return self.connect or self.status == 429


class _DeadlineExceeded(Exception):
    """The whole answer did not arrive within the client's request deadline."""


class _Secret:
    """Holds the API key so that repr(), vars() and debuggers show stars instead."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'********'"


def _transport_reason(exc: Exception) -> str:
    for kind, reason in _TRANSPORT_REASONS:
        if isinstance(exc, kind):
            return reason
    return type(exc).__name__


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS settings, built once a process: loading the CA bundle costs tens of ms a client."""
    return httpx.create_ssl_context()


def validated_base_url(base_url: str) -> httpx.URL:
    """The API base of CRM_BASE_URL, or a CrmError naming the variable and the expected form."""
    try:
        url = httpx.URL(base_url.strip())
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise CrmError(f"CRM_BASE_URL must be an http:// or https:// URL like {_BASE_URL_EXAMPLE}")
    path = url.path.rstrip("/")
    if path.endswith("/api"):  # the client appends /api/... itself
        path = path[: -len("/api")]
    return url.copy_with(path=path or "/", query=None, fragment=None, username=None, password=None)


def _is_local(host: str) -> bool:
    return host in ("localhost", "127.0.0.1", "::1") or host.endswith((".invalid", ".localhost", ".test"))


def validated_api_key(api_key: str) -> str:
    """CRM_API_KEY as sent, or a CrmAuthError saying what is wrong with it (never quoting it)."""
    key = api_key.strip()
    if not key:
        raise CrmAuthError("CRM_API_KEY is empty: set it to your Freshsales API key")
    if not _HEADER_SAFE.fullmatch(key):
        raise CrmAuthError(
            "CRM_API_KEY contains spaces, line breaks or non-ASCII characters: copy the key again from "
            "Freshsales (Profile settings > API settings)"
        )
    return key


class FreshsalesClient:
    """Synchronous Freshsales API client, safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        rate_limit_per_minute: int = 400,
        rate_limit_per_hour: int = 1000,
        budget_store: BudgetStore | None = None,
        rate_limit_minute_seconds: float = 60.0,
        rate_limit_margin: float = 0.025,
        max_concurrency: int = 4,
        per_page: int = 100,
        timeout: float = 30.0,
        request_deadline: float = 120.0,
        connect_retry_seconds: float = 15.0,
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        log: logging.Logger | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_concurrency < 1 or per_page < 1 or max_retries < 0:
            raise ValueError("max_concurrency and per_page must be positive, max_retries not negative")
        if timeout <= 0 or request_deadline <= 0 or connect_retry_seconds < 0:
            raise ValueError("timeout and request_deadline must be positive, connect_retry_seconds not negative")
        self._base = validated_base_url(base_url)
        self._key = _Secret(validated_api_key(api_key))
        self.log = log or logging.getLogger("crm_assets.freshsales")
        if self._base.scheme == "http" and not _is_local(self._base.host):
            self.log.warning(f"CRM_BASE_URL {self.base_url} uses http://: the API key travels unencrypted")
        self.max_concurrency = max_concurrency
        self.per_page = per_page
        self.max_retries = max_retries
        self.request_deadline = request_deadline
        self.connect_retry_seconds = connect_retry_seconds
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stats = ClientStats()
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_progress = on_progress
        self._rng = random.Random()
        self._limiter = RateLimiter(
            rate_limit_per_minute,
            rate_limit_per_hour,
            clock=wall_clock,
            sleep=sleep,
            log=self.log,
            store=budget_store,
            minute_seconds=rate_limit_minute_seconds,
            margin=rate_limit_margin,
        )
        self._views: dict[str, dict[str, int]] = {}
        self._views_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self._base,
            headers={
                "Authorization": f"Token token={self._key.reveal()}",
                "Accept": "application/json",
                "User-Agent": "crm-assets",
            },
            transport=transport,
            timeout=httpx.Timeout(
                min(timeout, request_deadline), connect=min(timeout, request_deadline, _CONNECT_TIMEOUT)
            ),
            limits=httpx.Limits(max_connections=max_concurrency + 1, max_keepalive_connections=max_concurrency + 1),
            verify=_tls_context(),
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return str(self._base).rstrip("/")

    def __repr__(self) -> str:
        return f"FreshsalesClient(base_url={self.base_url!r})"

    __str__ = __repr__

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FreshsalesClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------------

    def view_id(self, entity: str, view_name: str) -> int:
        """The id of a view by its name (exact, else case-insensitive); the view list is cached per entity."""
        views = self._views_of(entity)
        if view_name in views:
            return views[view_name]
        folded = {name.casefold(): view_id for name, view_id in views.items()}
        if view_name.casefold() in folded:
            return folded[view_name.casefold()]
        raise CrmViewNotFoundError(entity, view_name, sorted(views))

    def iter_view(
        self,
        entity: str,
        view_name: str,
        *,
        sort: str = "updated_at",
        sort_type: str = "desc",
        stop_before: datetime | None = None,
        start_page: int = 1,
    ) -> Iterator[Page]:
        """Non-empty pages of a view, in page order, from `start_page` (a resumed scan) on.

        With `stop_before` (newest-first by updated_at only), records older than it are dropped and no
        page after the first one holding such a record is requested. Every page yielded is the next
        page number: the k-th page yielded is page start_page + k - 1 (with, after it, any records that
        moved onto the page before while the view was read).
        """
        if stop_before is not None and (sort, sort_type) != ("updated_at", "desc"):
            raise ValueError("stop_before needs sort='updated_at' and sort_type='desc'")
        if start_page < 1:
            raise ValueError("start_page must be 1 or more")
        cutoff = as_utc(stop_before) if stop_before is not None else None
        view_id = self.view_id(entity, view_name)
        tracker = ProgressTracker(
            entity,
            view_name,
            clock=self._clock,
            log=self.log,
            on_progress=self._on_progress,
            incremental=cutoff is not None,
            limiter=self._limiter,
            waits=self.stats,
        )
        skipped = start_page - 1  # pages before start_page: the paging below counts from 1 regardless

        def fetch(page: int) -> _Answer:
            # Pages after the first are read once the CRM has answered this view well: a body that is not
            # JSON then is a passing fault (a maintenance page, a cut answer), not a wrong CRM_BASE_URL.
            return self._fetch_view_page(entity, view_id, page + skipped, sort, sort_type, answered_well=page > 1)

        first = fetch(1)
        listing = _Listing.from_meta(entity, view_name, self.per_page, first.meta).after_pages(skipped)
        tracker.set_totals(
            _int_or_none(first.meta.get("total")),
            _int_or_none(first.meta.get("total_pages")),
            pages_before=skipped,
            per_page=self.per_page,
        )
        for page_no, records in self._pages_from(fetch, first, listing, concurrent=cutoff is None):
            kept = records if cutoff is None else _not_older(records, cutoff)
            tracker.page_done(page_no + skipped, len(kept))
            if kept:
                yield kept
            if len(kept) < len(records):
                break  # the cursor is reached: every later page is older still
        tracker.finish()

    def get_record(self, entity: str, singular: str, crm_id: int) -> Record:
        body = self._get_json(f"/api/{entity}/{int(crm_id)}")
        return self._unwrap(body, singular, "GET", f"/api/{entity}/{int(crm_id)}")

    def update_record(self, entity: str, singular: str, crm_id: int, fields: dict[str, Any]) -> Record:
        """PUT the changed fields (wrapped in the singular key, as Freshsales expects); returns the record."""
        path = f"/api/{entity}/{int(crm_id)}"
        response = self._request("PUT", path, json_body={singular: fields}, write=True)
        return self._unwrap(self._decode(response, "PUT", path), singular, "PUT", path)

    def back_off(self, attempt: int) -> None:
        """Wait the client's backoff for a caller's own `attempt`-th try (a write it reads back, then resends)."""
        delay = backoff_delay(attempt, self.backoff_base, self.backoff_max, self._rng)
        self.stats.record_retry(delay)
        self._sleep(delay)

    def field_settings(self, entity: str) -> list[dict[str, Any]]:
        """The entity's field metadata (GET /api/settings/<entity>/fields): name, label, type, choices, ..."""
        path = f"/api/settings/{entity}/fields"
        body = self._get_json(path)
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, list):
            raise self._unexpected("GET", path, "no 'fields' list")
        return [f for f in fields if isinstance(f, dict)]

    def filtered_search(self, singular: str, rules: list[dict[str, Any]], entity: str) -> Iterator[Page]:
        """Pages of records matching every rule (POST /api/filtered_search/<singular>) up to an empty page."""
        path = f"/api/filtered_search/{singular}"
        page = 1
        while True:
            params = {"page": page, "per_page": self.per_page}
            response = self._request("POST", path, params=params, json_body={"filter_rule": rules})
            records = self._records(self._decode(response, "POST", path), entity, "POST", path)
            if not records:
                return
            yield records
            page += 1

    # -- paging ------------------------------------------------------------------------------------

    def _fetch_view_page(
        self, entity: str, view_id: int, page: int, sort: str, sort_type: str, *, answered_well: bool
    ) -> _Answer:
        path = f"/api/{entity}/view/{view_id}"
        params = {"page": page, "per_page": self.per_page, "sort": sort, "sort_type": sort_type}
        body = self._get_json(path, params=params, retry_unreadable=answered_well)
        meta = body.get("meta") if isinstance(body, dict) else None
        return _Answer(self._records(body, entity, "GET", path), meta if isinstance(meta, dict) else {})

    def _pages_from(
        self,
        fetch: Callable[[int], _Answer],
        first: _Answer,
        listing: _Listing,
        *,
        concurrent: bool,
    ) -> Iterator[tuple[int, Page]]:
        """(page number, records) of the non-empty pages from page 1 up to the last page the CRM reported.

        A page holding fewer records than its meta counts is read again first (`_settled`); records that
        moved onto the page before while the view was read come with the page (`_moved_back`). When the
        view ends, every record the CRM counted must have arrived (`_Listing.ensure_complete`).
        """
        for page, answer in self._answers(fetch, first, listing, concurrent=concurrent):
            settled = self._settled(fetch, page, answer, listing)
            moved = self._moved_back(fetch, page, settled, listing)
            listing.check(page, settled.records, settled.meta, recovered=len(moved))
            if not settled.records and not moved:
                break
            yield page, settled.records + moved
        listing.ensure_complete(self.log)

    def _answers(
        self, fetch: Callable[[int], _Answer], first: _Answer, listing: _Listing, *, concurrent: bool
    ) -> Iterator[tuple[int, _Answer]]:
        """The answers from page 1 on, as read; the consumer stops at an empty page.

        Pages past meta.total_pages are read only while fewer records than meta.total have arrived
        (short pages push records further); without meta, an empty page ends the view.
        """
        yield 1, first
        page = 2
        total_pages = listing.total_pages
        if concurrent and total_pages and total_pages >= 2 and self.max_concurrency > 1:
            yield from self._concurrent_pages(fetch, 2, total_pages)
            page = total_pages + 1
        # Past total_pages, or incremental: one page at a time.
        while not listing.complete_before(page):
            yield page, fetch(page)
            page += 1

    def _settled(self, fetch: Callable[[int], _Answer], page: int, answer: _Answer, listing: _Listing) -> _Answer:
        """The page's answer, read again (with backoff, like a server error) while it holds too few records.

        Freshsales pages by offset: a page before the end holding fewer records than its own meta.total
        puts there would lose the rest (an empty one would end the view). A CRM that answers a short page
        the same way twice pages that way (the records come on later pages): its short pages are trusted
        for the rest of the read, and the count at the end of the view says whether any was lost.
        """
        for attempt in range(1, self.max_retries + 1):
            if not listing.worth_reading_again(page, answer):
                break
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_max, self._rng)
            self.log.warning(
                f"CRM {listing.page_text(page)}: {listing.shortfall_text(page, answer)}; read again "
                f"({attempt} of {self.max_retries}) in {delay:.1f} s"
            )
            self.stats.record_retry(delay)
            self._sleep(delay)
            again = fetch(page)
            listing.learn_paging(page, answer, again)
            answer = again
        listing.settle(page, answer, self.max_retries)
        return answer

    def _moved_back(self, fetch: Callable[[int], _Answer], page: int, answer: _Answer, listing: _Listing) -> Page:
        """Records that moved from this page onto the one before while the view was read, read again.

        A page counting fewer records than the page before it was read after records ahead of it left the
        view (deleted, or changed out of it): every later record moved back, and the first ones of this
        page onto the page before, already read. Reading that page again finds them, up to a page of them.
        """
        if page < 2 or not listing.shrank(answer):
            return []
        seen = _comparable_ids(listing.previous_ids) | _comparable_ids(_ids_of(answer.records))
        return [record for record in fetch(page - 1).records if _comparable_ids(_ids_of([record])) - seen]

    def _concurrent_pages(
        self, fetch: Callable[[int], _Answer], first: int, last: int
    ) -> Iterator[tuple[int, _Answer]]:
        """Pages first..last with at most max_concurrency requests in flight, handed out in page order.

        At most max_concurrency pages are held at once, so memory stays bounded however slow the consumer.
        """
        pending: deque[tuple[int, Future[_Answer]]] = deque()
        next_page = first
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="crm-page")
        try:
            while pending or next_page <= last:
                while next_page <= last and len(pending) < self.max_concurrency:
                    pending.append((next_page, pool.submit(fetch, next_page)))
                    next_page += 1
                page, future = pending.popleft()
                yield page, future.result()
        finally:
            # Stopped early (empty page, error, consumer gone): drop queued pages and don't wait for
            # requests still in flight, which may be sleeping off a retry backoff.
            pool.shutdown(wait=False, cancel_futures=True)

    def _views_of(self, entity: str) -> dict[str, int]:
        with self._views_lock:
            cached = self._views.get(entity)
        if cached is not None:
            return cached
        path = f"/api/{entity}/filters"
        body = self._get_json(path)
        filters = body.get("filters") if isinstance(body, dict) else None
        if not isinstance(filters, list):
            raise self._unexpected("GET", path, "no 'filters' list")
        views = {
            str(item["name"]): int(item["id"])
            for item in filters
            if isinstance(item, dict) and item.get("name") is not None and isinstance(item.get("id"), int)
        }
        with self._views_lock:
            self._views[entity] = views
        return views

    # -- HTTP --------------------------------------------------------------------------------------

    def _get_json(self, path: str, params: dict[str, Any] | None = None, *, retry_unreadable: bool = False) -> Any:
        """The JSON body of a GET; with `retry_unreadable`, a body that is not JSON is retried like a 5xx."""
        if retry_unreadable:
            return self._request_read("GET", path, params=params, read=_json_or_failure)
        return self._decode(self._request("GET", path, params=params), "GET", path)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        write: bool = False,
    ) -> httpx.Response:
        """One logical request: budgeted, retried on 429/5xx/transport errors, errors translated (`write`: see
        `_request_read`)."""
        return self._request_read(method, path, params=params, json_body=json_body, read=_whole_response, write=write)

    def _request_read(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        read: Callable[[httpx.Response], _Read | _Failure],
        write: bool = False,
    ) -> _Read:
        """`_request`, then `read` of the successful response; a _Failure it returns is retried like a 5xx.

        `write`: retried only while the CRM certainly did not act on it; another failure raises
        CrmOutcomeUnknownError at once, since a retry could apply the write twice.
        """
        content = orjson.dumps(json_body) if json_body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        attempt = 0
        unreachable_for = 0.0  # attempts and backoff spent since connecting last failed in a row
        while True:
            waited = self._limiter.acquire()
            if waited:
                self.stats.record_rate_limit_wait(waited)
            started = time.monotonic()
            outcome = self._attempt(method, path, params, content, headers)
            result = read(outcome) if isinstance(outcome, httpx.Response) else outcome
            if not isinstance(result, _Failure):
                return result
            failure = result
            if write and not failure.unprocessed:
                raise CrmOutcomeUnknownError(
                    f"CRM {method} {path}: {failure.reason}, so whether the CRM applied it is unknown",
                    method=method,
                    path=path,
                    status_code=failure.status,
                )
            attempt += 1
            unreachable_for = unreachable_for + time.monotonic() - started if failure.connect else 0.0
            delay, why = self._retry_delay(attempt, failure)
            if failure.connect and (attempt > self.max_retries or unreachable_for + delay > self.connect_retry_seconds):
                self._give_up_unreachable(method, path, failure, unreachable_for)
            if attempt > self.max_retries:
                self._give_up(method, path, failure)
            self.log.warning(
                f"CRM {method} {path}: {failure.reason}; retry {attempt} of {self.max_retries} in {delay:.1f} s ({why})"
            )
            self.stats.record_retry(delay)
            self._sleep(delay)
            unreachable_for += delay if failure.connect else 0.0

    def _attempt(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response | _Failure:
        """The response when it is final (success or a non-retryable error), else why it failed."""
        try:
            response = self._send_within_deadline(method, path, params, content, headers)
        except httpx.TransportError as exc:
            self.stats.record_transport_error()
            if not is_retryable_exception(exc):
                raise CrmError(
                    f"could not send {method} {path} to the CRM ({_transport_reason(exc)}): "
                    f"check CRM_BASE_URL, which should look like {_BASE_URL_EXAMPLE}"
                ) from None
            return _Failure(_transport_reason(exc), connect=isinstance(exc, _CONNECT_ERRORS))
        except _DeadlineExceeded:
            self.stats.record_transport_error()
            return _Failure(f"no complete response within the {self.request_deadline:g} s request deadline")
        self.stats.record_status(response.status_code)
        self._limiter.observe(response.status_code, response.headers)
        if response.is_success:
            return response
        if is_retryable_status(response.status_code):
            label = "rate limited" if response.status_code == 429 else "server error"
            return _Failure(f"HTTP {response.status_code} ({label})", response.status_code, response)
        self._raise_for(response, method, path)

    def _send_within_deadline(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response:
        """Send and read the whole body, giving up once `request_deadline` has passed.

        httpx's timeouts bound each read, so a server trickling a byte every few seconds would never
        time out; the body is therefore streamed and the deadline checked after every chunk. Every read
        is bounded by the deadline too, so no attempt outlives it by more than one read.
        """
        started = time.monotonic()
        request = self._http.build_request(method, path, params=params, content=content, headers=headers)
        response = self._http.send(request, stream=True)
        if response.is_stream_consumed:
            return response  # an in-process transport answered with the whole body already read
        try:
            raw = bytearray()
            for chunk in response.iter_raw():
                raw += chunk
                if time.monotonic() - started > self.request_deadline:
                    raise _DeadlineExceeded
        finally:
            response.close()
        # A fresh response over the raw bytes decodes any content-encoding exactly as a read() would.
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=bytes(raw),
            request=request,
            extensions=response.extensions,
        )

    def _retry_delay(self, attempt: int, failure: _Failure) -> tuple[float, str]:
        if failure.status == 429 and failure.response is not None:
            hint = server_hint(failure.response.headers, self._wall_clock())
            if hint is not None:
                # A little jitter so that threads released by the same reset do not all hit at once.
                return hint[0] + self._rng.uniform(0, min(1.0, self.backoff_base)), hint[1]
        delay = backoff_delay(attempt, self.backoff_base, self.backoff_max, self._rng)
        return delay, "exponential backoff"

    def _give_up(self, method: str, path: str, failure: _Failure) -> NoReturn:
        tries = f"{self.max_retries} {'retry' if self.max_retries == 1 else 'retries'}"
        if failure.unreadable:
            raise CrmUnavailableError(
                f"the CRM at {self._base.host} kept answering {method} {path} with {failure.reason} through "
                f"{tries}, after answering this view's first page well: Freshsales (or a proxy in front of it) "
                "may be having an outage; try again later",
                method=method,
                path=path,
            )
        if failure.status == 429:
            raise CrmRateLimitError(
                f"the CRM kept rate-limiting {method} {path} (HTTP 429) through {tries}: the account's API "
                "budget is used up, perhaps by other integrations; lower CRM_RATE_LIMIT_PER_MINUTE / "
                "CRM_RATE_LIMIT_PER_HOUR, or run again after the budget resets",
                status_code=429,
                method=method,
                path=path,
            )
        if failure.status is not None:
            raise CrmUnavailableError(
                f"the CRM at {self._base.host} kept failing {method} {path} (last: HTTP {failure.status}) "
                f"through {tries}: Freshsales may be having an outage; try again later",
                status_code=failure.status,
                method=method,
                path=path,
            )
        raise CrmUnavailableError(
            f"the CRM at {self._base.host} could not be reached for {method} {path} (last: {failure.reason}) "
            f"through {tries}: check CRM_BASE_URL and the network, or try again later",
            method=method,
            path=path,
        )

    def _give_up_unreachable(self, method: str, path: str, failure: _Failure, seconds: float) -> NoReturn:
        # Nothing listening, no route or no DNS name: long backoff would only delay the same answer.
        raise CrmUnreachableError(
            f"could not connect to the CRM at {self.base_url} for {method} {path} ({failure.reason}, for "
            f"{seconds:.0f} s): check CRM_BASE_URL (it should look like {_BASE_URL_EXAMPLE}) and that the "
            "server is reachable from here",
            method=method,
            path=path,
        )

    def _raise_for(self, response: httpx.Response, method: str, path: str) -> NoReturn:
        status = response.status_code
        if status == 401:
            raise CrmAuthError(
                "the CRM rejected the API key (HTTP 401): check CRM_API_KEY",
                status_code=status,
                method=method,
                path=path,
            )
        message, field_errors = parse_error_body(response.content)
        detail = f": {self._redact(message)}" if message else ""
        if status == 403:
            raise CrmPermissionError(
                f"the CRM refused {method} {path} (HTTP 403){detail}. The API key's user lacks permission "
                "for it: use the key of a user who can see these records, or grant the permission",
                status_code=status,
                method=method,
                path=path,
            )
        if status == 404:
            raise CrmNotFoundError(self._not_found_message(method, path), status_code=status, method=method, path=path)
        if status in (400, 422):
            fields = "; ".join(f"{name}: {', '.join(errs)}" for name, errs in field_errors.items())
            raise CrmBadRequestError(
                f"the CRM refused {method} {path} (HTTP {status}){detail}"
                + (f"; field errors: {self._redact(fields)}" if fields else ""),
                field_errors=field_errors,
                status_code=status,
                method=method,
                path=path,
            )
        raise CrmError(
            f"the CRM answered HTTP {status} to {method} {path}{detail}",
            status_code=status,
            method=method,
            path=path,
        )

    def _not_found_message(self, method: str, path: str) -> str:
        if _RECORD_PATH.match(path):
            return (
                f"the CRM has no record at {path} (HTTP 404 on {method}): it may have been deleted or "
                f"merged, or CRM_BASE_URL ({self.base_url}) points to a different CRM account"
            )
        return (
            f"the CRM answered HTTP 404 to {method} {path}: CRM_BASE_URL ({self.base_url}) looks wrong "
            f"(it should look like {_BASE_URL_EXAMPLE}), or the record or view no longer exists"
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._key.reveal(), "********")

    # -- bodies ------------------------------------------------------------------------------------

    def _decode(self, response: httpx.Response, method: str, path: str) -> Any:
        try:
            return _parsed(response.content)
        except ValueError:
            kind = response.headers.get("content-type", "unknown content type")
            raise self._unexpected(method, path, f"a body that is not JSON ({kind})") from None

    def _records(self, body: Any, entity: str, method: str, path: str) -> Page:
        records = body.get(entity) if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise self._unexpected(method, path, f"no {entity!r} list")
        return records

    def _unwrap(self, body: Any, singular: str, method: str, path: str) -> Record:
        record = body.get(singular) if isinstance(body, dict) else None
        if not isinstance(record, dict):
            raise self._unexpected(method, path, f"no {singular!r} object")
        return record

    def _unexpected(self, method: str, path: str, what: str) -> CrmResponseError:
        return CrmResponseError(
            f"the CRM answered {method} {path} with {what}: CRM_BASE_URL ({self.base_url}) may not be a "
            f"Freshsales API address (it should look like {_BASE_URL_EXAMPLE})",
            method=method,
            path=path,
        )


@dataclass
class _Listing:
    """What the CRM said about one view's size, and the guards that keep paging from running on for ever."""

    entity: str
    view: str
    per_page: int
    total: int | None
    total_pages: int | None
    skipped: int = 0  # pages before the first one read (a resumed scan): counts are of what is left
    received: int = 0  # records on every page so far, a record listed twice counted twice
    previous_ids: list[Any] = field(default_factory=list)
    previous_total: int | None = None  # meta.total as the previous page gave it
    smallest_total: int | None = None  # the least meta.total of the pages read (the listing may shrink)
    short_page: int | None = None  # the first page before the last one holding fewer records than meta.total puts there
    short_pages_usual: bool = False  # a short page read again came back the same: the CRM pages that way

    @classmethod
    def from_meta(cls, entity: str, view: str, per_page: int, meta: dict[str, Any]) -> _Listing:
        total, total_pages = _int_or_none(meta.get("total")), _int_or_none(meta.get("total_pages"))
        return cls(entity, view, per_page, total, total_pages)

    # -- pages that hold too few records -------------------------------------------------------------

    def counted(self, meta: dict[str, Any]) -> int | None:
        """A page's meta.total, less the records of the skipped pages; without one, the first page's."""
        total = _int_or_none(meta.get("total"))
        if total is None:
            return self.total
        return max(total - self.skipped * self.per_page, 0)

    def missing(self, page: int, answer: _Answer) -> int:
        """How many records fewer the page holds than its own meta.total puts on it (offset paging)."""
        total = self.counted(answer.meta)
        if total is None:
            return 0
        due = min(self.per_page, max(total - (page - 1) * self.per_page, 0))
        return max(due - len(answer.records), 0)

    def worth_reading_again(self, page: int, answer: _Answer) -> bool:
        return self.missing(page, answer) > 0 and not (answer.records and self.short_pages_usual)

    def learn_paging(self, page: int, before: _Answer, again: _Answer) -> None:
        """The same short page twice: the CRM serves fewer than per_page a page, and later pages hold the rest."""
        if again.records and self.missing(page, again) and _ids_of(again.records) == _ids_of(before.records):
            self.short_pages_usual = True

    def settle(self, page: int, answer: _Answer, rereads: int) -> None:
        """Accept a page's last answer: raise when it is empty before the last page, note it when short.

        The last page may hold fewer (or no) records than meta.total puts there: a count taken before
        records were deleted explains that, and nothing after it can be lost.
        """
        if not self.missing(page, answer) or not self._due_after(page, answer):
            return
        if not answer.records:
            raise CrmListingIncompleteError(
                f"{self.page_text(page)} came back empty {rereads + 1} times while the CRM counts "
                f"{self._counts_text(answer.meta)}: reading on would skip the rest of the view, so nothing "
                "is merged. Run again later: the scan resumes at this page",
                page=page + self.skipped,
                path=self._path,
            )
        if self.short_page is None:
            self.short_page = page

    def ensure_complete(self, log: logging.Logger) -> None:
        """Raise when the view ended with fewer records than every page's meta.total counted, after a page
        before the last came back short; when only the last page did, say so (records deleted meanwhile)."""
        if self.smallest_total is None or self.received >= self.smallest_total:
            return
        counts = f"the {self.entity} view {self.view!r} ended after {self.received:,} of the {self.smallest_total:,}"
        if self.short_page is None:
            log.warning(
                f"CRM: {counts} records the CRM counts; only the last page held fewer than its meta.total puts "
                "there, as when records are deleted while the view is read"
            )
            return
        restart = self.short_page + self.skipped
        raise CrmListingIncompleteError(
            f"{counts} records the CRM counts, and page {restart} held fewer records than its meta.total puts "
            "there: records would be missing, so nothing is merged. Run again: the scan reads the view again "
            f"from page {restart}. If this repeats, the CRM (or a proxy in front of it) drops records from its pages",
            page=restart,
            path=self._path,
        )

    def _due_after(self, page: int, answer: _Answer) -> bool:
        """Whether the page's own meta.total puts records on later pages: it is not the last page."""
        total = self.counted(answer.meta)
        return total is not None and total > page * self.per_page

    def page_text(self, page: int) -> str:
        return f"page {page + self.skipped} of the {self.entity} view {self.view!r}"

    def shortfall_text(self, page: int, answer: _Answer) -> str:
        held = len(answer.records)
        return f"{held} records where its meta.total puts {held + self.missing(page, answer)}"

    def _counts_text(self, meta: dict[str, Any]) -> str:
        total, pages = _int_or_none(meta.get("total")), _int_or_none(meta.get("total_pages"))
        return f"{total if total is not None else self.total} records" + (f" ({pages} pages)" if pages else "")

    @property
    def _path(self) -> str:
        return f"/api/{self.entity}/view"

    # -- counting ------------------------------------------------------------------------------------

    def shrank(self, answer: _Answer) -> bool:
        """Whether the page counts fewer records than the previous page did: the view lost some meanwhile."""
        total = _int_or_none(answer.meta.get("total"))
        return total is not None and self.previous_total is not None and total < self.previous_total

    def check(self, page: int, records: Page, meta: dict[str, Any], *, recovered: int = 0) -> None:
        """Count a page and the records `recovered` with it (`_moved_back`); a page holding exactly the
        previous page's records means the CRM ignores ?page=."""
        ids = _ids_of(records)
        if ids and ids == self.previous_ids:
            raise CrmPagingError(
                f"the CRM answered page {page} of the {self.entity} view {self.view!r} with the same "
                f"{len(ids)} records as page {page - 1}: it ignores the page parameter, so reading on would "
                "never end. Check that CRM_BASE_URL points at Freshsales itself, not a proxy or cache "
                "that drops the query string",
                method="GET",
                path=self._path,
            )
        self.previous_ids = ids
        self.previous_total = _int_or_none(meta.get("total"))
        self.received += len(records) + recovered
        total = self.counted(meta)
        if total is not None:
            self.smallest_total = total if self.smallest_total is None else min(self.smallest_total, total)

    def after_pages(self, skipped: int) -> _Listing:
        """The listing as seen by a scan resumed after `skipped` pages: its counts are of what is left."""
        if skipped <= 0:
            return self
        total = max(self.total - skipped * self.per_page, 0) if self.total is not None else None
        total_pages = max(self.total_pages - skipped, 0) if self.total_pages is not None else None
        return replace(self, total=total, total_pages=total_pages, skipped=skipped)

    def complete_before(self, page: int) -> bool:
        """Whether the CRM's counts say that every record arrived before `page` (past meta.total_pages).

        Without meta.total the counts cannot be checked and only an empty page ends the view. A full
        last page is read past once more: a record created during the scan pushes the oldest one a page
        further than the meta of page 1 knew, and a full reconciliation must not miss it.
        """
        if self.total_pages is None or self.total is None or page <= self.total_pages:
            return False
        return self.received >= self.total and len(self.previous_ids) < self.per_page


def _whole_response(response: httpx.Response) -> httpx.Response:
    return response


def _json_or_failure(response: httpx.Response) -> Any:
    """The JSON body, or a _Failure to retry when the body is not JSON."""
    try:
        return _parsed(response.content)
    except ValueError:
        kind = response.headers.get("content-type", "unknown content type")
        return _Failure(f"HTTP {response.status_code} and a body that is not JSON ({kind})", unreadable=True)


def _parsed(content: bytes) -> Any:
    """The JSON value of a body; ValueError when it is not JSON."""
    try:
        # orjson parses pages about twice as fast as response.json(), which matters over millions of records.
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        # JSON that orjson refuses for one value (a lone surrogate, 1e400, deep nesting): one record must not
        # make the page unreadable; the warehouse quarantines the records holding such values.
        return loads_lenient(content)


def _ids_of(records: Page) -> list[Any]:
    return [record.get("id") if isinstance(record, dict) else None for record in records]


def _comparable_ids(ids: list[Any]) -> set[int | str]:
    """The ids that can be compared (a record with another kind of id the warehouse quarantines anyway)."""
    return {crm_id for crm_id in ids if isinstance(crm_id, int | str)}


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _not_older(records: Page, cutoff: datetime) -> Page:
    """Records updated at or after `cutoff`; ones without a readable updated_at are kept (can't judge).

    An entry that is not a JSON object is kept too: the warehouse quarantines it, as on a full listing.
    """
    kept = []
    for record in records:
        updated = parse_instant(record.get("updated_at")) if isinstance(record, dict) else None
        if updated is None or updated >= cutoff:
            kept.append(record)
    return kept
