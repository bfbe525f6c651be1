"""DemoCrm: the Freshsales-compatible API over the demo store, with fault injection and a request log."""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from crm_assets.demo_crm import advance
from crm_assets.demo_crm.budget import ServerBudget
from crm_assets.demo_crm.config import DemoConfig, Faults, RequestRecord
from crm_assets.demo_crm.data import DEMO_DOMAINS
from crm_assets.demo_crm.fields import settings_fields
from crm_assets.demo_crm.store import BadRequest, DemoStore, UnknownEntity, UnknownRecord
from crm_assets.domains import Domain
from crm_assets.domains.demo import USERS, format_ts

log = logging.getLogger(__name__)

BASE_PATH = "/crm/sales"
DEFAULT_PER_PAGE = 25
_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=orjson.dumps(payload),
        headers={"content-type": "application/json; charset=utf-8", **(headers or {})},
    )


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """The one error shape of the demo CRM: {"errors": {"code": status, "message": [text]}}."""
    return json_response(status, {"errors": {"code": status, "message": [message]}}, headers)


def _int_param(request: httpx.Request, name: str, default: int) -> int:
    raw = request.url.params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number, got {raw!r}") from None


def _json_body(request: httpx.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(request.content or b"{}")
    except orjson.JSONDecodeError:
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _require(request: httpx.Request, *methods: str) -> None:
    if request.method not in methods:
        raise ApiError(405, f"{request.method} is not allowed here; use {' or '.join(methods)}")


class DemoCrm:
    """An in-memory Freshsales: the API in `handle()`, data helpers for tests and benchmarks."""

    def __init__(self, config: DemoConfig | None = None, domains: Sequence[Domain] = DEMO_DOMAINS) -> None:
        """Serve `domains` (each with a demo recipe): by default every shipped CRM domain."""
        self.config = config or DemoConfig()
        self.today = self.config.today or datetime.datetime.now(datetime.UTC).date()
        self.store = DemoStore(self.config, self.today, domains)
        self.faults = Faults()
        self.request_log: list[RequestRecord] = []
        self.put_log: list[tuple[str, int, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._requests = 0
        self._by_status: Counter[str] = Counter()
        self._by_endpoint: Counter[str] = Counter()
        self.budget: ServerBudget | None = None  # set up by the budget_* faults

    # -- data helpers (same effect as the API) --

    def update_record(self, entity: str, crm_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        return _copy(self.store.update(entity, crm_id, fields))

    def delete_record(self, entity: str, crm_id: int) -> None:
        self.store.delete(entity, crm_id)

    def forget_record(self, entity: str, crm_id: int) -> None:
        self.store.forget(entity, crm_id)

    def touch_fraction(self, entity: str, fraction: float, seed: int = 0) -> list[int]:
        return self.store.touch_fraction(entity, fraction, seed)

    def advance_deals(self, fraction: float, seed: int = 0) -> list[int]:
        """Move that share of the deals (the open, live ones among them) one stage on, with a later updated_at."""
        return advance.advance_deals(self.store, fraction, seed)

    def get_record(self, entity: str, crm_id: int) -> dict[str, Any] | None:
        try:
            return _copy(self.store.get(entity, crm_id))
        except UnknownRecord:
            return None

    def crm_ids(self, entity: str) -> list[int]:
        return self.store.crm_ids(entity)

    def clear_log(self) -> None:
        with self._lock:
            self.request_log.clear()
            self.put_log.clear()

    def transport(self) -> httpx.MockTransport:
        return DemoTransport(self)

    # -- the API --

    def handle(self, request: httpx.Request, *, over_http: bool = False) -> httpx.Response:
        """Answer one request. In process, a dropped connection or a client timeout is raised as
        the httpx exception a real connection would give; over HTTP the server acts them out."""
        path = request.url.path
        relative = path[len(BASE_PATH) :] if path.startswith(BASE_PATH + "/") else path
        if relative.startswith("/_demo/"):
            return self._admin(request, relative)
        with self._lock:
            self._requests += 1
            number = self._requests
        status = 0  # stays 0 when the connection is dropped or the client times out
        try:
            response = self._faulty(request, relative, number, self.faults, over_http)
            status = response.status_code
            return response
        finally:
            self._record(request, status)

    def _record(self, request: httpx.Request, status: int) -> None:
        entry = RequestRecord(request.method, request.url.path, dict(request.url.params), status)
        with self._lock:
            self.request_log.append(entry)
            if len(self.request_log) > self.config.log_limit:
                del self.request_log[: len(self.request_log) // 2]
            self._by_status[str(status)] += 1
            self._by_endpoint[f"{request.method} {_ID_SEGMENT.sub('/{id}', request.url.path)}"] += 1

    def _faulty(
        self, request: httpx.Request, relative: str, number: int, faults: Faults, over_http: bool
    ) -> httpx.Response:
        if faults.slow_seconds > 0 and (faults.slow_every == 0 or number % faults.slow_every == 0):
            self._sleep(request, faults.slow_seconds, over_http)
        if faults.drop_every and number % faults.drop_every == 0:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response (demo CRM fault)", request=request
            )
        if faults.rate_limit_every and number % faults.rate_limit_every == 0:
            return self._rate_limited(faults)
        if faults.server_error_every and number % faults.server_error_every == 0:
            status = (500, 502, 503)[(number // faults.server_error_every) % 3]
            return error_response(status, "Internal server error (demo CRM fault)")
        if request.headers.get("authorization") != f"Token token={self.config.api_key}":
            return error_response(401, "Invalid API key: send Authorization: Token token=<your API key>")
        budget = self._budget_for(faults)
        if budget is None:
            return self._answer(request, relative, faults)
        admitted, limit_headers = budget.admit()
        if not admitted:
            return error_response(429, "API rate limit exceeded (demo CRM budget)", limit_headers)
        response = self._answer(request, relative, faults)
        response.headers.update(limit_headers)
        return response

    def _budget_for(self, faults: Faults) -> ServerBudget | None:
        """The account budget the faults ask for (kept while they ask for the same one), or None."""
        if not (faults.budget_per_minute or faults.budget_per_hour):
            return None
        key = (faults.budget_per_minute, faults.budget_per_hour, faults.budget_minute_seconds)
        with self._lock:
            if self.budget is None or self.budget.key != key:
                self.budget = ServerBudget(*key[:2], minute_seconds=key[2])
            return self.budget

    def _answer(self, request: httpx.Request, relative: str, faults: Faults) -> httpx.Response:
        try:
            return self._route(request, relative, faults)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except (UnknownRecord, UnknownEntity) as exc:
            return error_response(404, str(exc.args[0]))
        except BadRequest as exc:
            return error_response(400, str(exc))
        except Exception:
            log.exception("demo CRM: unexpected error answering %s %s", request.method, request.url.path)
            return error_response(500, "Internal server error (demo CRM bug)")

    @staticmethod
    def _sleep(request: httpx.Request, seconds: float, over_http: bool) -> None:
        timeout = None if over_http else (request.extensions.get("timeout") or {}).get("read")
        if timeout is not None and seconds > timeout:
            time.sleep(timeout)  # what a real client would wait before giving up
            raise httpx.ReadTimeout("The read operation timed out (demo CRM slow fault)", request=request)
        time.sleep(seconds)

    @staticmethod
    def _rate_limited(faults: Faults) -> httpx.Response:
        headers = {
            "x-ratelimit-limit": "400",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(faults.rate_limit_reset_seconds),
        }
        if faults.retry_after:
            headers["retry-after"] = str(faults.rate_limit_reset_seconds)
        return error_response(429, "API rate limit exceeded (demo CRM fault)", headers)

    def _route(self, request: httpx.Request, relative: str, faults: Faults) -> httpx.Response:
        parts = relative.strip("/").split("/")
        if parts[0] != "api":
            raise ApiError(404, f"no such endpoint: {request.url.path}")
        match parts[1:]:
            case ["selector", name]:
                _require(request, "GET")
                return json_response(200, self._selector(name))
            case ["lookup"]:
                _require(request, "GET")
                return self._lookup(request)
            case ["filtered_search", singular]:
                _require(request, "POST")
                return self._filtered_search(request, singular)
            case ["settings", entity, "fields"]:
                _require(request, "GET")
                return json_response(200, {"fields": settings_fields(self.store.state(entity).spec)})
            case [entity, "filters"]:
                _require(request, "GET")
                return self._filters(entity)
            case [entity, "view", view_id]:
                _require(request, "GET")
                return self._view(request, entity, _record_id(view_id), faults)
            case [entity, record_id, "forget"]:
                _require(request, "DELETE")
                self.store.forget(entity, _record_id(record_id))
                return httpx.Response(204)
            case [entity, record_id]:
                return self._record_endpoint(request, entity, _record_id(record_id), faults)
        raise ApiError(404, f"no such endpoint: {request.url.path}")

    def _filters(self, entity: str) -> httpx.Response:
        stamp = format_ts(self.store.data.start_ts, 2)
        state = self.store.state(entity)
        filters = [
            {
                "id": view.id,
                "name": view.name,
                "model_class_name": state.spec.model_class,
                "user_id": USERS[0]["id"],
                "is_default": True,
                "updated_at": stamp,
                "user_name": USERS[0]["display_name"],
                "current_user_permissions": [],
            }
            for view in state.views
        ]
        return json_response(200, {"filters": filters})

    def _paging(self, request: httpx.Request) -> tuple[int, int]:
        page = _int_param(request, "page", 1)
        if page < 1:
            raise ApiError(400, f"page is 1-based, got {page}")
        per_page = _int_param(request, "per_page", DEFAULT_PER_PAGE)
        return page, min(max(per_page, 1), self.config.max_per_page)

    def _view(self, request: httpx.Request, entity: str, view_id: int, faults: Faults) -> httpx.Response:
        page, per_page = self._paging(request)
        sort = request.url.params.get("sort") or "updated_at"
        sort_type = (request.url.params.get("sort_type") or "desc").lower()
        if sort_type not in ("asc", "desc"):
            raise ApiError(400, f"sort_type must be asc or desc, got {sort_type!r}")
        # Short pages: serve fewer per page than asked while meta still counts full pages.
        size = per_page - max(1, per_page // 4) if faults.short_pages and per_page > 1 else per_page
        records, total = self.store.page(entity, view_id, page, size, sort, sort_type == "desc")
        meta = {"total_pages": math.ceil(total / per_page), "total": total}
        return json_response(200, {entity: records, "meta": meta})

    def _record_endpoint(self, request: httpx.Request, entity: str, crm_id: int, faults: Faults) -> httpx.Response:
        singular = self.store.state(entity).spec.singular
        if request.method == "GET":
            return json_response(200, {singular: self.store.get(entity, crm_id)})
        if request.method == "PUT":
            if crm_id in faults.fail_put_crm_ids:
                return error_response(500, f"Internal server error updating {crm_id} (demo CRM fault)")
            body = _json_body(request)
            wrapped = body.get(singular)
            fields = wrapped if isinstance(wrapped, dict) else body
            record = self.store.update(entity, crm_id, fields)
            with self._lock:
                self.put_log.append((entity, crm_id, body))
            return json_response(200, {singular: record})
        if request.method == "DELETE":
            self.store.delete(entity, crm_id)
            return httpx.Response(204)
        raise ApiError(405, f"{request.method} is not allowed here; use GET, PUT or DELETE")

    def _lookup(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        text, name = params.get("q"), params.get("f")
        if text is None or not name:
            raise ApiError(400, "lookup needs q (the value) and f (the field)")
        answer: dict[str, Any] = {}
        singulars = self.store.singulars
        for singular in (params.get("entities") or ",".join(singulars)).split(","):
            spec = self.store.spec_by_singular(singular.strip())
            if spec is None:
                raise ApiError(400, f"unknown entity {singular!r} in entities; use {', '.join(singulars)}")
            found = self.store.lookup(spec.entity, name, text)
            answer[spec.entity] = {spec.entity: found}
        return json_response(200, answer)

    def _filtered_search(self, request: httpx.Request, singular: str) -> httpx.Response:
        spec = self.store.spec_by_singular(singular)
        if spec is None:
            raise ApiError(404, f"unknown entity {singular!r}; use {', '.join(self.store.singulars)}")
        body = _json_body(request)
        rules = body.get("filter_rule") or []
        if not isinstance(rules, list):
            raise ApiError(400, "filter_rule must be a list of rules")
        page, per_page = self._paging(request)
        sort = str(body.get("sort") or "updated_at")
        descending = str(body.get("sort_type") or "asc").lower() == "desc"
        found = self.store.search(spec.entity, rules, sort, descending)
        chunk = found[(page - 1) * per_page : page * per_page]
        meta = {"total": len(found), "total_pages": math.ceil(len(found) / per_page)}
        return json_response(200, {spec.entity: chunk, "meta": meta})

    def _selector(self, name: str) -> dict[str, Any]:
        """Owners, and whatever lists the domains' recipes add (deal stages and pipelines)."""
        selectors = {"owners": lambda: {"users": list(USERS)}}
        for state in self.store.states():
            selectors.update(state.spec.recipe.selectors)
        if name not in selectors:
            raise ApiError(404, f"unknown selector {name!r}; the demo CRM has {', '.join(selectors)}")
        payload: dict[str, Any] = selectors[name]()
        return payload

    # -- admin endpoints (no API key; for tests and benchmarks) --

    def _admin(self, request: httpx.Request, relative: str) -> httpx.Response:
        try:
            match (request.method, relative.rstrip("/")):
                case ("GET", "/_demo/faults"):
                    return json_response(200, {"faults": self.faults.to_json()})
                case ("POST", "/_demo/faults"):
                    self.faults = Faults.from_json(_json_body(request))
                    return json_response(200, {"faults": self.faults.to_json()})
                case ("POST", "/_demo/touch"):
                    body = _json_body(request)
                    entity, fraction = str(body.get("entity")), float(body["fraction"])
                    ids = self.touch_fraction(entity, fraction, int(body.get("seed", 0)))
                    return json_response(200, {"entity": body["entity"], "count": len(ids), "ids": ids})
                case ("POST", "/_demo/advance"):
                    body = _json_body(request)
                    ids = self.advance_deals(float(body["fraction"]), int(body.get("seed", 0)))
                    return json_response(200, {"count": len(ids), "ids": ids})
                case ("GET", "/_demo/stats"):
                    return json_response(200, self.stats())
                case ("POST", "/_demo/clear_log"):
                    self.clear_log()
                    return json_response(200, {"cleared": True})
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except (KeyError, TypeError, ValueError, LookupError) as exc:
            return error_response(400, f"bad admin request: {exc}")
        return error_response(404, f"no such admin endpoint: {request.method} {relative}")

    def stats(self) -> dict[str, Any]:
        """Request counts (total, by status, by endpoint with ids as {id}) and record counts."""
        with self._lock:
            requests = {
                "total": self._requests,
                "by_status": dict(self._by_status),
                "by_endpoint": dict(self._by_endpoint),
                "logged": len(self.request_log),
            }
        answer = {"requests": requests, "records": self.store.stats(), "faults": self.faults.to_json()}
        if self.budget is not None:
            log = self.budget.log
            answer["budget"] = {
                "admitted": log.admitted,
                "rejected": len(log.rejected_at),
                "rejected_after_first_minute": sum(1 for t in log.rejected_at if t >= self.budget.minute_seconds),
            }
        return answer


class DemoTransport(httpx.MockTransport):
    """In-process transport over DemoCrm.handle. Async clients get their answers from a worker
    thread, so a slow fault or a big page does not block the event loop."""

    def __init__(self, demo: DemoCrm) -> None:
        super().__init__(demo.handle)
        self.demo = demo

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await asyncio.to_thread(self.demo.handle, request)


def _record_id(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ApiError(404, f"no record with id {raw!r}") from None


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = orjson.loads(orjson.dumps(record))
    return copied
